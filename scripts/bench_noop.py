"""Benchmark: a rebuild with nothing to do, and the start-up of commands that paint nothing.

Makes a catalog of N pairs (default 100) with 2·N distinct small images, builds it once with
a stand-in engine (instant paintings, so the set-up takes seconds, not hours), then times,
as whole processes, `covergen build` with nothing changed and a few light commands. Each
figure is the median of several runs, printed beside the bare interpreter start-up measured
in the same run (the floor no command can beat).

Then `covergen check` of a big catalog (default 10,000 pairs over the sample images), beside
PyPI's own fastest reading of the same file (PyYAML's libyaml ``safe_load``) as its baseline.

Usage: python scripts/bench_noop.py [--pairs 100] [--check-pairs 10000] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from covergen.build import BuildOptions, build  # noqa: E402
from covergen.catalog.edit import NewPair, render_pair  # noqa: E402
from covergen.executors import ExecutorSettings  # noqa: E402
from covergen.executors.local import LocalExecutor  # noqa: E402
from covergen.executors.painter import Painter, StoreInputs  # noqa: E402
from covergen.nst import LossValues, StylizeResult  # noqa: E402


class InstantEngine:
    """Paints in no time: the photo at the job's size, tinted by the cover's mean colour."""

    def stylize_batch(self, jobs, progress=None, cancel=None):
        out = []
        for job in jobs:
            scale = job.params.size / max(job.content.size)
            size = (round(job.content.width * scale), round(job.content.height * scale))
            mean = tuple(int(c) for c in np.asarray(job.styles[0]).reshape(-1, 3).mean(0))
            painted = Image.blend(job.content.resize(size), Image.new("RGB", size, mean), 0.4)
            out.append(StylizeResult(painted, [], 1, 0.01, "cpu", LossValues(1, 1, 1, 1)))
        return out


def make_project(root: Path, pairs: int) -> Path:
    """A catalog of ``pairs`` pairs, each with its own photo and cover (varied samples)."""
    photos = sorted((ROOT / "samples" / "photos").iterdir())
    covers = sorted((ROOT / "samples" / "covers").glob("*.png"))
    (root / "photos").mkdir(parents=True)
    (root / "covers").mkdir()
    rng = np.random.default_rng(0)
    lines = ["defaults: {size: 128, scales: 1, iterations: 1}", "pairs:"]
    for i in range(pairs):
        for kind, sources, folder in (("photo", photos, "photos"), ("cover", covers, "covers")):
            with Image.open(sources[i % len(sources)]) as source:
                image = source.convert("RGB").resize((320, 240))
            tint = Image.new("RGB", image.size, tuple(int(c) for c in rng.integers(0, 255, 3)))
            Image.blend(image, tint, 0.15).save(root / folder / f"{kind}{i}.jpg", quality=85)
        pair = NewPair(f"Band {i}", f"Album {i}", f"photos/photo{i}.jpg", f"covers/cover{i}.jpg")
        lines.append(render_pair(pair, "").rstrip("\n"))
    (root / "catalog.yaml").write_text("\n".join(lines) + "\n")
    return root / "catalog.yaml"


def make_big_catalog(root: Path, pairs: int) -> Path:
    """A catalog of ``pairs`` pairs over the sample images, every tenth with an override."""
    photos = sorted(p.name for p in (ROOT / "samples" / "photos").iterdir())
    covers = sorted(p.name for p in (ROOT / "samples" / "covers").glob("*.png"))
    blocks = []
    for i in range(pairs):
        pair = NewPair(
            f"Band {i}",
            f"Album {i}",
            f"{ROOT}/samples/photos/{photos[i % len(photos)]}",
            f"{ROOT}/samples/covers/{covers[i % len(covers)]}",
            year=1960 + i % 60,
            tags=(f"t{i % 7}",),
            photo_credit="NASA",
            photo_license="Public domain",
            cover_credit="covergen",
            cover_license="CC0-1.0",
            overrides={"content_weight": 1 + i % 4} if i % 10 == 0 else {},
        )
        blocks.append(render_pair(pair, ""))
    (root / "big").mkdir(exist_ok=True)
    path = root / "big" / "catalog.yaml"
    path.write_text("pairs:\n" + "".join(blocks))
    return path


def timed(command: list[str], cwd: Path, repeat: int) -> tuple[float, str]:
    times, output = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{output}")
    return statistics.median(times), output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--check-pairs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the project here and keep it")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="covergen-noop-"))
    try:
        catalog = make_project(root, args.pairs)
        settings = ExecutorSettings(cache_dir=root / "cache", devices=("cpu",))
        painter = Painter(StoreInputs(root / "cache"), lambda device: InstantEngine())
        start = time.perf_counter()
        summary = build(
            BuildOptions(catalog=catalog, cache_dir=root / "cache", site_dir=root / "site"),
            executor=LocalExecutor(settings, painter),
        )
        print(
            f"# set-up: {args.pairs} pairs built with a stand-in engine in "
            f"{time.perf_counter() - start:.1f} s ({summary.count('built')} built)"
        )
        python = [sys.executable]
        covergen = [*python, "-m", "covergen"]
        floor, _ = timed([*python, "-c", "pass"], root, args.repeat)
        rows = [("python -c pass (the floor)", floor, "")]
        for label, command in (
            ("covergen --help", [*covergen, "--help"]),
            ("covergen check", [*covergen, "check"]),
            ("covergen list", [*covergen, "list"]),
            ("covergen status", [*covergen, "status"]),
            ("covergen build (nothing to do)", [*covergen, "build", "--device", "cpu"]),
        ):
            seconds, output = timed(command, root, args.repeat)
            note = output.strip().splitlines()[-1][:70] if output.strip() else ""
            rows.append((label, seconds, note))
        print(f"\n| command ({args.pairs} pairs) | median s | × floor | last line |")
        print("| --- | --- | --- | --- |")
        for label, seconds, note in rows:
            print(f"| {label} | {seconds:.3f} | {seconds / floor:.1f} | {note} |")

        if args.check_pairs:
            big = make_big_catalog(root, args.check_pairs)
            load = "import sys, yaml; yaml.load(open(sys.argv[1], 'rb'), Loader=yaml.CSafeLoader)"
            baseline, _ = timed([*python, "-c", load, str(big)], root, args.repeat)
            seconds, output = timed([*covergen, "check", "--catalog", str(big)], root, args.repeat)
            size = big.stat().st_size / 1e6
            print(f"\n| {args.check_pairs:,} pairs ({size:.1f} MB) | median s | × baseline |")
            print("| --- | --- | --- |")
            print(f"| PyYAML C safe_load (the baseline) | {baseline:.3f} | 1.0 |")
            print(f"| covergen check | {seconds:.3f} | {seconds / baseline:.2f} |")
            print(f"# check said: {output.strip().splitlines()[-1][:90]}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
