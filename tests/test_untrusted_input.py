"""The hostile review's classes, one regression test each: nothing lost, nothing hangs, no
traceback. Each drives the real command or stage with the payload class the review used
(and a variant of it); docs/guarantees.md maps every promise to these tests.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import gradient_photo
from PIL import Image

from covergen import cli
from covergen.build import BuildOptions, build
from covergen.catalog import CatalogError, load_catalog, parse_catalog
from covergen.errors import CovergenError
from covergen.runlog import RunLog
from covergen.safetext import printable, redact
from covergen.sources import FetchSettings, ImageStore
from covergen.store import cache_paths
from covergen.store.results import ResultStore


def command(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "covergen", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def write(project: Path, text: str) -> Path:
    path = project / "catalog.yaml"
    path.write_text(text)
    return path


PAIR = """  - band: {band}
    album: {album}
    photo: photos/a.png
    cover: covers/x.png
"""
HEAD = "defaults: {size: 32, scales: 1, iterations: 2, tolerance: 0}\npairs:\n"


# ------------------------------------------------------------------ 6, 17: the one printer


def test_markup_and_escapes_in_data_are_printed_as_text(project: Path):
    write(
        project,
        HEAD
        + PAIR.format(band="Alpha", album="One")
        + "    year: '[/x]'\n"
        + PAIR.format(band="'[bold red]Beta[/]'", album="Two"),
    )
    done = command(project, "build", "--device", "cpu", "--no-site")
    assert done.returncode == 1, done.stderr  # one pair failed, the other was built
    assert "[/x] is not a year" in done.stderr and "Traceback" not in done.stderr
    done = command(project, "status")
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert "bold-red-beta-two" in done.stdout  # the pair's id, from its name
    done = command(project, "list")
    assert done.returncode == 0 and "Traceback" not in done.stderr
    # The markup in the data is printed as it was written, not read as markup.
    assert "[/x]" in done.stdout and "[bold red]Beta[/]" in done.stdout


def test_control_characters_never_reach_the_terminal():
    assert printable("a\x1b[2Jb\x07\u202ec\r") == "a\ufffd[2Jbc"
    assert "\x1b" not in printable("server said \x1b]0;owned\x07")


# ------------------------------------------------------------------ 7, 8, 19: YAML abuse


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("pairs: &a [*a]\n", "refers to itself"),
        ("pairs: " + "[" * 500 + "]" * 500 + "\n", "nested"),
        ("pairs:\n  - band: !custom x\n    album: y\n    photo: p\n    cover: c\n", "tag"),
        ("pairs:\n  - !!python/object:os.system {band: x}\n", "tag"),
        ("pairs:\n  - ? [a, b]\n    : x\n", "not text"),
    ],
)
def test_recursive_deep_and_tagged_yaml_are_problems_not_crashes(text: str, words: str):
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, Path("/tmp/catalog.yaml"))
    assert words in caught.value.describe()


def test_a_large_real_catalog_is_not_an_alias_bomb():
    pairs = "".join(
        f"  - band: Band {i}\n    album: Album {i}\n    tags: [a, b]\n"
        f"    photo: {{src: p{i}.jpg, credit: C}}\n    cover: c{i}.png\n"
        for i in range(3000)
    )
    catalog = parse_catalog("pairs:\n" + pairs, Path("/tmp/catalog.yaml"))
    assert len(catalog.pairs) == 3000
    # A bomb is still stopped, and the message names the file it is in.
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    with pytest.raises(CatalogError) as caught:
        parse_catalog("\n".join([*lines, "pairs: *a8"]), Path("/srv/bomb.yaml"))
    assert "alias bomb" in caught.value.describe() and "/srv/bomb.yaml" in str(caught.value)


# ------------------------------------------------------------------ 9, 11, 12: ids and paths


def test_symlink_loops_and_nul_bytes_fail_their_pair_alone(project: Path):
    os.symlink("loop-b", project / "photos" / "loop-a")
    os.symlink("loop-a", project / "photos" / "loop-b")
    write(
        project,
        HEAD
        + PAIR.format(band="Good", album="One")
        + "  - {band: Loop, album: Two, photo: photos/loop-a, cover: covers/x.png}\n"
        + '  - {band: Nul, album: Three, photo: "photos/a\\0.png", cover: covers/x.png}\n',
    )
    summary = build(
        BuildOptions(
            catalog=project / "catalog.yaml",
            cache_dir=project / "cache",
            device="cpu",
            render_site=False,
        )
    )
    outcomes = {o.pair: o for o in summary.outcomes}
    assert outcomes["good-one"].status == "built"
    assert outcomes["loop-two"].status == "failed" and "loop" in outcomes["loop-two"].error
    assert outcomes["nul-three"].status == "failed"
    assert "control character" in outcomes["nul-three"].error


def test_overlong_ids_are_refused_by_check_and_derived_ones_are_cut(project: Path):
    long_id = "a" * 250
    write(
        project,
        HEAD
        + f"  - id: {long_id}\n"
        + PAIR.format(band="B", album="C")[2:].replace("band", "    band", 1)
        if False
        else HEAD + f"  - id: {long_id}\n    band: B\n    album: C\n    photo: p\n    cover: c\n",
    )
    done = command(project, "check")
    assert done.returncode == 2 and "characters long" in done.stderr
    write(project, HEAD + PAIR.format(band="Word " * 60, album="x"))
    catalog = load_catalog(project / "catalog.yaml")
    assert len(catalog.pairs[0].id) <= 100 and catalog.pairs[0].id.startswith("word-word")


def test_ids_colliding_after_slugging_keep_the_first_pair_and_its_painting(project: Path):
    write(project, HEAD + PAIR.format(band="AC/DC", album="Back"))
    options = BuildOptions(
        catalog=project / "catalog.yaml",
        cache_dir=project / "cache",
        site_dir=project / "site",
        device="cpu",
    )
    first = build(options)
    assert [o.status for o in first.outcomes] == ["built"]
    write(
        project,
        HEAD + PAIR.format(band="AC/DC", album="Back") + PAIR.format(band="AC-DC", album="Back"),
    )
    second = build(options)
    statuses = [(o.pair, o.status) for o in second.outcomes]
    assert ("ac-dc-back", "reused") in statuses
    assert any(
        s == "failed" and "duplicate id" in (o.error or "")
        for (_, s), o in zip(statuses, second.outcomes, strict=True)
    )
    assert "ac-dc-back" in (project / "site" / "index.html").read_text()


# ------------------------------------------------------------------ 10: lone surrogates


def test_lone_surrogates_are_refused_before_anything_is_written(project: Path, capsys):
    before = (project / "catalog.yaml").read_bytes()
    code = cli.main(
        ["add", "--catalog", str(project / "catalog.yaml"), "--band", "\udcff", "--album", "x",
         "--photo", "photos/a.png", "--cover", "covers/x.png"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "surrogate" in err and "--band" in err
    assert (project / "catalog.yaml").read_bytes() == before
    catalog_text = HEAD + PAIR.format(band='"bad \\uDCFF"', album="x")
    with pytest.raises(CatalogError) as caught:
        parse_catalog(catalog_text, Path("/tmp/catalog.yaml"))
    text = caught.value.describe()
    assert "surrogate" in text or "invalid Unicode" in text


# ------------------------------------------------------------------ 13: read-only and odd paths


def test_read_only_cache_status_and_list_read_without_writing(project: Path, tmp_path: Path):
    """As another user, for whom the cache is read-only (root would write anyway)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    shared = Path(tempfile.mkdtemp(prefix="covergen-ro-"))
    try:
        shared.chmod(0o755)
        copy = shared / "project"
        shutil.copytree(project, copy)
        build(BuildOptions(catalog=copy / "catalog.yaml", cache_dir=copy / "cache",
                           site_dir=copy / "site", device="cpu", render_site=False))  # fmt: skip
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        before = sorted((p, p.stat().st_mtime_ns) for p in (copy / "cache").rglob("*"))
        for args in (["status"], ["list"]):
            done = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-m", "covergen", *args],
                cwd=copy, capture_output=True, text=True, timeout=120,
                env={**os.environ, "HOME": str(shared)},
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "alpha-one" in done.stdout and "built" in done.stdout
            assert "free disk space" not in done.stderr
        assert sorted((p, p.stat().st_mtime_ns) for p in (copy / "cache").rglob("*")) == before
        # Writing commands say what is wrong with the folder, not "free disk space" alone.
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "covergen", "add", "--band", "X", "--album", "Y",
             "--photo", "p.png", "--cover", "c.png"],
            cwd=copy, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "permission" in done.stderr.lower()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_catalog_that_is_a_folder_or_a_device_is_refused_clearly(project: Path, tmp_path: Path):
    done = command(project, "check", "--catalog", str(tmp_path))
    assert done.returncode == 2 and "is a folder" in done.stderr and "Traceback" not in done.stderr
    done = command(project, "check", "--catalog", "/dev/zero")
    assert done.returncode == 2 and "not a regular file" in done.stderr


