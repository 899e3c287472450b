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


def test_the_output_the_first_gallery_page_quotes_is_what_covergen_prints(tmp_path, monkeypatch):
    """Every block after an `<!-- output of: COMMAND -->` comment is what COMMAND prints,
    the commands run in order, in a fresh folder, as the page tells a newcomer to."""
    from covergen import cli

    page = (DOCS / "first-gallery.md").read_text()
    quoted = re.findall(r"<!-- output of: (.+?) -->\n```text\n(.*?)```", page, re.S)
    assert len(quoted) >= 2
    monkeypatch.chdir(tmp_path)
    for command, expected in quoted:
        words = command.split()
        assert words[0] == "covergen"
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main(words[1:]) == 0, command
        assert out.getvalue().strip() == expected.strip(), command
        if words[1] == "init":
            monkeypatch.chdir(tmp_path / words[2])  # the page's next step: cd my-gallery


def test_the_faq_shows_the_workflow_file_covergen_ships():
    faq = (DOCS / "faq.md").read_text()
    workflow = (DOCS / "examples" / "github-pages.yml").read_text()
    assert f"```yaml\n{workflow}```" in faq
