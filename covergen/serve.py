"""`covergen serve`: preview the built site locally, under the same base path as the host.

GitHub project pages live under ``/<repository>/``, so a site that works at ``/`` may break
once published. The preview serves the site under the published base path and behaves like
GitHub Pages where it matters: ``/`` redirects to the base path, a folder without a trailing
slash redirects to one, ``/page`` finds ``page.html``, a missing file answers ``404.html``
with status 404, and there are no directory listings.

Unlike GitHub Pages, it sends the two headers that make a page cross-origin isolated
(``Cross-Origin-Opener-Policy: same-origin``, ``Cross-Origin-Embedder-Policy: require-corp``):
the live panel's WebAssembly runtime then paints with several threads (docs/site.md says
which hosts can send them). The gallery loads nothing from other origins, so nothing breaks.

It is the standard library's ``SimpleHTTPRequestHandler`` (``directory=``, conditional GETs,
HEAD, its own path normalisation) with those rules added; it serves only a folder covergen
built (one with the site marker), and nothing outside it, links included.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from .errors import CovergenError
from .site.staging import MARKER, marked

log = logging.getLogger(__name__)

# Types that matter for the gallery, fixed here: the system's mimetypes table varies
# (webp is missing on older systems, xml may come out as text/xml).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".json": "application/json",
    ".xml": "application/xml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".webmanifest": "application/manifest+json",
}
NOT_FOUND_BODY = b"<!doctype html><title>404 Not Found</title><h1>404 Not Found</h1>\n"
# Cross-origin isolation: SharedArrayBuffer, so WebAssembly threads (the live panel).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


def base_path_for(base_url: str) -> str:
    """The path part of a site's base URL, as served: ``https://me.github.io/gallery`` ->
    ``/gallery/``; no URL, or one without a path -> ``/``."""
    return normalise_base_path(urlsplit(base_url).path if base_url else "/")


def normalise_base_path(base_path: str) -> str:
    """``gallery`` / ``/gallery`` / ``/gallery/`` -> ``/gallery/``; empty -> ``/``."""
    parts = [p for p in base_path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise CovergenError(
            f"{base_path!r} is not a usable base path", field="base_path", hint="e.g. /gallery/"
        )
    return "/" + "".join(f"{p}/" for p in parts)


# Served under the base path with --watch: the page's reload script and the site's version.
WATCH_PREFIX = "__covergen/"
RELOAD_SCRIPT = b"""// covergen serve --watch: reload the page when the site is rebuilt.
(() => {
  const url = new URL("__covergen/version", document.baseURI.replace(/[^/]*$/, ""));
  const here = document.currentScript && document.currentScript.src;
  const base = here ? new URL("version", here) : url;
  let seen = null;
  setInterval(async () => {
    try {
      const answer = await fetch(base, { cache: "no-store" });
      const version = (await answer.json()).version;
      if (seen !== null && version !== seen) location.reload();
      seen = version;
    } catch (error) { /* the preview stopped: nothing to reload */ }
  }, 1000);
})();
"""


class SiteServer(ThreadingHTTPServer):
    """An HTTP server for one built site under one base path.

    ``watch``: pages get a script that reloads them when ``version`` changes (the site was
    rebuilt); the files on disk are never changed for it."""

    daemon_threads = True  # a hung browser connection must not keep the command alive

    def __init__(
        self, address: tuple[str, int], site_dir: Path, base_path: str, *, watch: bool = False
    ):
        self.site_dir = site_dir.resolve()
        self.base_path = normalise_base_path(base_path)
        self.watch = watch
        self.version = 0
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        handler = functools.partial(SiteRequestHandler, directory=str(self.site_dir))
        super().__init__(address, handler)

    @property
    def url(self) -> str:
        """Where a browser finds the site, e.g. http://127.0.0.1:8000/gallery/."""
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        elif ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}{self.base_path}"


