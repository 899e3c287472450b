"""The build pipeline end to end on tiny images: only what changed is painted."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support.engines import InstantEngine
from support.servers import local_server, serve_bytes

from covergen.build import BuildOptions, build, cache_paths
from covergen.errors import CovergenError
from covergen.locks import cache_lock
from covergen.runlog import RunLog
from covergen.store.features import FeatureCache
from covergen.store.results import ResultStore


def run_build(project: Path, **options):
    defaults = {
        "catalog": project / "catalog.yaml",
        "cache_dir": project / "cache",
        "site_dir": project / "site",
        "device": "cpu",
        "render_site": False,
    }
    return build(BuildOptions(**{**defaults, **options}))


def statuses(summary) -> dict[str, str]:
    return {o.pair: o.status for o in summary.outcomes}


def edit(project: Path, old: str, new: str) -> None:
    path = project / "catalog.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_only_new_or_changed_pairs_are_painted(project: Path):
    first = run_build(project)
    assert statuses(first) == {"alpha-one": "built", "beta-two": "built", "gamma-three": "built"}
    assert statuses(run_build(project)) == dict.fromkeys(statuses(first), "reused")

    edit(project, "content_weight: 2", "content_weight: 3")  # an override: that pair alone
    assert statuses(run_build(project))["beta-two"] == "built"
    assert list(statuses(run_build(project)).values()).count("built") == 0

    edit(project, "credit: A. Person", "credit: Someone Else")  # credits: nothing
    assert "built" not in statuses(run_build(project)).values()

    edit(project, "iterations: 3", "iterations: 4")  # a default: every pair using it
    assert set(statuses(run_build(project)).values()) == {"built"}

    (project / "covers" / "y.png").write_bytes((project / "covers" / "x.png").read_bytes())
    changed = statuses(run_build(project))  # new cover bytes: that pair
    assert changed == {"alpha-one": "reused", "beta-two": "reused", "gamma-three": "built"}


def test_results_and_run_log_record_every_pair(project: Path):
    summary = run_build(project)
    paths = cache_paths(project / "cache")
    results, runlog = ResultStore(paths["results"]), RunLog(paths["runlog"])
    latest = runlog.latest()
    for outcome in summary.outcomes:
        record = results.get(outcome.key)
        assert record is not None and record.pair == outcome.pair
        assert record.iterations == 3 and record.device == "cpu"
        assert latest[outcome.pair].status == "built"
        assert latest[outcome.pair].photo == record.photo_sha256
    assert runlog.last_build()["summary"]["built"] == 3


def test_the_feature_cache_is_shared_by_pairs_and_reruns(project: Path):
    run_build(project)
    features = FeatureCache(cache_paths(project / "cache")["features"])
    files = sorted(features.root.rglob("*.pt"))
    assert len(files) == 3 + 2  # three photos' content features, two covers' statistics
    run_build(project, only=("alpha-one",), extra={"style_weight": "20"}, kind="rerun")
    assert sorted(features.root.rglob("*.pt")) == files  # new weights, same targets


def test_a_bad_pair_is_reported_and_the_others_are_built(project: Path):
    (project / "photos" / "b.png").write_bytes(b"<html>oops</html>")
    edit(project, "    cover: covers/y.png", "    cover: covers/y.png\n    year: MCMLXXX")
    summary = run_build(project)
    result = statuses(summary)
    assert result == {"gamma-three": "failed", "beta-two": "failed", "alpha-one": "built"}
    errors = {o.pair: o.error for o in summary.outcomes}
    assert "year" in errors["gamma-three"]
    assert "photo.src" in errors["beta-two"] and "photos/b.png" in errors["beta-two"]
    latest = RunLog(cache_paths(project / "cache")["runlog"]).latest()
    assert latest["beta-two"].status == "failed" and "photos/b.png" in latest["beta-two"].error


def test_rerun_keeps_its_result_under_its_own_key(project: Path):
    base = run_build(project)
    rerun = run_build(project, only=("beta-two",), extra={"content_weight": "9"}, kind="rerun")
    (outcome,) = rerun.outcomes
    assert outcome.status == "built"
    assert outcome.key != {o.pair: o.key for o in base.outcomes}["beta-two"]
    assert statuses(run_build(project))["beta-two"] == "reused"  # the catalog's result remains
    with pytest.raises(CovergenError, match="did you mean 'beta-two'"):
        run_build(project, only=("beta-tw",))


def test_dry_run_plans_without_painting(project: Path):
    summary = run_build(project, dry_run=True)
    assert set(statuses(summary).values()) == {"planned"}
    assert not cache_paths(project / "cache")["results"].exists()


def test_two_builds_cannot_share_a_cache(project: Path):
    with (
        cache_lock(project / "cache"),
        pytest.raises(CovergenError, match="another covergen build"),
    ):
        run_build(project)


@pytest.mark.slow
def test_an_interrupted_build_keeps_finished_results_and_resumes(project: Path):
    edit(project, "iterations: 3", "iterations: 40")
    command = [
        sys.executable,
        "-m",
        "covergen",
        "build",
        "--catalog",
        "catalog.yaml",
        "--device",
        "cpu",
        "--no-site",
    ]
    process = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:  # wait until the first pair is done, then interrupt
        lines.append(line)
        if "built" in line:
            process.send_signal(signal.SIGINT)
            break
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    paths = cache_paths(project / "cache")
    leftovers = [p for p in paths["results"].rglob("*") if p.name.startswith(".")]
    assert leftovers == []  # no half-written result
    keys = list(ResultStore(paths["results"]).keys())
    assert 1 <= len(keys) < 3
    assert all(ResultStore(paths["results"]).get(k) for k in keys)
    resumed = statuses(run_build(project))
    assert list(resumed.values()).count("reused") == len(keys)
    assert list(resumed.values()).count("built") == 3 - len(keys)


def test_end_to_end_from_catalog_to_rendered_pages(project: Path):
    docs = project / "docs-html"
    docs.mkdir()
    (docs / "index.html").write_text("<!doctype html><title>guide</title>")
    (docs / "sitemap.xml.gz").write_bytes(b"dated")  # mkdocs' dated sitemap stays out
    (project / "photos" / "c.png").write_bytes(b"not an image")
    summary = run_build(project, render_site=True, docs_dir=docs)
    assert statuses(summary) == {"alpha-one": "built", "beta-two": "built", "gamma-three": "failed"}
    site = project / "site"
    index = (site / "index.html").read_text()
    for pair in ("alpha-one", "beta-two", "gamma-three"):
        assert f"pairs/{pair}.html" in index or pair == "gamma-three"
    page = (site / "pairs" / "alpha-one.html").read_text()
    assert "Alpha" in page and "One" in page and "A. Person" in page
    links = [src.split("?")[0] for src in re.findall(r'src="([^"]+)"', page)]
    assert links and all((site / "pairs" / src).resolve().is_file() for src in links)
    assert (site / "docs" / "index.html").is_file()
    assert not (site / "docs" / "sitemap.xml.gz").exists()
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}
    assert statuses(run_build(project, render_site=True, docs_dir=docs))["alpha-one"] == "reused"
    after = {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}
    assert after == before  # nothing changed, nothing rewritten


def test_a_cache_inside_the_site_is_refused_before_anything_is_written(project: Path):
    with pytest.raises(CovergenError, match="inside the site folder") as info:
        build(
            BuildOptions(
                catalog=project / "catalog.yaml",
                cache_dir=project / "site" / "cache",
                site_dir=project / "site",
                device="cpu",
            )
        )
    assert info.value.field == "cache"
    assert not (project / "site").exists()


def test_offline_builds_use_only_what_was_fetched(project: Path):
    with local_server() as server:
        cover = (project / "covers" / "x.png").read_bytes()
        server.routes["/cover.png"] = serve_bytes(cover, "image/png")
        edit(project, "cover: covers/y.png", f"cover: '{server.url('/cover.png')}'")
        offline = statuses(run_build(project, offline=True))
        assert offline["gamma-three"] == "failed" and server.paths == []
        assert statuses(run_build(project))["gamma-three"] == "built" and len(server.paths) == 1
        again = run_build(project, offline=True, force=True)  # the stored copy is enough
        assert statuses(again)["gamma-three"] == "built" and len(server.paths) == 1


def test_images_too_small_for_the_network_fail_their_pair_naming_the_parameter(project: Path):
    from conftest import gradient_photo

    gradient_photo(16, 128).save(project / "photos" / "strip.png")
    edit(project, "photo: photos/b.png", "photo: photos/strip.png")  # beta-two: 16×128
    edit(project, "photo: photos/c.png", "photo: photos/c.png\n    overrides: {style_scale: 0.1}")
    edit(project, "size: 32", "size: 32\n  min_size: 32")
    summary = run_build(project)
    outcomes = {o.pair: o for o in summary.outcomes}
    assert outcomes["alpha-one"].status == "built"
    assert outcomes["beta-two"].status == "failed" and "size" in outcomes["beta-two"].error
    assert "use size 128 or more" in outcomes["beta-two"].error
    assert outcomes["gamma-three"].status == "failed"
    assert "gamma-three': style_scale" in outcomes["gamma-three"].error


def test_style_blend_in_a_catalog_pair_is_refused_by_check(project: Path):
    from covergen.catalog import load_catalog

    edit(project, "content_weight: 2", "content_weight: 2\n      style_blend: [1, 2, 3]")
    with pytest.raises(CovergenError, match="style_blend: gives 3 weights, but a pair has one"):
        load_catalog(project / "catalog.yaml")
    from covergen import cli

    assert cli.main(["check", "--catalog", str(project / "catalog.yaml")]) == 2


@pytest.mark.parametrize("docs", ["site", "site/docs", ".", "cache/.."])
def test_a_user_guide_that_holds_or_lies_in_the_site_is_refused(project: Path, docs: str):
    (project / "site").mkdir(exist_ok=True)
    with pytest.raises(CovergenError, match="docs_dir") as caught:
        run_build(project, docs_dir=project / docs, render_site=True)
    assert "inside" in caught.value.message
    assert not (project / "cache" / "runs.sqlite").exists()  # refused before anything


def test_a_catalog_of_the_arbitrary_method_builds_and_its_pages_say_so(project: Path):
    pytest.importorskip("onnx")
    edit(project, "content_weight: 1 ", "method: arbitrary\n  content_weight: 1 ")
    summary = run_build(project, render_site=True)
    assert {o.status for o in summary.outcomes} == {"built"}
    assert all(o.metrics.get("style_taken") is not None for o in summary.outcomes)
    page = (project / "site" / "pairs" / "alpha-one.html").read_text()
    assert "Arbitrary-style network" in page
    # The Gatys parameters decide nothing here: changing them repaints nothing.
    edit(project, "iterations: 3", "iterations: 9")
    assert {o.status for o in run_build(project).outcomes} == {"reused"}


def shared_images_project(project: Path, pairs: int) -> dict[str, str]:
    """``pairs`` pairs over two distinct images (the photo under two names, one cover);
    returns the images' SHA-256 by name."""
    import hashlib

    photo = project / "photos" / "a.png"
    (project / "photos" / "a-again.png").write_bytes(photo.read_bytes())
    lines = [
        "defaults: {size: 32, scales: 1, iterations: 1, content_weight: 1, protect_faces: false}",
        "pairs:",
    ]
    for i in range(pairs):
        lines += [
            f"  - band: Band {i}",
            f"    album: Album {i}",
            f"    photo: photos/{'a' if i % 2 else 'a-again'}.png",
            "    cover: covers/x.png",
        ]
        if i % 3 == 0:
            lines.append(f"    overrides: {{content_weight: {1 + i % 4}}}")
    (project / "catalog.yaml").write_text("\n".join(lines) + "\n")
    return {
        name: hashlib.sha256((project / name).read_bytes()).hexdigest()
        for name in ("photos/a.png", "covers/x.png")
    }


