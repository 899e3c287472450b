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
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from .. import __version__
from ..safetext import printable, redact, web_url_problem
from .decoding import ACCEPTED_NAMES, Where, too_large

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
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._end = time.monotonic() + self.seconds
        self._timer.start()
        _current.deadline = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.deadline = None
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


def _watched(pool: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """``pool`` whose connections register their sockets with the thread's deadline."""

    class Connection(pool.ConnectionCls):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            deadline = current_deadline()
            if deadline is not None:
                deadline.register(sock)
            return sock

    return type(f"_Watched{pool.__name__}", (pool,), {"ConnectionCls": Connection})


_WATCHED_POOLS = {"http": _watched(HTTPConnectionPool), "https": _watched(HTTPSConnectionPool)}


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
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)


def prepare_session(session: requests.Session, retries: int, backoff: float) -> requests.Session:
    """Mount covergen's adapter (retries, deadline-watched sockets) on ``session``."""
    # Retries on connection errors, timeouts, 429 and 5xx, with backoff and Retry-After.
    retry = _Retry(
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
    adapter = _Adapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    # Response hooks run before requests follows a redirect: each target is checked with
    # the same reading of a web address as the catalog's, so a malformed one (an unclosed
    # IPv6 bracket, a host label over 63 characters) is refused with the address it gave,
    # never left to raise inside requests or urllib3.
    session.hooks["response"].append(_check_redirect)
    return session


class BadRedirect(Exception):
    """The server redirected to an address covergen does not follow: (target, problem)."""


def _check_redirect(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if not response.is_redirect:
        return
    location = response.headers.get("Location", "")
    try:
        target = urljoin(response.url, location.encode("latin1").decode("utf8", "replace"))
    except ValueError as exc:
        target, problem = location, f"is malformed ({exc})"
    else:
        problem = web_url_problem(target)
    if problem:
        response.close()
        raise BadRedirect(printable(target, keep_newlines=False)[:300], problem)


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
        raise ChunkedEncodingError(exc) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    # OSError: the deadline shut the socket down under the read.
    except (urllib3.exceptions.ReadTimeoutError, OSError) as exc:
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
    if isinstance(exc, ChunkedEncodingError):
        return "the connection dropped during the download"
    return text[:200]


@dataclass(frozen=True)
class Downloader:
    """One image GET over ``session`` under ``settings``' limits (a sources.FetchSettings):
    urllib3's retries, the total deadline, and every failure as Transient or as an
    InputImageError naming the source."""

    session: requests.Session
    settings: Any

    def get(self, url: str, headers: dict[str, str], where: Where) -> Download:
        """GET with urllib3's retries, all of it (retries, waits, headers, body) within the
        download deadline; raise Transient when the server cannot be had."""
        retry = self.session.get_adapter(url).max_retries
        with Deadline(self.settings.download_timeout) as deadline:
            while True:
                try:
                    return self._attempt(url, headers, where, deadline)
                except _BodyCut as cut:
                    # urllib3 retries what happens before the answer; a body cut short is
                    # counted and waited for by the same Retry, as a read error.
                    reason = str(cut)
                    try:
                        error = urllib3.exceptions.ProtocolError(reason)
                        retry = retry.increment(method="GET", url=url, error=error)
                    except urllib3.exceptions.MaxRetryError:
                        raise Transient(reason) from None
                    if deadline.remaining() <= retry.get_backoff_time():
                        raise Transient(reason) from None
                    retry.sleep()

    def _attempt(
        self, url: str, headers: dict[str, str], where: Where, deadline: Deadline
    ) -> Download:
        settings = self.settings
        try:
            response = self.session.get(
                url,
                headers=headers,
                stream=True,
                timeout=(settings.connect_timeout, settings.read_timeout),
            )
            with response:
                status = response.status_code
                if status == 304:
                    return Download(not_modified=True, final_url=response.url)
                if status == 429 or 500 <= status <= 599:  # what is left after the retries
                    raise Transient(f"HTTP {status} {printable(response.reason or '')}".strip())
                if status != 200:
                    raise where.error(*_status_problem(status, response.reason, url, response.url))
                _check_content_type(response, where)
                data = self._read_body(response, where)
                return Download(
                    data=data,
                    etag=response.headers.get("ETag", ""),
                    last_modified=response.headers.get("Last-Modified", ""),
                    final_url=response.url,
                )
        except BadRedirect as exc:
            target, problem = exc.args
            raise where.error(
                f"the server redirected to {redact(target)}, which {problem}; only "
                "well-formed http(s) addresses are followed",
                hint="use the image's final http(s) address, or another source",
            ) from None
        except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL) as exc:
            # The address given was checked before the request: this came from a redirect.
            quoted = re.search(r"'([^']+)'", str(exc))
            target = quoted.group(1) if quoted else "another kind of address"
            raise where.error(
                f"the server redirected to {redact(target)}; only http(s) addresses are followed",
                hint="use the image's final http(s) address, or another source",
            ) from None
        except requests.exceptions.TooManyRedirects:
            raise where.error(
                f"more than {MAX_REDIRECTS} redirects", hint="use the image's final address"
            ) from None
        except requests.exceptions.RetryError as exc:
            raise Transient(_retry_reason(exc), retry=False) from None
        except requests.exceptions.SSLError as exc:
            raise Transient(self._reason(exc), retry=False) from None
        except (ChunkedEncodingError, requests.ConnectionError, requests.Timeout) as exc:
            if deadline.expired:  # not retried: a server this slow will not be quicker
                raise Transient(
                    f"the download took longer than {deadline.seconds:g} s", retry=False
                ) from None
            if isinstance(exc, ChunkedEncodingError):
                raise _BodyCut(self._reason(exc)) from None
            raise Transient(self._reason(exc)) from None
        except requests.RequestException as exc:
            raise where.error(
                f"the request failed ({self._reason(exc)})", hint="check the URL"
            ) from None

    def _reason(self, exc: requests.RequestException) -> str:
        s = self.settings
        return redact(printable(network_reason(exc, s.connect_timeout, s.read_timeout)))

    def _read_body(self, response: requests.Response, where: Where) -> bytes:
        """The body, refused as soon as it passes max_bytes (announced or counted)."""
        limit = self.settings.max_bytes
        declared = response.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise where.error(*too_large(int(declared), limit))
        data = bytearray()
        for chunk in arriving(response):
            data += chunk
            if len(data) > limit:
                raise where.error(*too_large(len(data), limit, counted=True))
        return bytes(data)


class _BodyCut(Exception):
    """The connection dropped while the body arrived (the reason as its message): retried
    like a read error."""


def _retry_reason(exc: requests.exceptions.RetryError) -> str:
    text = str(exc)
    status = re.search(r"too many (\d{3}) error responses", text)
    if status:
        return f"HTTP {status.group(1)}, still after every retry"
    return "the server asked to be retried much later (Retry-After); it counts as down"


def _check_content_type(response: requests.Response, where: Where) -> None:
    """Refuse a body that is clearly not an image; image/*, octet-stream and none pass."""
    header = response.headers.get("Content-Type", "")
    mime = header.split(";")[0].strip().lower()
    major, _, minor = mime.partition("/")
    what = ""
    hint = "check that the URL is the image's own address"
    if mime in ("text/html", "application/xhtml+xml"):
        what = "an HTML page"
        hint = (
            "the URL is probably the page showing the image, a login wall or an error page: "
            "open it in a browser and copy the address of the image itself"
        )
    elif mime == "image/svg+xml":
        what = "an SVG (vector) image"
        hint = f"covergen paints raster images: use a {ACCEPTED_NAMES} version"
    elif minor == "json" or minor.endswith("+json"):
        what = "a JSON document"
    elif minor == "xml" or minor.endswith("+xml"):
        what = "an XML document"
    elif mime == "application/pdf":
        what = "a PDF document"
    elif major in ("text", "audio", "video", "font", "model", "multipart"):
        what = f"{mime} content"
    if what:
        raise where.error(
            f"the server sent {what} instead of an image ({printable(header)[:100]})", hint=hint
        )


def _status_problem(status: int, reason: str, url: str, final_url: str) -> tuple[str, str]:
    """Message and hint for a final answer other than 200 or 304."""
    reason = printable(reason or "", keep_newlines=False)[:100]
    at = f" at {redact(final_url)}" if final_url != url else ""
    if status in (404, 410):
        return (
            f"the server says the image is not there (HTTP {status} {reason}){at}",
            "check the URL; if the image moved, update the catalog",
        )
    if status in (401, 403):
        return (
            f"the server refuses access (HTTP {status} {reason}){at}",
            "the image may need a login or forbid hot-linking: download it next to the catalog",
        )
    return (
        f"unexpected answer from the server: HTTP {status} {reason}{at}",
        "check the URL, or download the image next to the catalog",
    )