# ------------------------------------------------------------------ 14: tampered records


def test_tampered_result_records_and_run_log_rows_are_not_trusted(project: Path):
    options = BuildOptions(
        catalog=project / "catalog.yaml",
        cache_dir=project / "cache",
        site_dir=project / "site",
        device="cpu",
    )
    first = build(options)
    key = first.outcomes[0].key
    record = (
        ResultStore(cache_paths(project / "cache")["results"]).image_path(key).with_suffix(".json")
    )
    record.write_text(record.read_text().replace('"seconds": ', '"seconds": "NaN", "x": '))
    with sqlite3.connect(cache_paths(project / "cache")["runlog"]) as db:
        db.execute("UPDATE runs SET losses = '[1, 2' WHERE id = 2")
        db.execute("UPDATE runs SET seconds = 'soon' WHERE id = 3")
    done = command(project, "status")
    assert done.returncode == 0 and "Traceback" not in done.stderr
    again = build(options)
    statuses = {o.pair: o.status for o in again.outcomes}
    assert statuses[first.outcomes[0].pair] == "built"  # the tampered one is painted again
    assert list(statuses.values()).count("reused") == 2


# ------------------------------------------------------------------ 16: interrupts


def test_ctrl_c_at_any_moment_ends_with_130_and_no_traceback(project: Path):
    # From when our code runs (the interpreter's own start-up, ~20 ms, is not ours to handle).
    for delay in (0.15, 0.4, 1.5):
        process = subprocess.Popen(
            [sys.executable, "-m", "covergen", "build", "--device", "cpu"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        assert process.returncode in (130, 0, 1), err
        assert "Traceback" not in err, err


# ------------------------------------------------------------------ 18: metadata


def test_a_jpeg_comment_never_reaches_the_published_jpegs(tmp_path: Path):
    from covergen.site.images import ImageDeriver

    source = tmp_path / "photo.jpg"
    gradient_photo(400, 300).save(source, "JPEG", comment=b"secret: the photographer's phone")
    import hashlib

    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    derived = ImageDeriver(tmp_path / "derived").derive(sha, source)
    assert derived is not None
    for variant in derived.of("jpeg"):
        data = variant.path.read_bytes()
        assert b"secret" not in data
        with Image.open(io.BytesIO(data)) as image:
            assert "comment" not in image.info


# ------------------------------------------------------------------ 20: the rest


def test_credentials_in_urls_are_never_echoed(project: Path):
    assert redact("fetch https://user:token@example.org/a.png failed") == (
        "fetch https://***@example.org/a.png failed"
    )
    write(
        project,
        HEAD
        + "  - {band: A, album: B, cover: covers/x.png,\n"
        + "     photo: 'https://me:hunter2@127.0.0.1:9/p.png'}\n",
    )
    done = command(project, "build", "--device", "cpu", "--no-site")
    assert done.returncode == 1 and "hunter2" not in done.stderr + done.stdout
    assert "https://***@127.0.0.1:9/p.png" in done.stderr


def test_upper_case_schemes_are_urls_everywhere():
    catalog = parse_catalog(
        HEAD + "  - {band: A, album: B, photo: 'HTTPS://example.org/p.png', cover: c.png}\n",
        Path("/tmp/catalog.yaml"),
    )
    assert catalog.pairs[0].photo.src.startswith("HTTPS://")


def test_init_image_is_refused_by_check():
    with pytest.raises(CatalogError, match="init 'image' needs a starting image"):
        parse_catalog(
            HEAD.replace("tolerance: 0", "tolerance: 0, init: image")
            + PAIR.format(band="A", album="B"),
            Path("/tmp/c.yaml"),
        )


def test_each_problem_is_listed_once():
    text = HEAD + "  - band: A\n    band: B\n    album: C\n    photo: p\n    cover: c\n"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, Path("/tmp/catalog.yaml"))
    described = [p.describe() for p in caught.value.problems]
    assert len(described) == len(set(described)) == 1


def test_messages_show_values_as_written_not_python_internals():
    with pytest.raises(CatalogError) as caught:
        parse_catalog(
            HEAD + PAIR.format(band="A", album="B") + "    year: 2001-01-01\n"
            "    overrides: {seed: 99999999999}\n",
            Path("/tmp/catalog.yaml"),
        )
    text = caught.value.describe()
    assert "2001-01-01 is not a year" in text and "datetime" not in text
    assert "maximum 2147483647" in text and "e+09" not in text


def test_a_build_that_crashes_is_recorded_as_failed_not_killed(project: Path):
    class Broken:
        name = "broken"

        def device_kind(self) -> str:
            return "cpu"

        def prepare(self) -> list[str]:
            return ["cpu"]

        def run(self, jobs, on_outcome, events, stop):
            raise RuntimeError("a bug in an executor")

    with pytest.raises(RuntimeError):
        build(
            BuildOptions(
                catalog=project / "catalog.yaml",
                cache_dir=project / "cache",
                site_dir=project / "site",
            ),
            executor=Broken(),  # type: ignore[arg-type]
        )
    last = RunLog(cache_paths(project / "cache")["runlog"]).last_build()
    assert last is not None and last["status"] == "failed"


def test_a_briefly_missing_photo_keeps_the_painting_on_the_site(project: Path):
    options = BuildOptions(
        catalog=project / "catalog.yaml",
        cache_dir=project / "cache",
        site_dir=project / "site",
        device="cpu",
    )
    build(options)
    index = (project / "site" / "index.html").read_text()
    assert index.count('class="card"') == 3
    (project / "photos" / "a.png").rename(project / "photos" / "gone.png")
    summary = build(options)
    assert {o.pair: o.status for o in summary.outcomes}["alpha-one"] == "failed"
    index = (project / "site" / "index.html").read_text()
    assert index.count('class="card"') == 3  # still shown
    assert (project / "site" / "pairs" / "alpha-one.html").is_file()
    done = command(project, "status")
    assert "shows older" in done.stdout


def test_two_builds_with_different_caches_do_not_sweep_each_others_site_staging(
    project: Path, monkeypatch: pytest.MonkeyPatch
):
    import covergen.locks as locks
    from covergen.locks import site_lock

    # The build's site lock polls while another holder has it: the first poll says it waits.
    waiting = threading.Event()

    def poll(seconds: float) -> None:
        waiting.set()
        time.sleep(seconds)

    monkeypatch.setattr(locks, "time", SimpleNamespace(monotonic=time.monotonic, sleep=poll))
    from covergen.site.staging import MARKER_TEXT, STAGING_MARKER

    staging = project / ".site.new-other"
    with site_lock(project / "site"):
        # The staging of another build (another cache), which holds the lock while it renders.
        staging.mkdir()
        (staging / STAGING_MARKER).write_bytes(MARKER_TEXT)
        (staging / "index.html").write_text("theirs")
        thread_error: list[BaseException] = []

        def render() -> None:
            try:
                build(BuildOptions(catalog=project / "catalog.yaml", site_dir=project / "site",
                                   cache_dir=project / "other-cache", device="cpu"))  # fmt: skip
            except BaseException as exc:
                thread_error.append(exc)

        worker = threading.Thread(target=render)
        worker.start()
        while not waiting.wait(0.05):
            assert worker.is_alive(), "the build finished without waiting for the site lock"
        # While it waits, the other build's staging and the site are as they were.
        assert worker.is_alive() and (staging / "index.html").read_text() == "theirs"
        assert not (project / "site" / "index.html").exists()
        shutil.rmtree(staging)  # the other build finishes and cleans up after itself
    worker.join(300)
    assert not thread_error and (project / "site" / "index.html").is_file()


# ------------------------------------------------------------------ 5: servers that stall


@pytest.fixture
def stalling_server() -> Iterator[tuple[str, dict]]:
    """A raw socket server: /headers trickles its status line a byte at a time, /later
    answers 503 with Retry-After: 100000."""
    state: dict = {"hits": 0, "stop": threading.Event()}
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)

    def serve() -> None:
        while not state["stop"].is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def handle(conn: socket.socket) -> None:
        with conn:
            request = conn.recv(4096).decode(errors="replace")
            state["hits"] += 1
            if "/headers" in request:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n":
                    if state["stop"].wait(0.3):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        return
            else:
                conn.sendall(
                    b"HTTP/1.1 503 Busy\r\nRetry-After: 100000\r\nContent-Length: 0\r\n\r\n"
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", state
    finally:
        state["stop"].set()
        server.close()


def test_trickled_headers_hit_the_download_deadline(stalling_server, tmp_path: Path):
    base, _ = stalling_server
    store = ImageStore(
        tmp_path / "store", FetchSettings(download_timeout=1.5, read_timeout=5, retries=0)
    )
    started = time.monotonic()
    with pytest.raises(CovergenError, match=r"took longer than 1\.5 s"):
        store.fetch(f"{base}/headers.png", tmp_path)
    assert time.monotonic() - started < 5


def test_a_long_retry_after_is_not_waited_for(stalling_server, tmp_path: Path):
    base, state = stalling_server
    store = ImageStore(tmp_path / "store", FetchSettings(retries=3, backoff=0.01))
    started = time.monotonic()
    with pytest.raises(CovergenError, match="503"):
        store.fetch(f"{base}/later.png", tmp_path)
    assert time.monotonic() - started < 5 and state["hits"] == 1