class CountingEngine(InstantEngine):
    """InstantEngine that counts what it paints, and fails every job when told to."""

    def __init__(self, fail: bool = False):
        self.painted: list[str] = []
        self.fail = fail

    def stylize_batch(self, jobs, progress=None, cancel=None):
        if self.fail:
            raise ValueError("the engine refused")
        self.painted += [job.params.to_dict()["content_weight"] for job in jobs]
        return super().stylize_batch(jobs, progress, cancel)


def test_pairs_with_the_same_images_and_parameters_are_painted_once(project: Path):
    """Twelve pairs over one photo (under two names) and one cover, four content weights:
    four paintings; every other pair gets the painting of its key, or its failure."""
    from covergen.executors import ExecutorSettings
    from covergen.executors.local import LocalExecutor
    from covergen.executors.painter import Painter, StoreInputs

    shared_images_project(project, 12)
    cache = project / "cache"

    def build_with(engine: CountingEngine):
        painter = Painter(StoreInputs(cache), lambda device: engine)
        settings = ExecutorSettings(cache_dir=cache, devices=("cpu",), max_batch=1)
        return build(
            BuildOptions(catalog=project / "catalog.yaml", cache_dir=cache, render_site=False),
            executor=LocalExecutor(settings, painter),
        )

    failing = CountingEngine(fail=True)
    failed = build_with(failing)
    assert set(statuses(failed).values()) == {"failed"} and len(failed.outcomes) == 12
    assert all("the engine refused" in (o.error or "") for o in failed.outcomes)

    engine = CountingEngine()
    built = build_with(engine)
    assert sorted(engine.painted) == [1, 2, 3, 4]  # one painting per key
    outcomes = {o.pair: o for o in built.outcomes}
    assert len(outcomes) == 12
    by_key: dict[str, set[str]] = {}
    for o in outcomes.values():
        assert o.result is not None and o.result.is_file()
        by_key.setdefault(o.key, set()).add(o.status)
    assert all(states in ({"built"}, {"built", "reused"}) for states in by_key.values())
    # The run log knows every pair's result: the next build paints nothing.
    again = CountingEngine()
    assert set(statuses(build_with(again)).values()) == {"reused"} and again.painted == []


