"""`covergen serve`: the site under its base path, GitHub-Pages-like redirects and 404s."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from covergen.errors import CovergenError
from covergen.serve import SiteServer, base_path_for, make_server, normalise_base_path
from covergen.site.staging import MARKER_TEXT


def make_site(root: Path) -> Path:
    files = {
        "index.html": b"<h1>home</h1>",
        "404.html": b"<h1>lost</h1>",
        "about.html": b"about",
        "pairs/joy/index.html": b"joy",
        "pairs/joy/a.webp": b"RIFFwebp",
        "logo.svg": b"<svg/>",
        "sitemap.xml": b"<urlset/>",
        "empty/.keep": b"",
        ".covergen-site": MARKER_TEXT,
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(tmp_path / "site")


def running(server: SiteServer) -> Iterator[SiteServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def root_server(site: Path) -> Iterator[SiteServer]:
    yield from running(make_server(site, port=0))


@pytest.fixture
def sub_server(site: Path) -> Iterator[SiteServer]:
    yield from running(make_server(site, port=0, base_path="/covergen/"))


def get(server: SiteServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        # skip_host/accept_encoding: send the path exactly as given, dots and all
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_serves_files_with_their_content_types(root_server):
    status, headers, body = get(root_server, "/")
    assert (status, body) == (200, b"<h1>home</h1>")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    for path, expected in [
        ("/pairs/joy/a.webp", "image/webp"),
        ("/logo.svg", "image/svg+xml"),
        ("/sitemap.xml", "application/xml; charset=utf-8"),
    ]:
        status, headers, _ = get(root_server, path)
        assert (status, headers["Content-Type"]) == (200, expected)
    assert root_server.url.startswith("http://127.0.0.1:") and root_server.url.endswith("/")


def test_folders_redirect_to_a_slash_and_serve_their_index(root_server):
    status, headers, _ = get(root_server, "/pairs/joy")
    assert (status, headers["Location"]) == (301, "/pairs/joy/")
    assert get(root_server, "/pairs/joy/")[2] == b"joy"
    assert get(root_server, "/about")[2] == b"about"  # as GitHub Pages does


def test_missing_files_and_folders_without_index_get_the_404_page(root_server):
    for path in ("/nope.html", "/empty/", "/pairs/"):
        status, headers, body = get(root_server, path)
        assert (status, body) == (404, b"<h1>lost</h1>")
        assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_a_site_without_404_page_still_answers_404(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("x")
    (site / ".covergen-site").write_bytes(MARKER_TEXT)
    for server in running(make_server(site, port=0)):
        status, _, body = get(server, "/missing")
        assert status == 404 and b"404" in body


def test_head_sends_headers_only(root_server):
    status, headers, body = get(root_server, "/index.html", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(b"<h1>home</h1>"))


def test_path_traversal_is_refused(root_server, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/pairs/..%2f..%2fsecret.txt"):
        status, _, body = get(root_server, path)
        assert status == 404 and b"secret" not in body


def test_links_leading_out_of_the_site_are_refused(site, tmp_path, root_server):
    (tmp_path / "secret.txt").write_text("secret")
    (site / "leak.txt").symlink_to(tmp_path / "secret.txt")
    status, _, body = get(root_server, "/leak.txt")
    assert status == 404 and b"secret" not in body


def test_base_path_serves_the_site_under_it_and_redirects_the_root(sub_server):
    assert sub_server.url.endswith("/covergen/")
    assert get(sub_server, "/covergen/")[2] == b"<h1>home</h1>"
    assert get(sub_server, "/covergen/pairs/joy/a.webp")[2] == b"RIFFwebp"
    for path in ("/", "/covergen"):
        status, headers, _ = get(sub_server, path)
        assert (status, headers["Location"]) == (301, "/covergen/")
    status, _, body = get(sub_server, "/index.html")  # outside the base path
    assert (status, body) == (404, b"<h1>lost</h1>")


def test_base_paths_from_urls_and_text():
    assert base_path_for("https://me.github.io/covergen") == "/covergen/"
    assert base_path_for("https://gallery.example.org") == "/"
    assert base_path_for("") == "/"
    assert normalise_base_path("a/b") == "/a/b/"
    with pytest.raises(CovergenError):
        normalise_base_path("/../x")


def test_missing_site_and_busy_port_are_clear_errors(site, tmp_path, root_server):
    with pytest.raises(CovergenError, match="no site"):
        make_server(tmp_path / "nope", port=0)
    with pytest.raises(CovergenError, match="cannot listen") as info:
        make_server(site, port=root_server.server_address[1])
    assert "--port" in info.value.hint
    with pytest.raises(CovergenError, match="not a port number"):
        make_server(site, port=99999)


def test_only_a_site_covergen_built_is_served(tmp_path: Path):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "passwd").write_text("root:x:0:0")
    with pytest.raises(CovergenError, match="not a site covergen built") as info:
        make_server(folder, port=0)
    assert info.value.field == "site" and "--site-dir" in info.value.hint


def test_hostile_paths_answer_404_or_stay_on_this_site(root_server):
    status, _, _ = get(root_server, "/" + "a" * 300)  # a name longer than the file system takes
    assert status == 404
    status, headers, _ = get(root_server, "/%2fpairs")
    assert status in (301, 404)
    assert not headers.get("Location", "/").startswith("//")  # never another host
    status, _, _ = get(root_server, "/.covergen-site")  # the marker is not part of the site
    assert status == 404


def test_watch_rebuilds_when_a_source_changes_and_pages_learn_of_it(site: Path, tmp_path: Path):
    import json

    from covergen.serve import Watch

    source = tmp_path / "catalog.yaml"
    source.write_text("a")
    rebuilt = threading.Event()
    said: list[str] = []

    def rebuild() -> str:
        rebuilt.set()
        return "rebuilt"

    server = make_server(site, port=0, base_path="/covergen/", watch=True)
    watch = Watch([source], rebuild, said.append, interval=0.01)
    stop = threading.Event()
    watcher = threading.Thread(target=watch.run, args=(server, stop), daemon=True)
    for _ in running(server):
        watcher.start()
        host, port = server.server_address[:2]

        def get(path: str, host: str = host, port: int = port) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.request("GET", path)
            answer = connection.getresponse()
            return answer.status, answer.read()

        status, page = get("/covergen/about")
        assert status == 200 and b"__covergen/reload.js" in page
        assert (site / "about.html").read_bytes() == b"about"  # the file is untouched
        assert json.loads(get("/covergen/__covergen/version")[1])["version"] == 0
        source.write_text("a change")
        assert rebuilt.wait(10)
        stop.set()
        watcher.join(10)
        assert json.loads(get("/covergen/__covergen/version")[1])["version"] == 1
        assert said == ["rebuilt"]
        assert get("/covergen/__covergen/reload.js")[0] == 200


def test_without_watch_pages_are_served_as_they_are(root_server: SiteServer):
    host, port = root_server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/about")
    assert connection.getresponse().read() == b"about"
