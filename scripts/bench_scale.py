"""Benchmark: `check`, `build --dry-run` and a no-op build of a 10,000-pair catalog.

Makes a catalog of N pairs (default 10,000) in a temporary folder: most pairs refer to a
few shared local images (the sample photos and covers, at their own size, each referred to
thousands of times; every tenth pair overrides ``content_weight``), and some pairs have
images of their own (small JPEGs, distinct bytes). It builds the catalog once with a
stand-in engine (instant paintings: the set-up paints one job per distinct key, a few
hundred), then times three whole processes, each the median of ``--repeat`` runs:

- ``covergen check``, beside PyYAML's C ``safe_load`` of the same file (the baseline: what
  any tool reading the catalog pays);
- ``covergen build --dry-run`` and ``covergen build`` with nothing to do, each also as a
  multiple of ``check`` (reading the catalog) measured in the same run.

Then the dry run and the no-op build once more in this process under cProfile: how many
images were decoded (the mechanism: each distinct image at most once per build) and the
functions that take the most time of what is left.

Usage: python scripts/bench_scale.py [--pairs 10000] [--distinct 200] [--repeat 3]
                                     [--keep DIR] [--top 12]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_noop import InstantEngine, timed  # noqa: E402

from covergen.build import BuildOptions, build  # noqa: E402
from covergen.catalog.edit import NewPair, render_pair  # noqa: E402
from covergen.executors import ExecutorSettings  # noqa: E402
from covergen.executors.local import LocalExecutor  # noqa: E402
from covergen.executors.painter import Painter, StoreInputs  # noqa: E402
from covergen.sources import decoding  # noqa: E402


def make_scale_project(root: Path, pairs: int, distinct: int) -> tuple[Path, Path]:
    """``pairs`` pairs: the first ``distinct`` with images of their own, the rest sharing the
    sample photos and covers (copied in as they are, so that each decode costs what a real
    one does). Returns the catalog and a seed catalog of one pair per distinct job (what the
    set-up paints)."""
    photos = sorted((ROOT / "samples" / "photos").iterdir())
    covers = sorted((ROOT / "samples" / "covers").glob("*.png"))[:2]
    (root / "photos").mkdir(parents=True)
    (root / "covers").mkdir()
    shared_photos, shared_covers = [], []
    for source in photos:
        shutil.copyfile(source, root / "photos" / source.name)
        shared_photos.append(f"photos/{source.name}")
    for source in covers:
        shutil.copyfile(source, root / "covers" / source.name)
        shared_covers.append(f"covers/{source.name}")
    rng = np.random.default_rng(0)
    head = "defaults: {size: 64, scales: 1, iterations: 1}\npairs:\n"
    blocks, seeds = [], {}
    for i in range(pairs):
        if i < distinct:
            names = []
            for kind, source, folder in (
                ("photo", photos[i % len(photos)], "photos"),
                ("cover", covers[i % len(covers)], "covers"),
            ):
                with Image.open(source) as image:
                    small = image.convert("RGB").resize((96, 72))
                tint = Image.new("RGB", small.size, tuple(int(c) for c in rng.integers(0, 255, 3)))
                name = f"{folder}/{kind}{i}.jpg"
                Image.blend(small, tint, 0.2).save(root / name, quality=85)
                names.append(name)
            photo, cover = names
        else:
            photo = shared_photos[i % len(shared_photos)]
            cover = shared_covers[(i // len(shared_photos)) % len(shared_covers)]
        pair = NewPair(
            f"Band {i}",
            f"Album {i}",
            photo,
            cover,
            year=1960 + i % 60,
            tags=(f"t{i % 7}",),
            overrides={"content_weight": 1 + i % 4} if i % 10 == 0 else {},
        )
        blocks.append(render_pair(pair, ""))
        seeds.setdefault((photo, cover, str(pair.overrides)), blocks[-1])
    (root / "catalog.yaml").write_text(head + "".join(blocks))
    (root / "seed.yaml").write_text(head + "".join(seeds.values()))
    return root / "catalog.yaml", root / "seed.yaml"


def profiled(root: Path, argv: list[str], top: int) -> tuple[float, int, str]:
    """Seconds, decodes and the top of the cProfile listing of one command run in this
    process, in ``root`` (its output is dropped)."""
    import covergen.sources as sources
    from covergen import cli

    decodes = 0
    original = decoding.decode

    def counting(*args, **kwargs):
        nonlocal decodes
        decodes += 1
        return original(*args, **kwargs)

    # sources imported the decoder by name: its name is replaced too.
    decoding.decode = sources.decode = counting
    profiler = cProfile.Profile()
    here = Path.cwd()
    try:
        os.chdir(root)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            start = time.perf_counter()
            profiler.enable()
            code = cli.main(argv)
            profiler.disable()
            seconds = time.perf_counter() - start
    finally:
        os.chdir(here)
        decoding.decode = sources.decode = original
    if code != 0:
        raise SystemExit(f"covergen {' '.join(argv)} exited {code}")
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return seconds, decodes, "\n".join(lines[first:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=200, help="pairs with their own images")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=12, help="functions in the profile")
    parser.add_argument("--keep", type=Path, help="make the project here and keep it")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="covergen-scale-"))
    # The commands timed run this checkout's covergen, whatever the environment installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    try:
        catalog, seed = make_scale_project(root, args.pairs, min(args.distinct, args.pairs))
        files = sum(1 for p in root.rglob("*") if p.suffix in (".jpg", ".png"))
        settings = ExecutorSettings(cache_dir=root / "cache", devices=("cpu",))
        painter = Painter(StoreInputs(root / "cache"), lambda device: InstantEngine())
        start = time.perf_counter()
        # Each distinct job painted once (the seed catalog's pairs, with the same images and
        # parameters), then the whole catalog built on them: every pair reused, the site made.
        seeded = build(
            BuildOptions(
                catalog=seed, cache_dir=root / "cache", site_dir=root / "site", render_site=False
            ),
            executor=LocalExecutor(settings, painter),
        )
        summary = build(
            BuildOptions(catalog=catalog, cache_dir=root / "cache", site_dir=root / "site"),
            executor=LocalExecutor(settings, painter),
        )
        print(
            f"# set-up: {args.pairs:,} pairs over {files} distinct image files, "
            f"{seeded.count('built')} jobs painted by a stand-in engine, then the catalog built "
            f"({summary.count('reused')} reused, {summary.count('failed')} failed) in "
            f"{time.perf_counter() - start:.1f} s"
        )
        python = [sys.executable]
        covergen = [*python, "-m", "covergen"]
        load = "import sys, yaml; yaml.load(open(sys.argv[1], 'rb'), Loader=yaml.CSafeLoader)"
        baseline, _ = timed([*python, "-c", load, str(catalog)], root, args.repeat)
        rows = []
        dry = ["build", "--dry-run", "--device", "cpu"]
        for label, command in (
            ("covergen check", [*covergen, "check"]),
            # On an empty cache: the store knows no image yet, so each one must be decoded.
            ("covergen build --dry-run (empty cache)", [*covergen, *dry, "--cache-dir", "new"]),
            ("covergen build --dry-run", [*covergen, *dry]),
            ("covergen build (nothing to do)", [*covergen, "build", "--device", "cpu"]),
        ):
            seconds, output = timed(command, root, args.repeat)
            note = output.strip().splitlines()[-1][:60] if output.strip() else ""
            rows.append((label, seconds, note))
        check = rows[0][1]
        size = catalog.stat().st_size / 1e6
        print(f"\n| {args.pairs:,} pairs ({size:.1f} MB) | median s | × baseline | × check |")
        print("| --- | --- | --- | --- |")
        print(f"| PyYAML C safe_load (the baseline) | {baseline:.3f} | 1.00 | |")
        for label, seconds, _ in rows:
            print(f"| {label} | {seconds:.3f} | {seconds / baseline:.2f} | {seconds / check:.2f} |")
        for label, _, note in rows:
            print(f"# {label} said: {note}")

        for label, argv in (
            ("check", ["check"]),
            ("build --dry-run (empty cache)", [*dry, "--cache-dir", "new"]),
            ("build (nothing to do)", ["build", "--device", "cpu"]),
        ):
            seconds, decodes, listing = profiled(root, argv, args.top)
            print(f"\n## {label} in this process: {seconds:.2f} s, {decodes} images decoded")
            print(listing)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
