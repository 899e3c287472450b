"""HTTP for the sources stage: requests with urllib3's retries, and a hard total deadline.

Retries, backoff and Retry-After are urllib3's ``Retry`` on the session's adapter, and
redirects are requests' own (``max_redirects``). Two things the libraries do not do:

- **A total deadline.** Timeouts in requests and urllib3 bound each socket operation, so a
  server trickling its headers or body a byte at a time keeps a download alive for ever.
  Every socket a download opens is registered with a ``Deadline``, whose timer shuts the
  sockets down when the time is up: the blocked read returns at once, whatever it was
  reading. (Name resolution, which happens before a socket exists, is not covered.)
- **Refusing long waits.** A server asking to be retried after more than
  ``MAX_RETRY_AFTER_S`` (or after the deadline) is treated as down, not waited for.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from . import __version__

USER_AGENT = f"covergen/{__version__}"
# Listing what we decode keeps content-negotiating CDNs from answering with AVIF or JPEG XL.
ACCEPT = "image/webp,image/png,image/jpeg,image/gif,image/*;q=0.8,*/*;q=0.5"
MAX_REDIRECTS = 5
MAX_RETRY_AFTER_S = 60.0
RETRY_STATUSES = (429, 500, 502, 503, 504)
_CHUNK = 64 * 1024
_INCOMPLETE = re.compile(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)")

_current = threading.local()


class Deadline:
    """A time limit on everything one thread does with the network inside a with-block."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._end = 0.0
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Deadline:
        self._end = time.monotonic() + self.seconds
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()
        _current.deadline = self
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        _current.deadline = None
        if self._timer is not None:
            self._timer.cancel()

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def current_deadline() -> Deadline | None:
    return getattr(_current, "deadline", None)


def _shut(sock: socket.socket) -> None:
    # shutdown(), unlike close(), wakes a thread blocked reading the socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = current_deadline()
        if deadline is not None:
            deadline.register(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = current_deadline()
        if deadline is not None:
            deadline.register(sock)
        return sock


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Retry(Retry):
    """urllib3's Retry, except that a long Retry-After ends the attempts instead of waiting."""

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            return super().parse_retry_after(retry_after)
        except urllib3.exceptions.InvalidHeader:
            return 0.0  # a garbled header asks for nothing usable

    def increment(self, *args: Any, **kwargs: Any) -> _Retry:
        response = kwargs.get("response")
        if response is not None and self.respect_retry_after_header:
            wait = self.get_retry_after(response) or 0.0
            deadline = current_deadline()
            limit = min(MAX_RETRY_AFTER_S, deadline.remaining() if deadline else MAX_RETRY_AFTER_S)
            if wait > limit:
                raise urllib3.exceptions.MaxRetryError(
                    kwargs.get("_pool"), kwargs.get("url") or "", reason=None
                )
        return super().increment(*args, **kwargs)


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedPool,
            "https": _WatchedHTTPSPool,
        }


def retry_policy(retries: int, backoff: float) -> Retry:
    """Retries on connection errors, timeouts, 429 and 5xx, with backoff and Retry-After."""
    return _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=False,  # requests follows redirects itself
        backoff_factor=backoff,
        backoff_max=MAX_RETRY_AFTER_S,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )


def prepare_session(session: requests.Session, retries: int, backoff: float) -> requests.Session:
    """Mount covergen's adapter (retries, deadline-watched sockets) on ``session``."""
    adapter = _Adapter(max_retries=retry_policy(retries, backoff))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    return session


class Transient(Exception):
    """The server could not be reached or is overloaded: connection error, timeout, 429, 5xx.

    ``retry`` is False for failures another attempt will not cure (a bad certificate, a
    download over its deadline).
    """

    def __init__(self, reason: str, *, retry: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True)
class Download:
    data: bytes = b""
    not_modified: bool = False
    etag: str = ""
    last_modified: str = ""
    final_url: str = ""


def arriving(response: requests.Response) -> Iterator[bytes]:
    """The body in pieces as they arrive, each from one socket read.

    ``iter_content`` blocks until a whole chunk is in; ``read1`` returns what one read
    brought, so limits are checked as the bytes come. urllib3's errors are raised as
    requests' own, as ``iter_content`` raises them.
    """
    try:
        while chunk := response.raw.read1(_CHUNK, decode_content=True):
            yield chunk
    except urllib3.exceptions.ProtocolError as exc:  # connection reset, body cut short
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from None
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    except OSError as exc:  # the deadline shut the socket down under the read
        raise requests.ConnectionError(exc) from None


def network_reason(
    exc: requests.RequestException, connect_timeout: float, read_timeout: float
) -> str:
    """A short account of a failed request, for messages."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {connect_timeout:g} s"
    # A timeout while streaming the body surfaces as a ConnectionError naming the timeout.
    if isinstance(exc, requests.ReadTimeout) or "read timed out" in text.lower():
        return f"read timeout: no answer within {read_timeout:g} s"
    if isinstance(exc, requests.ConnectionError) and "refused" in text.lower():
        return "connection refused"
    cut = _INCOMPLETE.search(text)
    if cut:  # the connection dropped mid-body: say how far it got, not urllib3's repr
        got, missing = int(cut.group(1)), int(cut.group(2))
        return f"the connection dropped after {got:,} of {got + missing:,} bytes"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection dropped during the download"
    return text[:200]
