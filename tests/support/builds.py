"""Projects and builds for the executor tests: catalogs of many cheap pairs, build options,
weights converted once and linked into each cache, what a build left behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from covergen.build import BuildOptions, BuildSummary
from covergen.store import cache_paths
from covergen.store.results import ResultStore

from .engines import BAD_SEED

# Settings that need no quality judge and no face detector: these tests are about executors.
PLAIN = "  content_weight: 1\n  protect_faces: false\n"


def plain_catalog(project: Path) -> None:
    """The conftest project's catalog, made to need no judge and no face detector (when it
    does not say so already)."""
    catalog = project / "catalog.yaml"
    text = catalog.read_text()
    missing = "".join(line + "\n" for line in PLAIN.splitlines() if line not in text)
    catalog.write_text(text.replace("  tolerance: 0\n", f"  tolerance: 0\n{missing}", 1))


def many_pairs_catalog(project: Path, count: int, *, bad: int | None = None) -> None:
    """``count`` pairs over the conftest project's images; pair ``bad`` has the bad seed."""
    lines = ["defaults:", "  size: 32", "  scales: 1", "  iterations: 3", PLAIN.rstrip(), "pairs:"]
    for i in range(count):
        lines += [
            f"  - band: Band{i}",
            "    album: Album",
            f"    photo: photos/{'abc'[i % 3]}.png",
            f"    cover: covers/{'xy'[i % 2]}.png",
            f"    overrides: {{seed: {BAD_SEED if i == bad else i}}}",
        ]
    (project / "catalog.yaml").write_text("\n".join(lines) + "\n")


def options(project: Path, cache: str = "cache", **values: Any) -> BuildOptions:
    defaults = {"device": "cpu", "render_site": False, "offline": True}
    return BuildOptions(
        catalog=project / "catalog.yaml",
        cache_dir=project / cache,
        site_dir=project / "site",
        **{**defaults, **values},
    )


def convert_weights(cache: Path) -> Path:
    """The default network's weights, converted into ``cache``; caches then link to them."""
    from covergen.nst import StyleParams
    from covergen.nst.weights import load_weights

    params = StyleParams()
    load_weights(params.network, params.weights, cache_dir=cache, offline=True)
    return cache / "weights"


def link_weights(converted: Path, cache: Path) -> None:
    """Converting them takes seconds a cache; linking, nothing."""
    (cache / "weights").mkdir(parents=True)
    for file in converted.iterdir():
        os.link(file, cache / "weights" / file.name)


def endless_catalog(project: Path, converted: Path, *, short_first: bool = False) -> None:
    """The conftest project, made to paint for ever (100,000 iterations a pair) with the
    real engine, its weights linked; ``short_first``: the first pair (alpha-one) has 3
    iterations, so it is built while the others paint."""
    plain_catalog(project)
    link_weights(converted, project / "cache")
    catalog = project / "catalog.yaml"
    text = catalog.read_text().replace("iterations: 3", "iterations: 100000")
    if short_first:
        text = text.replace("    cover: covers/x.png\n", "    cover: covers/x.png\n"
                            "    overrides: {iterations: 3}\n", 1)  # fmt: skip
    catalog.write_text(text)


def statuses(summary: BuildSummary) -> dict[str, str]:
    return {o.pair: o.status for o in summary.outcomes}


def results(project: Path, cache: str) -> dict[str, bytes]:
    """Every stored painting, by job key."""
    store = ResultStore(cache_paths(project / cache)["results"])
    return {p.stem: p.read_bytes() for p in sorted(store.root.rglob("*.png"))}


class Stages:
    """Build events that keep the stage lines and ignore the rest."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def stage(self, text: str) -> None:
        self.lines.append(text)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
