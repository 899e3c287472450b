"""Hardening (issue 5): hostile catalogs, broken inputs and faults in the middle of a build.

Each fault is injected into a real build of a tiny project: a full disk (ENOSPC when a file
is flushed), SIGINT and SIGKILL while a result is written, SIGKILL of a whole build, a second
build started beside it, damaged cache entries, a network that drops mid-download, a GPU out
of memory. After each one the tests check the guarantees of docs/guarantees.md: a clear
message naming the pair and the field, every other pair built, nothing half-written in
``cache/``, ``site/`` the previous or the new version, the run log saying why, ``catalog.yaml``
untouched, and the next build completing with no clean-up by hand.

A stand-in engine paints where the painting is not the point (it needs no network), so most
builds take a fraction of a second. Cases proven elsewhere are not repeated here; the table in
docs/guarantees.md names their tests (test_catalog, test_sources, test_site, test_weights,
test_build, test_painter).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import gradient_photo, stripe_cover
from PIL import Image
from support.engines import LOSS, painting_of
from support.servers import LocalServer, local_server

from covergen.build import BuildOptions, BuildSummary, build, cache_paths
from covergen.catalog import CatalogError, parse_catalog
from covergen.errors import CovergenError, InputImageError
from covergen.executors import ExecutorSettings
from covergen.executors.local import LocalExecutor
from covergen.executors.painter import Painter, StoreInputs
from covergen.nst import StylizeResult
from covergen.runlog import RunLog
from covergen.sources import FetchSettings, ImageStore
from covergen.stopping import StopSignals
from covergen.store.features import FeatureCache
from covergen.store.results import ResultStore

CATALOG = """\
# hardening tests: tiny, quick, and never to be modified by a build
defaults:
  size: 32
  scales: 1
  iterations: 2
  tolerance: 0
  content_weight: 1
  protect_faces: false
pairs:
  - band: Alpha
    album: One
    photo: {src: photos/a.png, credit: A. Person}
    cover: covers/x.png
  - band: Beta
    album: Two
    photo: photos/b.png
    cover: covers/y.png
