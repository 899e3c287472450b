"""`covergen serve`: preview the built site locally, under the same base path as the host.

GitHub project pages live under ``/<repository>/``, so a site that works at ``/`` may break
once published. The preview serves the site under the published base path and behaves like
GitHub Pages where it matters: ``/`` redirects to the base path, a folder without a trailing
slash redirects to one, ``/page`` finds ``page.html``, a missing file answers ``404.html``
with status 404, and there are no directory listings.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import mimetypes
import shutil
import socket
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from .errors import CovergenError

log = logging.getLogger(__name__)

# Types that matter for the gallery, fixed here: the system's mimetypes table varies
# (webp is missing on older systems, xml may come out as text/xml).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
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


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


class SiteServer(ThreadingHTTPServer):
    """An HTTP server for one built site under one base path."""

    daemon_threads = True  # a hung browser connection must not keep the command alive

    def __init__(self, address: tuple[str, int], site_dir: Path, base_path: str):
        self.site_dir = site_dir.resolve()
        self.base_path = normalise_base_path(base_path)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SiteRequestHandler)

    @property
    def url(self) -> str:
        """Where a browser finds the site, e.g. http://127.0.0.1:8000/gallery/."""
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        elif ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}{self.base_path}"


class SiteRequestHandler(BaseHTTPRequestHandler):
    """GET and HEAD for files of ``server.site_dir``; nothing outside it, no listings."""

    server: SiteServer
    server_version = "covergen-serve"

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _respond(self, body: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        base = self.server.base_path
        if base != "/" and path in ("/", base.rstrip("/")):
            self._redirect(base, split.query)
            return
        if not path.startswith(base):
            self._not_found(body)
            return
        found = self._resolve(path[len(base) :])
        if found is None:
            self._not_found(body)
            return
        if found.is_dir():
            if not path.endswith("/"):
                self._redirect(quote(path) + "/", split.query)
                return
            found = found / "index.html"
            if not found.is_file():  # no listings
                self._not_found(body)
                return
        self._send_file(found, HTTPStatus.OK, body)

    def _resolve(self, relative: str) -> Path | None:
        """The file or folder a request names, or None: missing, or outside the site."""
        parts = [p for p in relative.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        root = self.server.site_dir
        candidate = root.joinpath(*parts)
        if not candidate.exists() and parts and not parts[-1].endswith(".html"):
            # GitHub Pages serves /about from about.html
            candidate = candidate.with_name(parts[-1] + ".html")
        if not candidate.exists():
            return None
        # A link inside the site must not lead out of it.
        resolved = candidate.resolve()
        return resolved if resolved.is_relative_to(root) else None

    def _redirect(self, location: str, query: str) -> None:
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location + (f"?{query}" if query else ""))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _not_found(self, body: bool) -> None:
        page = self.server.site_dir / "404.html"
        if page.is_file():
            self._send_file(page, HTTPStatus.NOT_FOUND, body)
            return
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", CONTENT_TYPES[".html"])
        self.send_header("Content-Length", str(len(NOT_FOUND_BODY)))
        self.end_headers()
        if body:
            self.wfile.write(NOT_FOUND_BODY)

    def _send_file(self, path: Path, status: HTTPStatus, body: bool) -> None:
        try:
            handle = path.open("rb")
        except OSError:
            self.send_error(HTTPStatus.FORBIDDEN)
            return
        with handle:
            stat = path.stat()
            self.send_response(status)
            self.send_header("Content-Type", content_type(path))
            self.send_header("Content-Length", str(stat.st_size))
            self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
            # A preview: always show the latest build.
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                # The browser may go away mid-file; there is no one left to tell.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    shutil.copyfileobj(handle, self.wfile)


def make_server(
    site_dir: Path, *, host: str = "127.0.0.1", port: int = 8000, base_path: str = "/"
) -> SiteServer:
    """A server for ``site_dir`` under ``base_path``, bound but not yet serving.

    Port 0 picks a free port; ``server.url`` says which. Call ``serve_forever()`` (in a
    thread for tests), then ``shutdown()`` and ``server_close()``.
    """
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise CovergenError(
            f"no site at {site_dir}", field="site", hint="build it first: `covergen build`"
        )
    try:
        return SiteServer((host, port), site_dir, base_path)
    except OSError as exc:
        raise CovergenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
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
) -> None:
    """Serve ``site_dir`` under ``base_path`` until interrupted (Ctrl-C returns normally).

    ``on_ready`` receives the site's URL once the server listens (the CLI prints it).
    """
    server = make_server(site_dir, host=host, port=port, base_path=base_path)
    with server:
        if on_ready is not None:
            on_ready(server.url)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a preview ends
            server.serve_forever()
