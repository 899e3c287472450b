"""Tests for covergen.sources: local paths, HTTP fetching against a server on 127.0.0.1, the
content-addressed store and its revalidation, and decoding of awkward image files.

No test leaves 127.0.0.1: urllib3's connect is guarded, and the sessions ignore proxy settings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import requests
import urllib3.util.connection
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile
from support.servers import Handler, LocalServer, local_server, reply

from covergen import __version__
from covergen.errors import InputImageError
from covergen.sources import FetchSettings, ImageStore, StoredImage, decode_image

FAST = FetchSettings(retries=0, backoff=0.01, connect_timeout=2.0, read_timeout=2.0)


# ---------------------------------------------------------------------- tiny images


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_bytes(
    colour: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (32, 24)
) -> bytes:
    return encode(Image.new("RGB", size, colour), "PNG")


def noisy_jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


# ---------------------------------------------------------------------- a local HTTP server


def image_route(data: bytes, etag: str = '"v1"', content_type: str | None = "image/png") -> Handler:
    """Serve ``data`` with an ETag and Last-Modified; answer a matching If-None-Match with 304."""

    def handle(handler: BaseHTTPRequestHandler) -> None:
        headers = {"ETag": etag, "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}
        if handler.headers.get("If-None-Match") == etag:
            reply(handler, 304, headers=headers)
            return
        if content_type:
            headers["Content-Type"] = content_type
        reply(handler, 200, data, headers)

    return handle


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as state:
        yield state


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection that is not to 127.0.0.1."""
    real = urllib3.util.connection.create_connection

    def guarded(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        if address[0] != "127.0.0.1":
            raise AssertionError(f"a test tried to reach {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", guarded)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment between us and 127.0.0.1
    yield session
    session.close()


@pytest.fixture
def make_store(tmp_path: Path, session: requests.Session) -> Callable[..., ImageStore]:
    def make(**settings: object) -> ImageStore:
        values = {**FAST.__dict__, **settings}
        return ImageStore(tmp_path / "store", FetchSettings(**values), session)

    return make


# ---------------------------------------------------------------------- remote images


def test_fetch_stores_by_hash_and_revalidates_with_etag(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    data = png_bytes()
    server.routes["/band.png"] = image_route(data)
    store = make_store()
    url = server.url("/band.png")

    first = store.fetch(url, tmp_path, pair="the-band", field="photo.src")

    digest = hashlib.sha256(data).hexdigest()
    assert first == StoredImage(
        sha256=digest,
        path=tmp_path / "store" / "sha256" / digest[:2] / f"{digest}.png",
        width=32,
        height=24,
        format="PNG",
        src=url,
        from_cache=False,
    )
    assert first.path.read_bytes() == data
    assert store.path_for(digest) == first.path
    record_name = hashlib.sha256(url.encode()).hexdigest() + ".json"
    record = json.loads((tmp_path / "store" / "urls" / record_name).read_text())
    assert (record["sha256"], record["etag"]) == (digest, '"v1"')
    request = server.hits("/band.png")[0]
    assert request.headers["user-agent"] == f"covergen/{__version__}"
    assert "if-none-match" not in request.headers

    second = store.fetch(url, tmp_path, pair="the-band", field="photo.src")

    revalidation = server.hits("/band.png")[1]
    assert revalidation.headers["if-none-match"] == '"v1"'
    assert revalidation.headers["if-modified-since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert second.from_cache
    assert (second.sha256, second.path, second.width, second.height) == (
        digest,
        first.path,
        32,
        24,
    )


def test_changed_remote_image_replaces_the_record(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    store = make_store()
    url = server.url("/cover.png")
    server.routes["/cover.png"] = image_route(png_bytes((10, 10, 10)), etag='"old"')
    old = store.fetch(url, tmp_path)
    server.routes["/cover.png"] = image_route(png_bytes((250, 250, 250)), etag='"new"')

    new = store.fetch(url, tmp_path)

    assert not new.from_cache and new.sha256 != old.sha256
    assert old.path.exists()  # content-addressed: the old bytes stay for old results
    assert store.fetch(url, tmp_path).from_cache


@pytest.mark.parametrize("content_type", ["application/octet-stream", None, "image/jpeg"])
def test_lenient_content_types_are_accepted(
    server: LocalServer,
    make_store: Callable[..., ImageStore],
    tmp_path: Path,
    content_type: str | None,
) -> None:
    # A mislabelled image type is harmless: the decoder decides what the bytes are.
    server.routes["/x"] = image_route(png_bytes(), content_type=content_type)
    assert make_store().fetch(server.url("/x"), tmp_path).format == "PNG"


@pytest.mark.parametrize("status", [404, 403, 410])
def test_client_errors_are_not_retried(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path, status: int
) -> None:
    server.routes["/gone.png"] = lambda h: reply(h, status, b"no")
    url = server.url("/gone.png")
    with pytest.raises(InputImageError) as caught:
        make_store(retries=3).fetch(url, tmp_path, pair="p", field="cover.src")
    assert url in caught.value.message and f"HTTP {status}" in caught.value.message
    assert (caught.value.pair, caught.value.field) == ("p", "cover.src")
    assert len(server.hits("/gone.png")) == 1


def test_html_page_is_refused_with_a_clear_message(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    page = b"<!doctype html><html><body>Please log in</body></html>"
    server.routes["/photo"] = lambda h: reply(h, 200, page, {"Content-Type": "text/html"})
    with pytest.raises(InputImageError, match="sent an HTML page") as caught:
        make_store().fetch(server.url("/photo"), tmp_path)
    assert "address of the image itself" in caught.value.hint
    assert not (tmp_path / "store" / "sha256").exists()


def test_svg_content_type_is_refused(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>'
    server.routes["/logo.svg"] = lambda h: reply(h, 200, svg, {"Content-Type": "image/svg+xml"})
    with pytest.raises(InputImageError, match="SVG"):
        make_store().fetch(server.url("/logo.svg"), tmp_path)


def test_oversize_body_with_content_length_is_refused(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    big = os.urandom(100_000)
    server.routes["/big.png"] = lambda h: reply(h, 200, big, {"Content-Type": "image/png"})
    with pytest.raises(InputImageError, match="too large: it is 100,000 bytes"):
        make_store(max_bytes=10_000).fetch(server.url("/big.png"), tmp_path)


def test_endless_body_without_content_length_is_cut_off(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    sent = []

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()  # HTTP/1.0 and no length: the body ends when the socket closes
        chunk = b"\0" * 16_384
        total = 0
        # Bounded only as a safety net: the client must hang up long before.
        while total < 200_000_000 and not server.stop.is_set():
            try:
                handler.wfile.write(chunk)
            except OSError:
                break
            total += len(chunk)
        sent.append(total)

    server.routes["/stream"] = endless
    started = time.monotonic()
    with pytest.raises(InputImageError, match="more than 10,000 bytes arrived"):
        make_store(max_bytes=10_000).fetch(server.url("/stream"), tmp_path)
    assert time.monotonic() - started < 5


def test_slow_server_times_out(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        server.stop.wait(5)  # released at teardown
        reply(handler, 200, png_bytes(), {"Content-Type": "image/png"})

    server.routes["/slow.png"] = slow
    started = time.monotonic()
    with pytest.raises(InputImageError, match="read timeout") as caught:
        make_store(read_timeout=0.5).fetch(server.url("/slow.png"), tmp_path)
    assert time.monotonic() - started < 3
    assert "never been fetched" in caught.value.message


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/cover.png"])
def test_redirect_to_another_scheme_is_refused(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path, location: str
) -> None:
    server.routes["/moved.png"] = lambda h: reply(h, 302, headers={"Location": location})
    with pytest.raises(InputImageError, match="redirected to") as caught:
        make_store().fetch(server.url("/moved.png"), tmp_path)
    assert location in caught.value.message


LONG_LABEL = "a" * 64


@pytest.mark.parametrize(
    "location", ["http://[::1/x", f"http://{LONG_LABEL}.example/x.png", "http://h:99999/x"]
)
def test_a_redirect_to_a_malformed_address_fails_that_image_naming_it(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path, location: str
) -> None:
    server.routes["/moved.png"] = lambda h: reply(h, 302, headers={"Location": location})
    with pytest.raises(InputImageError, match="redirected to") as caught:
        make_store().fetch(server.url("/moved.png"), tmp_path)
    message = caught.value.message
    assert location in message
    assert any(words in message for words in ("malformed", "cannot be encoded", "DNS"))


@pytest.mark.parametrize("src", ["http://[::1/x.png", f"https://{LONG_LABEL}.example/x.png"])
def test_a_malformed_address_is_refused_before_any_request(
    make_store: Callable[..., ImageStore], tmp_path: Path, src: str
) -> None:
    with pytest.raises(InputImageError) as caught:
        make_store().fetch(src, tmp_path)
    assert "redirected" not in caught.value.message and "the address" in caught.value.message


def test_http_redirects_are_followed(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    server.routes["/old.png"] = lambda h: reply(h, 301, headers={"Location": "/new.png"})
    server.routes["/new.png"] = image_route(png_bytes())
    stored = make_store().fetch(server.url("/old.png"), tmp_path)
    assert stored.format == "PNG" and len(server.hits("/new.png")) == 1


def test_redirect_loop_is_refused(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    server.routes["/loop"] = lambda h: reply(h, 302, headers={"Location": "/loop"})
    with pytest.raises(InputImageError, match="more than 5 redirects"):
        make_store().fetch(server.url("/loop"), tmp_path)
    assert len(server.hits("/loop")) == 6


@pytest.mark.parametrize("status", [503, 429])
def test_overload_is_retried_with_backoff(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path, status: int
) -> None:
    good = image_route(png_bytes())
    answers = iter([lambda h: reply(h, status, b"busy")])
    server.routes["/busy.png"] = lambda h: next(answers, good)(h)
    stored = make_store(retries=3, backoff=0.01).fetch(server.url("/busy.png"), tmp_path)
    assert not stored.from_cache
    assert len(server.hits("/busy.png")) == 2


def test_retries_give_up(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    server.routes["/down.png"] = lambda h: reply(h, 500, b"boom")
    with pytest.raises(InputImageError, match="HTTP 500"):
        make_store(retries=2, backoff=0.01).fetch(server.url("/down.png"), tmp_path)
    assert len(server.hits("/down.png")) == 3


def test_unreachable_server_falls_back_to_the_stored_copy(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    server.routes["/band.png"] = image_route(png_bytes())
    store = make_store(retries=1, backoff=0.01)
    first = store.fetch(server.url("/band.png"), tmp_path)
    server.routes["/band.png"] = lambda h: reply(h, 503, b"down for maintenance")

    again = store.fetch(server.url("/band.png"), tmp_path)

    assert again.from_cache and again.sha256 == first.sha256


def test_final_refusal_is_an_error_even_with_a_stored_copy(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    # A 404 is the server's answer, not an outage: the catalog needs a look, so it is reported.
    server.routes["/band.png"] = image_route(png_bytes())
    store = make_store()
    store.fetch(server.url("/band.png"), tmp_path)
    server.routes["/band.png"] = lambda h: reply(h, 404, b"gone")
    with pytest.raises(InputImageError, match="HTTP 404") as caught:
        store.fetch(server.url("/band.png"), tmp_path)
    assert "build offline" in caught.value.hint


def test_refused_connection_without_a_stored_copy(
    make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InputImageError, match=r"unreachable .*never been fetched"):
        make_store().fetch(f"http://127.0.0.1:{port}/x.png", tmp_path)


def test_offline_uses_the_store_and_refuses_unknown_urls(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    server.routes["/band.png"] = image_route(png_bytes())
    first = make_store().fetch(server.url("/band.png"), tmp_path)
    requests_before = len(server.seen)

    offline = make_store(offline=True)
    again = offline.fetch(server.url("/band.png"), tmp_path)
    assert again.from_cache and again.sha256 == first.sha256
    with pytest.raises(InputImageError, match="never been fetched, and the build is offline"):
        offline.fetch(server.url("/other.png"), tmp_path)
    assert len(server.seen) == requests_before


@pytest.mark.parametrize("src", ["ftp://example.org/a.png", "file:///etc/passwd", "data:,x"])
def test_other_schemes_are_refused(
    make_store: Callable[..., ImageStore], tmp_path: Path, src: str
) -> None:
    with pytest.raises(InputImageError, match="sources are not supported"):
        make_store().fetch(src, tmp_path)


def test_corrupt_stored_file_is_fetched_again(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    data = png_bytes()
    server.routes["/band.png"] = image_route(data)
    store = make_store()
    first = store.fetch(server.url("/band.png"), tmp_path)
    first.path.write_bytes(data[:-10] + b"0123456789")

    again = store.fetch(server.url("/band.png"), tmp_path)

    assert not again.from_cache
    assert "if-none-match" not in server.hits("/band.png")[-1].headers
    assert again.path.read_bytes() == data


def test_corrupt_stored_file_offline_is_an_error(
    server: LocalServer, make_store: Callable[..., ImageStore], tmp_path: Path
) -> None:
    server.routes["/band.png"] = image_route(png_bytes())
    first = make_store().fetch(server.url("/band.png"), tmp_path)
    first.path.write_bytes(b"garbage")
    with pytest.raises(InputImageError, match="offline"):
        make_store(offline=True).fetch(server.url("/band.png"), tmp_path)
    assert not first.path.exists()


# ---------------------------------------------------------------------- local files


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "band.jpg").write_bytes(noisy_jpeg())
    (tmp_path / "outside.png").write_bytes(png_bytes())
    return folder


@pytest.mark.parametrize("src", ["photos/band.jpg", "photos/../photos/band.jpg"])
def test_local_relative_path_is_copied(
    make_store: Callable[..., ImageStore], catalog_dir: Path, src: str
) -> None:
    stored = make_store().fetch(src, catalog_dir)
    data = (catalog_dir / "photos" / "band.jpg").read_bytes()
    assert (stored.sha256, stored.format, stored.width, stored.height, stored.src) == (
        hashlib.sha256(data).hexdigest(),
        "JPEG",
        64,
        48,
        src,
    )
    assert stored.path.suffix == ".jpg" and stored.path.read_bytes() == data
    assert not stored.from_cache


def test_same_bytes_are_not_rewritten(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    store = make_store()
    first = store.fetch("photos/band.jpg", catalog_dir)
    before = first.path.stat()
    second = store.fetch("photos/band.jpg", catalog_dir)
    after = second.path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert second == first


def test_corrupt_stored_copy_of_a_local_file_is_replaced(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    store = make_store()
    first = store.fetch("photos/band.jpg", catalog_dir)
    first.path.write_bytes(b"not the same bytes")
    again = store.fetch("photos/band.jpg", catalog_dir)
    assert again.path.read_bytes() == (catalog_dir / "photos" / "band.jpg").read_bytes()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times the store decoded bytes, by their SHA-256."""
    import covergen.sources as sources

    counted: Counter[str] = Counter()
    decode = sources.decode

    def counting(data: bytes, *args: object, **kwargs: object):
        counted[hashlib.sha256(data).hexdigest()] += 1
        return decode(data, *args, **kwargs)

    monkeypatch.setattr(sources, "decode", counting)
    return counted


@pytest.mark.parametrize("read_only", [False, True], ids=["build", "dry-run"])
def test_an_image_many_pairs_share_is_decoded_once_per_store(
    make_store: Callable[..., ImageStore],
    catalog_dir: Path,
    decodes: Counter[str],
    read_only: bool,
) -> None:
    photo = catalog_dir / "photos" / "band.jpg"
    (catalog_dir / "photos" / "copy.jpg").write_bytes(photo.read_bytes())  # same bytes
    store = make_store()
    if read_only:  # a dry run on an empty store: nothing is remembered on disk
        store = ImageStore(store.root, store.settings, read_only=True)
    fetched = {
        store.fetch(src, catalog_dir, pair=f"p{i}", field="photo.src")
        for i, src in enumerate(["photos/band.jpg", "photos/copy.jpg"] * 50)
    }
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert decodes == {digest: 1}
    assert {(s.sha256, s.width, s.height, s.format) for s in fetched} == {(digest, 64, 48, "JPEG")}
    assert store.root.exists() is not read_only


def test_a_file_changed_between_two_fetches_is_read_and_decoded_anew(
    make_store: Callable[..., ImageStore], catalog_dir: Path, decodes: Counter[str]
) -> None:
    store = make_store()
    first = store.fetch("photos/band.jpg", catalog_dir)
    (catalog_dir / "photos" / "band.jpg").write_bytes(noisy_jpeg((48, 64)))
    second = store.fetch("photos/band.jpg", catalog_dir)
    assert second.sha256 != first.sha256 and (second.width, second.height) == (48, 64)
    assert list(decodes.values()) == [1, 1]
    # Broken meanwhile: refused as before, naming the pair and field, not taken from memory.
    (catalog_dir / "photos" / "band.jpg").write_bytes(noisy_jpeg()[:2000])
    with pytest.raises(InputImageError, match="damaged or truncated") as caught:
        store.fetch("photos/band.jpg", catalog_dir, pair="p", field="photo.src")
    assert caught.value.describe().startswith("pair 'p': photo.src: photos/band.jpg: ")


def test_a_bad_image_many_pairs_share_fails_each_pair_naming_it(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    (catalog_dir / "photos" / "cut.jpg").write_bytes(noisy_jpeg()[:2000])
    store = make_store()
    for pair in ("one", "two"):
        with pytest.raises(InputImageError, match="damaged or truncated") as caught:
            store.fetch("photos/cut.jpg", catalog_dir, pair=pair, field="cover.src")
        assert caught.value.describe().startswith(f"pair '{pair}': cover.src: photos/cut.jpg: ")


def test_stored_bytes_are_checked_against_their_hash(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    store = make_store()
    stored = store.fetch("photos/band.jpg", catalog_dir)
    image = decode_image(store.verified_bytes(stored.sha256))
    assert (image.mode, image.size) == ("RGB", (64, 48))
    stored.path.write_bytes(b"tampered")
    with pytest.raises(InputImageError, match="damaged and removed"):
        store.verified_bytes(stored.sha256)
    assert not stored.path.exists()


def test_parent_escape_is_refused(make_store: Callable[..., ImageStore], catalog_dir: Path) -> None:
    with pytest.raises(InputImageError, match=r"outside the catalog's folder .*'\.\.'"):
        make_store().fetch("../outside.png", catalog_dir)
    assert make_store(allow_outside=True).fetch("../outside.png", catalog_dir).format == "PNG"


def test_absolute_path_is_refused(make_store: Callable[..., ImageStore], catalog_dir: Path) -> None:
    absolute = str(catalog_dir.parent / "outside.png")
    with pytest.raises(InputImageError, match="absolute path") as caught:
        make_store().fetch(absolute, catalog_dir)
    assert "--allow-outside" in caught.value.hint and "FetchSettings" not in caught.value.hint
    assert make_store(allow_outside=True).fetch(absolute, catalog_dir).format == "PNG"


def test_symlink_leading_outside_is_refused(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    (catalog_dir / "photos" / "sneaky.png").symlink_to(catalog_dir.parent / "outside.png")
    (catalog_dir / "photos" / "alias.jpg").symlink_to("band.jpg")
    with pytest.raises(InputImageError, match=r"symbolic link to .*outside"):
        make_store().fetch("photos/sneaky.png", catalog_dir)
    assert make_store(allow_outside=True).fetch("photos/sneaky.png", catalog_dir).width == 32
    assert make_store().fetch("photos/alias.jpg", catalog_dir).format == "JPEG"


def test_missing_file_names_the_path(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    with pytest.raises(InputImageError, match="no such file") as caught:
        make_store().fetch("photos/nope.jpg", catalog_dir, pair="p", field="photo.src")
    assert str(catalog_dir / "photos" / "nope.jpg") in caught.value.message
    assert caught.value.describe().startswith("pair 'p': photo.src: photos/nope.jpg: ")


def test_unusable_local_image_never_enters_the_store(
    make_store: Callable[..., ImageStore], catalog_dir: Path, tmp_path: Path
) -> None:
    data = noisy_jpeg()
    (catalog_dir / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputImageError, match="truncated"):
        make_store().fetch("cut.jpg", catalog_dir)
    assert not (tmp_path / "store" / "sha256").exists()


def test_large_local_file_is_refused(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    with pytest.raises(InputImageError, match="too large"):
        make_store(max_bytes=1000).fetch("photos/band.jpg", catalog_dir)


# ---------------------------------------------------------------------- decoding


def test_truncated_jpeg_is_refused() -> None:
    data = noisy_jpeg()
    with pytest.raises(InputImageError, match="JPEG data is damaged or truncated"):
        decode_image(data[: len(data) // 2], src="cut.jpg")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_corrupt_png_is_refused() -> None:
    rng = np.random.default_rng(1)
    data = bytearray(encode(Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)), "PNG"))
    start = data.find(b"IDAT") + 20
    data[start : start + 40] = bytes(b ^ 0x55 for b in data[start : start + 40])
    with pytest.raises(InputImageError, match="PNG data is damaged"):
        decode_image(bytes(data))


def test_svg_file_is_refused_naming_the_accepted_formats() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="99"/>'
    with pytest.raises(InputImageError, match="SVG") as caught:
        decode_image(svg, src="logo.svg")
    assert "JPEG, PNG, WebP, GIF, TIFF or BMP" in caught.value.hint


def test_junk_is_refused() -> None:
    with pytest.raises(InputImageError, match="is not a JPEG, PNG"):
        decode_image(b"\x00" * 100)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    bomb = encode(Image.new("1", (10_000, 10_000)), "PNG")
    assert len(bomb) < 20_000
    with pytest.raises(InputImageError, match="100,000,000 pixels, more than the limit"):
        decode_image(bomb, FetchSettings(max_pixels=1_000_000))
    assert limit_before == Image.MAX_IMAGE_PIXELS


def scan_bomb(copies: int, size: tuple[int, int] = (256, 256)) -> bytes:
    """A progressive greyscale JPEG whose smallest scan is repeated ``copies`` times: a few
    bytes per copy, a pass over the whole image per copy when decoded."""
    data = encode(Image.new("L", size, 128), "JPEG", progressive=True, quality=80)
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    ends = [*starts[1:], data.rindex(b"\xff\xd9")]
    start, end = min(zip(starts, ends, strict=True), key=lambda span: span[1] - span[0])
    return data[:end] + data[start:end] * (copies - 1) + data[end:]


def test_a_jpeg_scan_bomb_is_refused_before_decoding() -> None:
    bomb = scan_bomb(3000)
    assert len(bomb) < 200_000
    started = time.process_time()
    with pytest.raises(InputImageError, match=r"JPEG of 3,0\d\d scans, more than the limit"):
        decode_image(bomb)
    with pytest.raises(InputImageError, match="scans"):
        decode_image(bomb[: len(bomb) // 2])  # cut short: still counted, still refused
    assert time.process_time() - started < 30  # not a timing assertion: a hang guard
    # Junk where a marker is due hides nothing (libjpeg skips it and decodes on).
    hidden = bomb.replace(b"\xff\xda", b"\x00\xff\xda", 1)
    with pytest.raises(InputImageError, match="scans"):
        decode_image(hidden)
    # An ordinary progressive JPEG (a few scans), and one just at the limit, decode.
    assert decode_image(scan_bomb(1)).size == (256, 256)
    assert decode_image(scan_bomb(90)).size == (256, 256)


def test_cmyk_jpeg_gives_the_right_colours() -> None:
    cmyk = Image.new("CMYK", (32, 32), (255, 0, 0, 0))  # pure cyan
    cmyk.paste((0, 0, 0, 255), (0, 0, 16, 32))  # left half black
    image = decode_image(encode(cmyk, "JPEG", quality=95))
    assert image.mode == "RGB"
    assert np.allclose(image.getpixel((24, 16)), (0, 255, 255), atol=6)
    assert np.allclose(image.getpixel((4, 16)), (0, 0, 0), atol=6)


def test_icc_tagged_rgb_is_converted_to_srgb() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (32, 32), (200, 100, 50)), "PNG", icc_profile=srgb)
    assert np.allclose(decode_image(data).getpixel((5, 5)), (200, 100, 50), atol=2)


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    values = np.full((20, 20), 32768, np.uint16)
    values[:, :10] = 65535
    data = encode(Image.fromarray(values), "PNG")
    image = decode_image(data)
    assert image.getpixel((15, 5)) in ((127, 127, 127), (128, 128, 128))
    assert image.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("I", 32768, 128), ("I", 200, 200), ("F", 0.5, 128), ("F", 100.0, 100)],
)
def test_deep_tiff_modes_are_scaled(mode: str, value: float, expected: int) -> None:
    data = encode(Image.new(mode, (20, 20), value), "TIFF")
    pixel = decode_image(data).getpixel((3, 3))
    assert np.allclose(pixel, (expected,) * 3, atol=1)


def test_greyscale_and_bilevel_become_rgb() -> None:
    assert decode_image(encode(Image.new("L", (20, 20), 77), "PNG")).getpixel((1, 1)) == (77,) * 3
    bilevel = decode_image(encode(Image.new("1", (20, 20), 1), "BMP"))
    assert bilevel.getpixel((1, 1)) == (255, 255, 255)


def test_palette_transparency_is_composited_on_white() -> None:
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 10, 20))  # left half index 0, transparent
    image = decode_image(encode(palette, "PNG", transparency=0))
    assert image.getpixel((2, 5)) == (255, 255, 255)
    assert image.getpixel((15, 5)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("RGBA", (255, 0, 0, 128), (255, 127, 127)),
        ("RGBA", (0, 0, 255, 0), (255, 255, 255)),
        ("LA", (0, 128), (127, 127, 127)),
    ],
)
def test_alpha_is_composited_on_white(
    mode: str, colour: tuple[int, ...], expected: tuple[int, int, int]
) -> None:
    image = decode_image(encode(Image.new(mode, (20, 20), colour), "PNG"))
    assert np.allclose(image.getpixel((5, 5)), expected, atol=1)


def test_exif_orientation_is_applied(
    make_store: Callable[..., ImageStore], catalog_dir: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    source = Image.new("RGB", (40, 20), (0, 200, 0))
    source.paste((200, 0, 0), (0, 0, 20, 20))  # left half red
    data = encode(source, "JPEG", exif=exif, quality=95)
    image = decode_image(data)
    assert image.size == (20, 40)
    assert np.allclose(image.getpixel((10, 5)), (200, 0, 0), atol=12)  # red now on top

    (catalog_dir / "turned.jpg").write_bytes(data)
    store = make_store()
    first = store.fetch("turned.jpg", catalog_dir)
    again = store.fetch("turned.jpg", catalog_dir)  # described from the header this time
    assert (first.width, first.height) == (again.width, again.height) == (20, 40)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = decode_image(buffer.getvalue())
    assert image.mode == "RGB" and image.getpixel((5, 5)) == (255, 0, 0)


def test_tiny_image_is_refused_giving_its_size() -> None:
    with pytest.raises(InputImageError, match="only 8×8 pixels; at least 16"):
        decode_image(png_bytes(size=(8, 8)), src="dot.png")


def test_extreme_aspect_ratio_is_refused() -> None:
    with pytest.raises(InputImageError, match=r"1000×50 pixels, an aspect ratio of 20\.0:1"):
        decode_image(png_bytes(size=(1000, 50)))


def test_decoded_images_are_rgb_for_every_format() -> None:
    source = Image.new("RGB", (24, 20), (10, 120, 230))
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"):
        image = decode_image(encode(source, fmt))
        assert (image.mode, image.size) == ("RGB", (24, 20)), fmt


@settings(max_examples=300, deadline=None)
@given(
    host=st.one_of(
        st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z]{2,6}){0,2}", fullmatch=True),
        st.text(min_size=1, max_size=12).map(lambda t: t + ".com"),
        st.from_regex(r"\[[0-9a-fv:.x]{1,10}\][a-z0-9:]{0,4}", fullmatch=True),
    ),
    tail=st.sampled_from(["/", "/a.png", ":8080/x", "\\\\@evil.com/", "?q=1"]),
)
def test_an_address_covergen_accepts_is_one_requests_fetches_from_the_host_shown(host, tail):
    """The one reading of a web address agrees with the library that fetches: what passes
    is prepared by requests without error, and for the host the address names."""
    from urllib.parse import urlsplit

    from covergen.safetext import web_url_problem

    url = f"http://{host}{tail}"
    if web_url_problem(url):
        return
    prepared = requests.models.PreparedRequest()
    prepared.prepare_url(url, None)
    ours = (urlsplit(url).hostname or "").encode("idna").decode().lower()
    assert urlsplit(prepared.url).hostname in (ours, urlsplit(url).hostname)
