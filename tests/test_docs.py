"""The docs say what the code does: every test they cite exists, and the defaults they state
are the engine's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def cited_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) for each `test_file::test_name`, and each `…test_name` after one (same
    file), in the order the page cites them."""
    found = []
    current = ""
    for match in re.finditer(r"`(?:(test_[a-z_]+)::|…)(test_[a-zA-Z0-9_]+)`", text):
        current = match.group(1) or current
        found.append((current, match.group(2)))
    return found


def test_every_test_the_guarantees_cite_exists():
    page = (DOCS / "guarantees.md").read_text()
    cited = cited_tests(page)
    assert len(cited) > 40
    missing = []
    for file, test in cited:
        source = ROOT / "tests" / f"{file}.py"
        if not source.is_file() or f"def {test}(" not in source.read_text():
            missing.append(f"{file}::{test}")
    assert not missing, f"docs/guarantees.md cites tests that do not exist: {missing}"