class SiteRequestHandler(SimpleHTTPRequestHandler):
    """The standard file handler, with the preview's rules."""

    server: SiteServer
    server_version = "covergen-serve"
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        **CONTENT_TYPES,
    }

    def send_head(self):  # type: ignore[no-untyped-def]
        base = self.server.base_path
        path = unquote(urlsplit(self.path).path)
        if self.server.watch and path.startswith(base + WATCH_PREFIX):
            return self._watch_answer(path[len(base + WATCH_PREFIX) :])
        if self.server.watch and (
            path.endswith((".html", "/")) or "." not in path.rsplit("/", 1)[-1]
        ):
            page = Path(self.translate_path(self.path))
            if page.is_dir():
                page = page / "index.html"
            if page.suffix == ".html" and page.is_file():
                return self._page_with_reload(page)
        if base != "/" and path in ("/", base.rstrip("/")):
            query = urlsplit(self.path).query
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", base + (f"?{query}" if query else ""))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        """The file a request names under the base path, or a path that is never found:
        outside the base path, outside the site (links included), or not a name at all."""
        root = self.server.site_dir
        # Under the marker file, which is no folder: opening it fails, the answer is 404.
        nowhere = str(root / MARKER / "not-found")
        request = unquote(urlsplit(path).path)
        base = self.server.base_path
        if not request.startswith(base):
            return nowhere
        parts = [p for p in request[len(base) :].split("/") if p]
        if any(p in (".", "..", MARKER) or "\\" in p or "\0" in p for p in parts):
            return nowhere
        candidate = root.joinpath(*parts)
        try:
            if not candidate.exists() and parts and not parts[-1].endswith(".html"):
                # GitHub Pages serves /about from about.html
                candidate = candidate.with_name(parts[-1] + ".html")
            resolved = candidate.resolve()
        except (OSError, ValueError):  # a name too long, say
            return nowhere
        if resolved != root and not resolved.is_relative_to(root):
            return nowhere  # a link inside the site must not lead out of it
        text = str(resolved)
        return text + "/" if request.endswith("/") and resolved.is_dir() else text

    def _watch_answer(self, name: str):  # type: ignore[no-untyped-def]
        if name == "version":
            body = json.dumps({"version": self.server.version}).encode()
            kind = CONTENT_TYPES[".json"]
        elif name == "reload.js":
            body, kind = RELOAD_SCRIPT, CONTENT_TYPES[".js"]
        else:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        return self._bytes(body, kind)

    def _page_with_reload(self, page: Path):  # type: ignore[no-untyped-def]
        try:
            body = page.read_bytes()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        script = f'<script src="{self.server.base_path}{WATCH_PREFIX}reload.js" defer></script>'
        at = body.rfind(b"</body>")
        body = body[:at] + script.encode() + body[at:] if at >= 0 else body + script.encode()
        return self._bytes(body, CONTENT_TYPES[".html"])

    def _bytes(self, body: bytes, kind: str, status: int = HTTPStatus.OK) -> io.BytesIO:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def list_directory(self, path: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
        self.send_error(HTTPStatus.NOT_FOUND)  # no listings
        return None

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code != HTTPStatus.NOT_FOUND:
            super().send_error(code, message, explain)
            return
        body = NOT_FOUND_BODY
        with contextlib.suppress(OSError):
            body = (self.server.site_dir / "404.html").read_bytes()
        page = self._bytes(body, CONTENT_TYPES[".html"], HTTPStatus.NOT_FOUND)
        if self.command != "HEAD":
            self.copyfile(page, self.wfile)

    def send_header(self, keyword: str, value: str) -> None:
        # The standard handler writes "Content-type"; headers are case-insensitive, but
        # naive clients (and our tests' dicts) are not.
        super().send_header("Content-Type" if keyword.lower() == "content-type" else keyword, value)

    def end_headers(self) -> None:
        # A preview: always show the latest build.
        self.send_header("Cache-Control", "no-cache")
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        # The browser may go away mid-file; there is no one left to tell.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().copyfile(source, outputfile)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


def check_site(site_dir: Path) -> None:
    """Refuse to serve a folder that is not a site covergen built."""
    if not site_dir.is_dir():
        raise CovergenError(
            f"no site at {site_dir}", field="site", hint="build it first: `covergen build`"
        )
    if not marked(site_dir / MARKER):
        raise CovergenError(
            f"{site_dir} is not a site covergen built (it has no {MARKER})",
            field="site",
            hint="pass the site folder of a build (--site-dir), or build one: `covergen build`",
        )


def make_server(
    site_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    base_path: str = "/",
    watch: bool = False,
) -> SiteServer:
    """A server for ``site_dir`` under ``base_path``, bound but not yet serving.

    Port 0 picks a free port; ``server.url`` says which. Call ``serve_forever()`` (in a
    thread for tests), then ``shutdown()`` and ``server_close()``.
    """
    site_dir = Path(site_dir)
    check_site(site_dir)
    if not 0 <= port <= 65535:
        raise CovergenError(
            f"{port} is not a port number", field="port", hint="use 1–65535, or 0 for any free one"
        )
    try:
        return SiteServer((host, port), site_dir, base_path, watch=watch)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CovergenError(
            f"cannot listen on {host}:{port}: {reason}",
            field="port",
            hint="choose another --port (0 picks a free one)",
        ) from None


def serve(
    site_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    base_path: str = "/",
    on_ready: Callable[[str], None] | None = None,
    watch: Watch | None = None,
) -> None:
    """Serve ``site_dir`` under ``base_path`` until interrupted (Ctrl-C returns normally).

    ``on_ready`` receives the site's URL once the server listens (the CLI prints it).
    ``watch``: rebuild the site when its sources change, and reload the pages open.
    """
    server = make_server(
        site_dir, host=host, port=port, base_path=base_path, watch=watch is not None
    )
    stop = threading.Event()
    with server:
        if on_ready is not None:
            on_ready(server.url)
        if watch is not None:
            threading.Thread(
                target=watch.run, args=(server, stop), name="covergen-watch", daemon=True
            ).start()
        try:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a preview ends
                server.serve_forever()
        finally:
            stop.set()


@dataclass
class Watch:
    """What `serve --watch` watches (files or folders, by their files' sizes and times)
    and how it rebuilds; ``rebuild`` returns a line to say, and raises CovergenError to
    say what is wrong (the site stays as it was)."""

    paths: list[Path]
    rebuild: Callable[[], str]
    say: Callable[[str], None]
    interval: float = 0.5

    def state(self) -> tuple[tuple[str, int, int], ...]:
        seen = []
        for path in self.paths:
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                with contextlib.suppress(OSError):
                    info = file.stat()
                    seen.append((str(file), info.st_mtime_ns, info.st_size))
        return tuple(seen)

    def run(self, server: SiteServer, stop: threading.Event) -> None:
        last = self.state()
        while not stop.wait(self.interval):
            now = self.state()
            if now == last:
                continue
            last = now
            try:
                self.say(self.rebuild())
            except CovergenError as exc:
                self.say(f"not rebuilt: {exc.describe()}")
                continue
            server.version += 1