"""
PAIRS = ("alpha-one", "beta-two")
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"


# ---------------------------------------------------------------------- a stand-in engine


class StandInEngine:
    """Paints without a network: the photo at the job's size, tinted with the cover's mean.

    ``oom_on_gpu`` raises CUDA's out-of-memory error on any device but the CPU.
    """

    def __init__(self, device: str, log: list[tuple[str, int]], *, oom_on_gpu: bool = False):
        self.device, self.log, self.oom_on_gpu = device, log, oom_on_gpu

    def stylize_batch(self, jobs, progress=None, cancel=None) -> list[StylizeResult]:
        self.log.append((self.device, len(jobs)))
        if self.oom_on_gpu and self.device != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        out = []
        for job in jobs:
            painted = painting_of(job, tint=True)
            out.append(StylizeResult(painted, [], job.params.iterations, 0.01, self.device, LOSS))
        return out


def stand_in(cache: Path, devices: tuple[str, ...] = ("cpu",), **engine: Any) -> LocalExecutor:
    """The real scheduler and painter, with the stand-in engine; ``.log`` lists (device,
    batch size)."""
    log: list[tuple[str, int]] = []
    painter = Painter(StoreInputs(cache), lambda device: StandInEngine(device, log, **engine))
    settings = ExecutorSettings(cache_dir=cache, devices=devices, max_batch=4)
    executor = LocalExecutor(settings, painter, trust_devices=True)
    executor.log = log  # type: ignore[attr-defined]
    return executor


# ---------------------------------------------------------------------- the project


@dataclass
class Project:
    """A catalog folder with its images, its cache and its site, all under ``root``."""

    root: Path
    fingerprint: tuple[bytes, int, int] = (b"", 0, 0)

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.yaml"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def site(self) -> Path:
        return self.root / "site"

    def write_catalog(self, text: str) -> None:
        self.catalog.write_text(text)
        self.fingerprint = self._fingerprint()

    def edit(self, old: str, new: str) -> None:
        text = self.catalog.read_text()
        assert old in text
        self.write_catalog(text.replace(old, new))

    def _fingerprint(self) -> tuple[bytes, int, int]:
        stat = self.catalog.stat()
        return self.catalog.read_bytes(), stat.st_mtime_ns, stat.st_ino

    def assert_catalog_untouched(self) -> None:
        assert self._fingerprint() == self.fingerprint, "the build modified catalog.yaml"

    def build(
        self,
        executor: LocalExecutor | str | None = "stand-in",
        stop: threading.Event | None = None,
        **options: Any,
    ) -> BuildSummary:
        """A build on the CPU without the site; ``executor=None``: the real engine."""
        values = {
            "catalog": self.catalog,
            "cache_dir": self.cache,
            "site_dir": self.site,
            "device": "cpu",
            "render_site": False,
            **options,
        }
        chosen = stand_in(self.cache) if executor == "stand-in" else executor
        return build(BuildOptions(**values), executor=chosen, stop=stop)  # type: ignore[arg-type]

    @property
    def results(self) -> ResultStore:
        return ResultStore(cache_paths(self.cache)["results"])

    @property
    def runlog(self) -> RunLog:
        return RunLog(cache_paths(self.cache)["runlog"])

    def leftovers(self) -> list[Path]:
        """Temporary files in the cache and staging folders beside the site."""
        temps = [p for p in self.cache.rglob(".*.tmp")] if self.cache.exists() else []
        staging = [
            p for p in self.root.iterdir() if p.name.startswith((".site.new-", ".site.old-"))
        ]
        return temps + staging


@pytest.fixture
def project(tmp_path: Path, converted_weights: Path) -> Project:
    root = tmp_path / "project"  # tmp_path itself is "outside the catalog's folder"
    (root / "photos").mkdir(parents=True)
    (root / "covers").mkdir()
    gradient_photo(48, 40, seed=1).save(root / "photos" / "a.png")
    gradient_photo(48, 40, seed=2).save(root / "photos" / "b.png")
    stripe_cover(40).save(root / "covers" / "x.png")
    stripe_cover(40, colour=(20, 40, 200)).save(root / "covers" / "y.png")
    weights = root / "cache" / "weights"
    weights.mkdir(parents=True)
    for file in converted_weights.iterdir():
        os.link(file, weights / file.name)  # converting them takes a second per project
    project = Project(root)
    project.write_catalog(CATALOG)
    return project


def statuses(summary: BuildSummary) -> dict[str, str]:
    return {o.pair: o.status for o in summary.outcomes}


def errors(summary: BuildSummary) -> dict[str, str]:
    return {o.pair: o.error or "" for o in summary.outcomes}


def site_files(site: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------- fault injection


def path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@dataclass
class FullDisk:
    """Paths refused so far; ``freed()`` ends the fault (space was made)."""

    refused: list[str]
    active: bool = True

    def freed(self) -> None:
        self.active = False


def disk_fills_up(
    monkeypatch: pytest.MonkeyPatch, where: Callable[[str], bool], *, after: int = 0
) -> FullDisk:
    """From now on, flushing a file whose path ``where`` accepts fails with ENOSPC, as on a
    full disk, once ``after`` such files have gone through.

    Every durable write of covergen (results, features, the image store, derived images,
    the staged site) flushes its file with os.fsync before renaming it into place.
    """
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file is flushed")
    real = os.fsync
    passed: list[str] = []
    fault = FullDisk([])

    def fsync(fd: int) -> None:
        path = path_of(fd)
        if fault.active and os.path.isfile(path) and where(path):
            if len(passed) >= after:
                fault.refused.append(path)
                raise OSError(errno.ENOSPC, ENOSPC, path)
            passed.append(path)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return fault


# ---------------------------------------------------------------------- bad input, one build


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def hostile_files(root: Path) -> None:
    """Broken and unusable inputs beside the good ones, and one image outside the folder."""
    photos = root / "photos"
    noise = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    jpeg = encode(Image.fromarray(noise), "JPEG", quality=90)
    (photos / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = bytearray(encode(Image.fromarray(noise), "PNG"))
    start = png.find(b"IDAT") + 20
    png[start : start + 40] = bytes(b ^ 0x55 for b in png[start : start + 40])
    (photos / "corrupt.png").write_bytes(bytes(png))
    (photos / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64"/>')
    (photos / "error.jpg").write_text("<!doctype html><html><body>502 Bad Gateway</body></html>")
    Image.new("RGB", (8, 8), "red").save(photos / "dot.png")
    Image.new("RGB", (1000, 50), "red").save(photos / "strip.png")
    Image.new("1", (1000, 1000)).save(photos / "bomb.png")  # 1 Mpx in a few hundred bytes
    gradient_photo(48, 40, seed=9).save(root.parent / "outside.png")
    (photos / "link.png").symlink_to(root.parent / "outside.png")


# (id, what the pair says, the field named, words of the message)
HOSTILE_PAIRS = [
    ("huge", "overrides: {size: 100000}", "overrides.size", "above the maximum 4096"),
    ("negative", "overrides: {content_weight: -1}", "overrides.content_weight",
     "below the minimum 0"),
    ("zero", "overrides: {iterations: 0}", "overrides.iterations", "below the minimum 1"),
    ("wordy", "overrides: {style_weight: lots}", "overrides.style_weight", "'lots'"),
    ("listed", "notes: [a, b]", "notes", "must be text, not a list"),
    ("colourful", "colour: red", "colour", "unknown key 'colour'"),
    ("script-link", "photo: {src: photos/a.png, url: 'javascript:alert(1)'}", "photo.url",
     "not an http(s) link"),
    ("script-src", "cover: 'javascript:alert(1)'", "cover.src",
     "javascript: sources are not supported"),
    ("ftp", "cover: ftp://example.org/c.png", "cover.src", "ftp:// sources are not supported"),
    ("up", "photo: ../outside.png", "photo.src", "outside the catalog's folder"),
    ("absolute", "photo: {OUTSIDE}", "photo.src", "absolute path"),
    ("linked", "photo: photos/link.png", "photo.src", "symbolic link to"),
    ("cut", "photo: photos/cut.jpg", "photo.src", "JPEG data is damaged or truncated"),
    ("corrupt", "photo: photos/corrupt.png", "photo.src", "PNG data is damaged"),
    ("vector", "photo: photos/logo.svg", "photo.src", "SVG (vector) image"),
    ("error-page", "photo: photos/error.jpg", "photo.src", "is an HTML page"),
    ("tiny", "photo: photos/dot.png", "photo.src", "only 8×8 pixels"),
    ("strip", "photo: photos/strip.png", "photo.src", "aspect ratio of 20.0:1"),
    ("bomb", "photo: photos/bomb.png", "photo.src", "more than the limit of 100,000"),
]  # fmt: skip


def hostile_catalog(outside: Path) -> str:
    entries = []
    for pair_id, says, _, _ in HOSTILE_PAIRS:
        fields = {"id": pair_id, "band": "Band", "album": pair_id, "photo": "photos/a.png",
                  "cover": "covers/x.png"}  # fmt: skip
        key = says.split(":")[0]
        lines = [f"  - {says.replace('{OUTSIDE}', str(outside))}"]
        lines += [f"    {k}: {v}" for k, v in fields.items() if k != key]
        entries.append("\n".join(lines))
    return CATALOG + "\n".join(entries) + "\n"


def test_every_hostile_pair_fails_alone_naming_pair_and_field(project: Project):
    hostile_files(project.root)
    project.write_catalog(hostile_catalog(project.root.parent / "outside.png"))
    limits = FetchSettings(max_pixels=100_000)  # the bomb's 1 Mpx stands for a billion

    summary = project.build(fetch=limits)

    assert statuses(summary) == {
        **dict.fromkeys(PAIRS, "built"),
        **{pair_id: "failed" for pair_id, *_ in HOSTILE_PAIRS},
    }
    latest = project.runlog.latest()
    for pair_id, _, field, words in HOSTILE_PAIRS:
        message = errors(summary)[pair_id]
        assert f"pair {pair_id!r}" in message and f"{field}: " in message, message
        assert words in message, message
        assert latest[pair_id].status == "failed" and latest[pair_id].error == message
    outside = hashlib.sha256((project.root.parent / "outside.png").read_bytes()).hexdigest()
    assert not list((project.cache / "images").rglob(f"{outside}*"))  # never copied in
    project.assert_catalog_untouched()

    # The setting that lets sources outside the folder in: those three pairs are painted.
    allowed = project.build(fetch=FetchSettings(max_pixels=100_000, allow_outside=True))
    # One image by three paths: one painting, which the other two pairs share.
    outside_pairs = ("up", "absolute", "linked")
    assert {p: s for p, s in statuses(allowed).items() if s == "built"}.keys() <= {*outside_pairs}
    assert sorted(statuses(allowed)[p] for p in outside_pairs) == ["built", "reused", "reused"]
    assert project.leftovers() == []


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "  javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "//evil.example/x",
    ],
)
@pytest.mark.parametrize("role", ["photo", "cover"])
def test_unsafe_credit_links_are_refused_by_the_catalog(url: str, role: str):
    refs = {"photo": "p.png", "cover": "c.png"}
    refs[role] = f"{{src: {refs[role]}, url: {json.dumps(url)}}}"
    text = "pairs:\n  - band: A\n    album: B\n"
    text += f"    photo: {refs['photo']}\n    cover: {refs['cover']}\n"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, Path("/tmp/catalog.yaml"))
    (problem,) = caught.value.problems
    line = 4 if role == "photo" else 5
    assert (problem.pair, problem.field, problem.line) == ("a-b", f"{role}.url", line)
    assert "not an http(s) link" in problem.message
    fine = text.replace(json.dumps(url), "https://example.org/photo")
    assert parse_catalog(fine, Path("/tmp/catalog.yaml")).pairs[0].id == "a-b"


def test_malformed_yaml_gives_line_and_column():
    text = "pairs:\n  - band: A\n    album: B: C\n"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, Path("/tmp/catalog.yaml"))
    (problem,) = caught.value.problems
    assert problem.line == 3 and "malformed YAML" in problem.message
    assert "(column 13)" in problem.message


# ---------------------------------------------------------------------- the network


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with local_server() as state:
        yield state


def send(handler: BaseHTTPRequestHandler, body: bytes, *, length: int | None = None,
         content_type: str = "image/png") -> None:  # fmt: skip
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def drops_half_way(data: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """Announce every byte, send half, hang up: a network dropping mid-download."""

    def handle(handler: BaseHTTPRequestHandler) -> None:
        send(handler, data[: len(data) // 2], length=len(data))
        handler.close_connection = True

    return handle


def test_a_download_cut_short_fails_that_pair_and_the_next_build_fetches_it(
    project: Project, server: LocalServer
):
    data = encode(gradient_photo(48, 40, seed=5), "PNG")
    server.routes["/band.png"] = drops_half_way(data)
    project.edit("photo: photos/b.png", f"photo: {server.base}/band.png")
    fetch = FetchSettings(retries=1, backoff=0.01, connect_timeout=2, read_timeout=2)

    summary = project.build(fetch=fetch)

    assert statuses(summary) == {"alpha-one": "built", "beta-two": "failed"}
    message = errors(summary)["beta-two"]
    assert message.startswith(f"pair 'beta-two': photo.src: {server.base}/band.png: ")
    half = len(data) // 2
    assert f"the connection dropped after {half:,} of {len(data):,} bytes" in message
    assert server.paths == ["/band.png"] * 2  # retried once, as the settings say
    stored = hashlib.sha256(data).hexdigest()
    assert not list((project.cache / "images").rglob(f"{stored}*"))  # nothing half-stored
    assert not (project.cache / "images" / "urls").exists()
    assert project.runlog.latest()["beta-two"].error == message

    server.routes["/band.png"] = lambda h: send(h, data)  # the network is back
    assert statuses(project.build(fetch=fetch)) == {"alpha-one": "reused", "beta-two": "built"}
    assert project.leftovers() == []
    project.assert_catalog_untouched()


def test_a_dropped_download_is_retried(server: LocalServer, tmp_path: Path):
    data = encode(gradient_photo(48, 40, seed=5), "PNG")
    answers = iter([drops_half_way(data)])
    server.routes["/band.png"] = lambda h: next(answers, lambda h: send(h, data))(h)
    store = ImageStore(tmp_path / "store", FetchSettings(retries=2, backoff=0.01))
    with store:
        stored = store.fetch(f"{server.base}/band.png", tmp_path)
    assert stored.path.read_bytes() == data and len(server.paths) == 2


def test_a_server_trickling_bytes_hits_the_download_timeout(server: LocalServer, tmp_path: Path):
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        send(handler, b"\x89PNG", length=10_000)
        while not server.stop.wait(0.05):  # a byte well inside every read timeout
            try:
                handler.wfile.write(b"\0")
                handler.wfile.flush()
            except OSError:
                return

    server.routes["/slow.png"] = trickle
    settings = FetchSettings(read_timeout=2, download_timeout=0.5, retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(InputImageError) as caught, ImageStore(tmp_path / "s", settings) as store:
        store.fetch(f"{server.base}/slow.png", tmp_path, pair="p", field="cover.src")
    assert time.monotonic() - started < 3
    assert "the download took longer than 0.5 s" in caught.value.message
    assert (caught.value.pair, caught.value.field) == ("p", "cover.src")
    assert server.paths == ["/slow.png"]  # a server this slow is not asked again
    assert not (tmp_path / "s" / "sha256").exists()


def test_an_error_page_labelled_as_an_image_is_refused(server: LocalServer, tmp_path: Path):
    page = b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not here</body></html>"
    server.routes["/photo.jpg"] = lambda h: send(h, page, content_type="image/jpeg")
    with (
        pytest.raises(InputImageError, match="is an HTML page, not an image"),
        ImageStore(tmp_path / "s", FetchSettings(retries=0)) as store,
    ):
        store.fetch(f"{server.base}/photo.jpg", tmp_path)
    assert not (tmp_path / "s" / "sha256").exists()


# ---------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("file", ["png", "json"])
def test_a_full_disk_while_storing_a_result_fails_that_pair_alone(
    project: Project, monkeypatch: pytest.MonkeyPatch, file: str
):
    planned = {o.pair: o.key for o in project.build(dry_run=True).outcomes}
    victim = planned["beta-two"]
    disk = disk_fills_up(monkeypatch, lambda p: f"/.{victim}.{file}." in p)

    summary = project.build()

    assert disk.refused, "the fault was never injected"
    assert statuses(summary) == {"alpha-one": "built", "beta-two": "failed"}
    message = errors(summary)["beta-two"]
    assert message.startswith("pair 'beta-two': cache: the painting could not be stored")
    assert ENOSPC in message and "free some space" in message
    record = project.runlog.latest()["beta-two"]
    assert (record.status, record.error, record.key) == ("failed", message, victim)
    assert project.results.get(victim) is None
    assert not list(project.results.root.rglob(f"{victim}*"))  # no image without its record
    assert project.leftovers() == []

    disk.freed()
    again = project.build()
    assert statuses(again) == {"alpha-one": "reused", "beta-two": "built"}
    assert project.results.get(victim) is not None
    project.assert_catalog_untouched()


def test_a_full_disk_in_the_image_store_names_the_pair(
    project: Project, monkeypatch: pytest.MonkeyPatch
):
    disk = disk_fills_up(monkeypatch, lambda p: "/images/sha256/" in p)
    summary = project.build(only=("alpha-one",))
    assert disk.refused
    assert statuses(summary) == {"alpha-one": "failed"}
    message = errors(summary)["alpha-one"]
    assert message.startswith("pair 'alpha-one': photo.src: cannot write the image store")
    assert ENOSPC in message
    assert project.leftovers() == []
    disk.freed()
    assert statuses(project.build()) == dict.fromkeys(PAIRS, "built")


def test_the_feature_cache_survives_a_full_disk_and_recomputes_damaged_files(
    project: Project, monkeypatch: pytest.MonkeyPatch
):
    """The real engine: its targets go through the feature cache."""
    features = cache_paths(project.cache)["features"]
    disk = disk_fills_up(monkeypatch, lambda p: "/features/" in p and p.endswith(".tmp"))
    first = project.build(executor=None, only=("alpha-one",))
    assert disk.refused and statuses(first) == {"alpha-one": "built"}  # the cache only saves time
    assert not list(features.rglob("*.pt")) and project.leftovers() == []
    painted = project.results.image_path(first.outcomes[0].key).read_bytes()

    disk.freed()
    project.build(executor=None, only=("alpha-one",), force=True)
    files = sorted(features.rglob("*.pt"))
    assert len(files) == 2  # the photo's content features, the cover's style statistics
    for file in files:  # one flipped bit in the middle of each
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0x04
        file.write_bytes(bytes(data))

    again = project.build(executor=None, only=("alpha-one",), force=True)

    assert statuses(again) == {"alpha-one": "built"}
    assert project.results.image_path(again.outcomes[0].key).read_bytes() == painted
    cache = FeatureCache(features)
    assert all(cache.get(file.stem) is not None for file in files)  # rewritten, verified
    project.assert_catalog_untouched()


def test_a_flipped_bit_in_a_feature_file_is_caught_by_its_checksum(tmp_path: Path):
    cache = FeatureCache(tmp_path)
    key = "ab" * 32
    cache.put(key, {"relu4_2": torch.arange(4096, dtype=torch.float32)})
    path = tmp_path / "ab" / f"{key}.pt"
    data = bytearray(path.read_bytes())
    offset = data.find(np.float32(2048).tobytes())  # a value deep inside the tensor
    assert offset > 0
    data[offset + 1] ^= 0x01
    path.write_bytes(bytes(data))
    # torch.load alone would give a slightly wrong 2048 here: it does not check the zip's CRCs.
    assert cache.get(key) is None and not path.exists()
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert cache.get(key) is None and not path.exists()


# ---------------------------------------------------------------------- the site


@pytest.mark.parametrize(
    ("stage", "where", "after"),
    [
        ("staging the new version", lambda p: "/.site.new-" in p, 2),
        ("deriving its images", lambda p: "/derived/" in p and p.endswith(".tmp"), 0),
    ],
)
def test_site_is_the_previous_version_or_the_new_one_never_a_mix(
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stage: str,
    where: Callable[[str], bool],
    after: int,
):
    docs = tmp_path / "docs-html"
    docs.mkdir()
    (docs / "index.html").write_text("<!doctype html><title>guide</title>")
    project.build(render_site=True, docs_dir=docs)
    before = site_files(project.site)
    assert "docs/index.html" in before and "index.html" in before
    project.edit("covers/y.png", "covers/x.png")  # beta-two gets a new painting
    disk = disk_fills_up(monkeypatch, where, after=after)

    with pytest.raises(CovergenError) as caught:
        project.build(render_site=True, docs_dir=docs)

    assert disk.refused, f"no fault while {stage}"
    assert caught.value.field == "site" and ENOSPC in caught.value.message
    assert "keeps its previous version" in caught.value.hint
    assert site_files(project.site) == before
    assert project.leftovers() == []
    assert project.runlog.last_build()["status"] == "failed"
    assert project.runlog.latest()["beta-two"].status == "built"  # the painting is kept

    disk.freed()
    summary = project.build(render_site=True, docs_dir=docs)
    assert statuses(summary) == {"alpha-one": "reused", "beta-two": "reused"}
    after_files = site_files(project.site)
    assert after_files != before and summary.site.pending == ()
    assert project.leftovers() == []
    project.assert_catalog_untouched()


# ---------------------------------------------------------------------- signals


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_a_result_is_written_keeps_nothing_half_written(
    project: Project, monkeypatch: pytest.MonkeyPatch, presses: int
):
    """Ctrl-C as the CLI hears it (``StopSignals``) in the middle of a result's write: once,
    the write finishes and the build stops after it; twice, the write is cut short where it
    is, and the atomic writer leaves nothing half-written either way."""
    # fp32: a dry run's keys are those of a build only once this machine's precision is
    # known, which depends on what ran before.
    planned = {o.pair: o.key for o in project.build(dry_run=True, precision="fp32").outcomes}
    real = os.fsync
    sent = []

    def fsync(fd: int) -> None:
        if not sent and f"/.{planned['alpha-one']}.png." in path_of(fd):
            sent.append(fd)
            for _ in range(presses):  # as Ctrl-C in the middle of the write
                signal.raise_signal(signal.SIGINT)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    stop = threading.Event()
    # A test run started in the background inherits SIGINT ignored; StopSignals sets it.
    with StopSignals(stop):
        if presses == 1:
            summary = project.build(stop=stop, precision="fp32")
            assert summary.interrupted
            done = statuses(summary)
        else:
            with pytest.raises(KeyboardInterrupt):
                project.build(stop=stop, precision="fp32")
            done = {pair: record.status for pair, record in project.runlog.latest().items()}

    assert sent
    if presses == 1:  # the write went on: the painting is kept
        assert done["alpha-one"] == "built"
    else:
        assert done["alpha-one"] == "cancelled"
        assert "stopped before its painting was stored" in project.runlog.latest()[
            "alpha-one"].error  # fmt: skip
        assert not list(project.results.root.rglob(f"{planned['alpha-one']}*"))
    # The other pair may have been painted before the stop reached its worker: then it is kept.
    assert done["beta-two"] in ("built", "cancelled")
    kept = sorted(planned[pair] for pair in PAIRS if done[pair] == "built")
    assert sorted(project.results.keys()) == kept and project.leftovers() == []
    latest = project.runlog.latest()
    assert {pair: latest[pair].status for pair in PAIRS} == done
    assert project.runlog.last_build()["status"] == "interrupted"

    sent.append("no more")  # the next build is not interrupted
    again = statuses(project.build(precision="fp32"))
    assert again == {pair: "reused" if planned[pair] in kept else "built" for pair in PAIRS}
    project.assert_catalog_untouched()


WRITER = """
import json, os, sys, time
from PIL import Image
from covergen.store.results import ResultStore

