"""A local HTTP server whose answer per path the test decides (downloads, retries, slow
and broken servers, weights from a hub)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class LocalServer:
    """What the server answers (``routes``: path -> handler; others get 404) and what it was
    asked (``seen``). ``stop`` is set when the test ends: a slow handler waits on it."""

    base: str
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def hits(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    @property
    def paths(self) -> list[str]:
        """Every path asked for, in order."""
        return [s.path for s in self.seen]


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body:
        handler.wfile.write(body)


def serve_bytes(data: bytes, content_type: str | None = None) -> Handler:
    """A route that answers 200 with ``data``."""
    headers = {"Content-Type": content_type} if content_type else {}
    return lambda handler: reply(handler, 200, data, headers)


@contextlib.contextmanager
def local_server() -> Iterator[LocalServer]:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port), shut down when the block ends."""
    state = LocalServer(base="")

    class Handle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = state.routes.get(self.path)
            if route is None:
                reply(self, 404, b"not found", {"Content-Type": "text/plain"})
            else:
                route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output clean

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # clients hanging up on purpose (size limit, timeout) are expected here

    httpd = Server(("127.0.0.1", 0), Handle)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll interval keeps shutdown() (and so each test's teardown) quick.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()  # releases slow handlers
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