def spy_decodes(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter[str], Counter[str]]:
    """Decodes counted by the SHA-256 of the bytes: the sources stage's (fetching and
    checking the images), and every other (painting, the site)."""
    import hashlib

    import covergen.sources
    import covergen.sources.decoding

    fetching: Counter[str] = Counter()
    other: Counter[str] = Counter()
    decode = covergen.sources.decoding.decode

    def counter(counted: Counter[str]):
        def counting(data: bytes, *args, **kwargs):
            counted[hashlib.sha256(data).hexdigest()] += 1
            return decode(data, *args, **kwargs)

        return counting

    monkeypatch.setattr(covergen.sources, "decode", counter(fetching))
    monkeypatch.setattr(covergen.sources.decoding, "decode", counter(other))
    return fetching, other


def test_each_distinct_image_is_decoded_once_per_build_however_many_pairs_share_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    from covergen.executors import ExecutorSettings
    from covergen.executors.local import LocalExecutor
    from covergen.executors.painter import Painter, StoreInputs

    pairs = 60
    images = shared_images_project(project, pairs)
    once = dict.fromkeys(images.values(), 1)
    fetching, other = spy_decodes(monkeypatch)

    from covergen import cli

    assert cli.main(["check", "--catalog", str(project / "catalog.yaml")]) == 0
    assert (fetching, other) == ({}, {})  # check finds the files; it decodes none

    dry = run_build(project, dry_run=True)  # an empty cache: the store knows nothing yet
    assert list(statuses(dry).values()) == ["planned"] * pairs
    assert (fetching, other) == (once, {})

    fetching.clear()
    cache = project / "cache"
    painter = Painter(StoreInputs(cache), lambda device: InstantEngine())
    executor = LocalExecutor(ExecutorSettings(cache_dir=cache, devices=("cpu",)), painter)
    built = build(
        BuildOptions(catalog=project / "catalog.yaml", cache_dir=cache, render_site=False),
        executor=executor,
    )
    # Four distinct keys (content weights 1-4): four paintings, the other pairs share them.
    assert sorted(statuses(built).values()) == ["built"] * 4 + ["reused"] * (pairs - 4)
    assert fetching == once  # painting decodes what it paints, counted in ``other``

    fetching.clear()
    other.clear()
    assert set(statuses(run_build(project)).values()) == {"reused"}
    assert set(statuses(run_build(project, dry_run=True)).values()) == {"reused"}
    # The store remembers what it decoded: a no-op build and its dry run decode nothing.
    assert (fetching, other) == ({}, {})