root, victim, fields = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
real = os.fsync

def fsync(fd):
    if victim in os.readlink(f"/proc/self/fd/{fd}"):
        print("writing", flush=True)
        time.sleep(60)  # killed here, the file written but not yet renamed into place
    real(fd)

os.fsync = fsync
from covergen.executors.painter import encode_png
ResultStore(root).put(encode_png(Image.new("RGB", (32, 27), (200, 30, 30))), 32, 27, fields)
print("done", flush=True)
"""


@pytest.mark.parametrize("file", ["png", "json"])
def test_sigkill_while_a_result_is_written_leaves_no_partial_result(project: Project, file: str):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    planned = {o.pair: o.key for o in project.build(dry_run=True).outcomes}
    key = planned["alpha-one"]
    fields = {"key": key, "pair": "alpha-one", "iterations": 2, "seconds": 0.1, "device": "cpu",
              "losses": {}, "params": {}, "photo_sha256": "0" * 64, "cover_sha256": "1" * 64,
              "engine_version": "x", "weights": "w"}  # fmt: skip
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(project.results.root), f"/.{key}.{file}.",
         json.dumps(fields)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)

    image, meta = (
        project.results.image_path(key),
        project.results.image_path(key).with_suffix(".json"),
    )
    assert not meta.exists()  # the record is written last; without it there is no result
    if image.exists():  # complete, it was renamed into place after its flush
        with Image.open(image) as done:
            done.load()
    assert project.results.get(key) is None
    assert len(list(project.results.root.rglob(".*.tmp"))) == 1  # what the kill left

    summary = project.build()  # no clean-up by hand
    assert statuses(summary) == dict.fromkeys(PAIRS, "built")
    assert project.results.get(key) is not None
    assert project.leftovers() == []  # the build swept the dead writer's temporary file


@pytest.mark.slow
def test_sigkill_mid_build_a_second_build_is_refused_and_the_next_completes(project: Project):
    project.edit("iterations: 2", "iterations: 50000")  # long enough to be killed mid-job
    command = [sys.executable, "-m", "covergen", "build", "--catalog", "catalog.yaml",
               "--device", "cpu", "--no-site"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core is plenty, the machine is shared
    first = subprocess.Popen(
        command, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert first.stdout is not None
        output = []
        for line in first.stdout:  # wait until it paints
            output.append(line)
            if "painting" in line:
                break
        assert first.poll() is None, "".join(output)

        second = subprocess.run(
            command, cwd=project.root, capture_output=True, text=True, timeout=120, env=env
        )
        assert second.returncode == 2, second.stderr
        assert "another covergen build is using" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    lock = cache_paths(project.cache)["lock"]
    assert lock.read_text() == f"pid {first.pid}"  # the dead holder's note is still there…

    summary = project.build()  # …but the kernel released its lock with the process

    assert statuses(summary) == dict.fromkeys(PAIRS, "built")
    assert all(project.results.get(o.key) for o in summary.outcomes)
    builds = [b["status"] for b in _builds(project.runlog)]
    assert builds == ["killed", "finished"]  # the killed build is marked, not "running"
    assert project.leftovers() == []
    project.assert_catalog_untouched()


def _builds(runlog: RunLog) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(runlog.path) as db:
        rows = db.execute("SELECT id, status FROM builds ORDER BY id").fetchall()
    return [{"id": i, "status": s} for i, s in rows]


# ---------------------------------------------------------------------- damaged results


def test_a_damaged_result_is_detected_by_its_checksum_and_painted_again(project: Project):
    first = {o.pair: o.key for o in project.build().outcomes}
    image = project.results.image_path(first["alpha-one"])
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: still a file of the right size
    image.write_bytes(bytes(data))
    project.results.image_path(first["beta-two"]).with_suffix(".json").write_text("{trunc")

    summary = project.build()

    assert statuses(summary) == dict.fromkeys(PAIRS, "built")  # painted again, not reused
    for key in first.values():
        record = project.results.get(key)
        assert record is not None
        data = project.results.image_path(key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256
    project.assert_catalog_untouched()


# ---------------------------------------------------------------------- out of GPU memory


def test_out_of_gpu_memory_falls_back_to_a_smaller_batch_then_to_the_cpu(project: Project):
    executor = stand_in(project.cache, devices=("cuda:0",), oom_on_gpu=True)
    summary = project.build(executor=executor)
    assert statuses(summary) == dict.fromkeys(PAIRS, "built")
    assert executor.log == [("cuda:0", 2), ("cuda:0", 1), ("cpu", 1), ("cuda:0", 1), ("cpu", 1)]
    latest = project.runlog.latest()
    for outcome in summary.outcomes:
        assert outcome.device == "cpu" and latest[outcome.pair].device == "cpu"
        assert project.results.get(outcome.key).device == "cpu"


def test_a_run_log_that_cannot_be_written_is_a_clear_error(tmp_path: Path):
    from covergen.errors import CovergenError
    from covergen.runlog import RunLog

    damaged = tmp_path / "runs.sqlite"
    damaged.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CovergenError) as caught:
        RunLog(damaged).start_build()
    assert caught.value.field == "runlog" and "runs.sqlite" in caught.value.message
    assert "moved aside" in caught.value.hint
