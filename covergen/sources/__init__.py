"""The sources stage: input images fetched, verified and stored by the SHA-256 of their bytes.

A catalog ``src`` is either a path relative to the catalog's folder or an http(s) URL. Either
way the bytes are checked (size, type, fully decodable, sensible dimensions) before they enter
the store, so the store only ever holds usable images::

    root/sha256/ab/ab12…ef.jpg     the bytes, named by their hash (a ``store.Store`` each)
    root/known/ab/ab12…ef.json     what a full decode found out: size and format
    root/urls/<sha256(url)>.json   per URL: ETag, Last-Modified and the hash of its bytes

Bytes once decoded are known by their hash: a rebuild reads and hashes its sources, and
decodes none that the store already knows. Within one build (one ``ImageStore``), a dry
run's too, each distinct image is decoded at most once however many pairs refer to it, and its
stored copy is hashed once unless that file changes meanwhile. Remote images are revalidated
with If-None-Match / If-Modified-Since; when the server says 304, or cannot be reached, or
the build is offline, the stored copy is used, re-hashed first: a corrupt one is deleted and
fetched again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from ..errors import CovergenError, InputImageError
from ..files import read_user_file
from ..safetext import WEB_SCHEMES, printable, redact, url_scheme, web_url_problem
from ..store import SHA256, Check, Collected, Pixels, Sha256, Store, digest, dumps
from .decoding import ACCEPTED_FORMATS, DecodeLimits, Where, decode, inspect, too_large
from .decoding import decode_image as decode_image  # the stages' one decoder, re-exported

if TYPE_CHECKING:  # requests (and urllib3) load only when an image is downloaded
    import requests


@dataclass(frozen=True)
class StoredImage:
    """An input image in the store: its hash, where it lies, its upright size and format."""

    sha256: str  # hex digest of the exact bytes
    path: Path  # the stored file (read-only use), inside the store
    width: int  # upright, after EXIF orientation
    height: int
    format: str  # PIL format name: JPEG, PNG, WEBP, GIF, TIFF, BMP
    src: str  # the src as the catalog wrote it
    from_cache: bool  # True when a remote image was served from the store (304 or offline)


@dataclass(frozen=True)
class KnownImage:
    """What a full decode of stored bytes found out (``known/``): no need to decode again."""

    width: Pixels
    height: Pixels
    format: Annotated[str, Check(ACCEPTED_FORMATS.__contains__, "an accepted image format")]


@dataclass(frozen=True)
class UrlRecord:
    """What was fetched from a URL (``urls/``): the hash of its bytes, the validators."""

    url: str
    sha256: Sha256
    final_url: str = ""
    etag: str = ""
    last_modified: str = ""


@dataclass(frozen=True)
class FetchSettings(DecodeLimits):
    """Limits and network behaviour of the sources stage (the decode limits among them)."""

    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # the longest wait for any one piece of the answer
    # A whole download's limit, retries and header included: a server trickling a byte now
    # and then never trips the read timeout, but it cannot hold a build for longer than this.
    download_timeout: float = 300.0
    retries: int = 3  # extra attempts on connection errors, timeouts, 429 and 5xx
    backoff: float = 0.5  # urllib3's backoff factor: waits grow by doubling
    offline: bool = False  # never touch the network; use the store
    allow_outside: bool = False  # allow local paths outside the catalog folder


DEFAULT_SETTINGS = FetchSettings()


def resolve_local(src: str, base_dir: Path, allow_outside: bool, where: Where) -> Path:
    """The file a local ``src`` names, checked: inside ``base_dir`` (unless allowed out),
    no NUL bytes, no link loops; InputImageError otherwise. Reads nothing."""
    base = Path(base_dir).resolve()
    outside_hint = (
        f"copy the image into {base} and give its path relative to it (`covergen add "
        "--copy` does), or allow images outside it: `covergen build --allow-outside`"
    )
    if "\0" in src:
        raise where.error("contains a NUL byte", hint="fix the path in the catalog")
    relative = Path(src)
    if relative.is_absolute() and not allow_outside:
        raise where.error(
            "is an absolute path; sources must lie inside the catalog's folder", outside_hint
        )
    candidate = base / relative
    try:
        # resolve() follows symlinks and folds "..", so both escapes are caught by one check.
        target = candidate.resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop, a name too long
        reason = "symbolic links that loop" if isinstance(exc, RuntimeError) else exc.strerror
        raise where.error(
            f"cannot be followed ({reason or exc})", hint="fix the path or the links"
        ) from None
    if not allow_outside and not target.is_relative_to(base):
        if not Path(os.path.normpath(candidate)).is_relative_to(base):
            message = f"leads outside the catalog's folder {base} (through '..')"
        else:
            message = f"is a symbolic link to {target}, outside the catalog's folder {base}"
        raise where.error(message, outside_hint)
    return target


class NotFetchedYet(InputImageError):
    """A remote image a read-only store (a dry run) does not hold: a build would fetch it."""


def missing_local(src: str, base_dir: Path, allow_outside: bool, where: Where) -> None:
    """Raise InputImageError when a local ``src`` names no file (the build's own message,
    with near names: ``photos/Band.JPG`` for ``photos/band.jpg``); reads nothing."""
    target = resolve_local(src, base_dir, allow_outside, where)
    if target.is_file():
        return
    base = Path(base_dir).resolve()
    shown = base / src
    if target.exists():
        raise where.error(f"{shown} is not a file", hint="give the path of an image")
    relative = [os.path.relpath(p, base) for p in near_names(target)]
    hint = (
        f"did you mean {' or '.join(repr(r) for r in relative)}?"
        if relative
        else f"check the path; it is relative to the catalog's folder {base}"
    )
    raise where.error(f"no such file: {shown}", hint=hint)


def near_names(path: Path, limit: int = 2) -> list[Path]:
    """Files beside where ``path`` would be whose names are close to its name: the same in
    another letter case first, then by similarity (difflib)."""
    import difflib

    folder = path.parent
    # The nearest folder that exists, case-insensitively, stands in for a mistyped folder.
    if not folder.is_dir():
        siblings = folder.parent.iterdir() if folder.parent.is_dir() else ()
        found = {p.name.lower(): p for p in siblings if p.is_dir()}.get(folder.name.lower())
        if found is None:
            return []
        folder = found
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
    by_lower = {n.lower(): n for n in names}
    same = [n for n in names if n.lower() == path.name.lower()]
    close = difflib.get_close_matches(path.name.lower(), list(by_lower), n=limit, cutoff=0.75)
    return [folder / n for n in dict.fromkeys([*same, *(by_lower[c] for c in close)])][:limit]


class ImageStore(contextlib.AbstractContextManager["ImageStore"]):
    """Input images stored by content hash, fetched from the catalog's folder or over http(s).

    ``session`` is used for every request when given (tests, connection pooling across
    stages); otherwise the store makes one on first use and closes it in ``close()``.
    ``read_only`` (a dry run) writes nothing: images are read and hashed, never stored, and
    a remote image is only ever taken from the store.
    """

    def __init__(
        self,
        root: Path,
        settings: FetchSettings = DEFAULT_SETTINGS,
        session: requests.Session | None = None,
        *,
        read_only: bool = False,
    ):
        self.root = Path(root)
        self.settings = settings
        self.read_only = read_only
        # The bytes by their own hash; a record per decoded image; one per URL, unsharded.
        self.images = Store(self.root / "sha256", read_only=read_only)
        self.known = Store(self.root / "known", read_only=read_only)
        self.urls = Store(self.root / "urls", read_only=read_only, sharded=False)
        self._session = session  # None: the store makes one, and closes it
        self._prepared: requests.Session | None = None  # _session, or one made, with our adapter
        # What this store learnt during its build, by the hash of the bytes: the size and
        # format a decode (or a record) gave, so that an image that a thousand pairs share is
        # decoded once; and the stored copies already hashed, with their stat then, so that
        # each is read again only when it changed.
        self._sizes: dict[str, tuple[int, int, str]] = {}
        self._checked: dict[str, tuple[Path, tuple[int, int, int, int] | None]] = {}

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if the store made it."""
        if self._session is None and self._prepared is not None:
            self._prepared.close()
            self._prepared = None

    @property
    def session(self) -> requests.Session:
        # Made lazily so that an offline or local-only build never creates one.
        if self._prepared is None:
            import requests

            from .fetch import prepare_session

            made = requests.Session() if self._session is None else self._session
            self._prepared = prepare_session(made, self.settings.retries, self.settings.backoff)
        return self._prepared

    # ------------------------------------------------------------------ public API

    def fetch(
        self, src: str, base_dir: Path, *, pair: str | None = None, field: str = "src"
    ) -> StoredImage:
        """Fetch ``src`` (a path relative to ``base_dir`` or an http(s) URL) into the store.

        The bytes are validated (fully decoded, size and aspect checked) before being stored.
        Raises InputImageError naming the src, what was wrong and what to do.
        """
        where = Where(redact(printable(src, keep_newlines=False)), pair, field)
        if not src.strip():
            raise where.error(
                "the src is empty", hint="give a path relative to the catalog or a URL"
            )
        scheme = url_scheme(src)
        if scheme in WEB_SCHEMES:
            problem = web_url_problem(src)
            if problem:  # refused before any request: never "the server redirected to …"
                raise where.error(
                    f"the address {problem}", hint="check the URL (copy it from the browser)"
                )
            return self._fetch_remote(src, where)
        if scheme:
            raise where.error(
                f"{scheme}: sources are not supported",
                hint="use a path relative to the catalog or an http(s) URL",
            )
        return self._fetch_local(src, Path(base_dir), where)

    def path_for(self, sha256: str, format: str | None = None) -> Path:
        """Where bytes with that hash live in the store.

        With ``format`` (a PIL format name), the path whether or not the file exists yet;
        without, the existing file, or FileNotFoundError when the store does not hold it.
        """
        if not SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        if format is not None:
            return self.images.path(f"{sha256}{ACCEPTED_FORMATS[format]}")
        for suffix in ACCEPTED_FORMATS.values():
            candidate = self.images.path(f"{sha256}{suffix}")
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"the image store {self.root} holds no image {sha256}")

    def find(self, sha256: str) -> Path | None:
        """The stored file with that hash, or None."""
        try:
            return self.path_for(sha256)
        except (FileNotFoundError, ValueError):
            return None

    def verified_bytes(self, sha256: str) -> bytes:
        """The stored bytes with that hash, checked; a corrupt copy is removed and reported."""
        found = self._verified(sha256)
        if found is None:
            raise Where(sha256[:12]).error(
                "is not in the image store, or its stored copy was damaged and removed",
                hint="build again: the image is fetched (or copied) anew",
            )
        return found[1]

    def collect(self, keep: Container[str], *, dry_run: bool = False) -> Collected:
        """Remove the images whose hash is not in ``keep``, and what is known of them; the
        URL records stay (small, and a record without its image only means a fetch)."""
        records = self.known.collect(keep, dry_run=dry_run)
        images = self.images.collect(keep, dry_run=dry_run)
        return Collected(images.entries, images.bytes + records.bytes)

    # ------------------------------------------------------------------ local files

    def _fetch_local(self, src: str, base_dir: Path, where: Where) -> StoredImage:
        settings = self.settings
        target = resolve_local(src, base_dir, settings.allow_outside, where)
        shown = Path(base_dir).resolve() / src
        try:
            size = target.stat().st_size
            if not target.is_file():
                raise where.error(f"{shown} is not a file", hint="give the path of an image")
            if size > settings.max_bytes:
                raise where.error(*too_large(size, settings.max_bytes))
            # The resolved target, not the link, is read: what was checked is what is copied
            # (opened without blocking and checked again: it may have become a FIFO since).
            data = read_user_file(
                target,
                limit=settings.max_bytes,
                field=where.field,
                pair=where.pair,
                what="image",
                error=InputImageError,
            )
        except FileNotFoundError:
            missing_local(src, base_dir, settings.allow_outside, where)
            raise  # it appeared meanwhile: unlikely, and then a plain error is fine
        except OSError as exc:
            raise where.error(
                f"cannot read {shown} ({exc.strerror or exc})", hint="check its permissions"
            ) from None
        return self._keep(data, where)

    # ------------------------------------------------------------------ remote images

    def _fetch_remote(self, url: str, where: Where) -> StoredImage:
        record = self._read_record(url)
        cached = self._cached(record, where) if record else None
        if self.settings.offline or self.read_only:
            if cached is not None:
                return cached
            if self.read_only:
                raise where.error(
                    "has not been fetched yet; a build would download it",
                    hint="run the build without --dry-run",
                    kind=NotFetchedYet,
                )
            raise where.error(
                "has never been fetched, and the build is offline",
                hint="build once with network access so that the image is stored",
            )
        from .fetch import ACCEPT, USER_AGENT, Downloader, Transient

        headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
        # Conditional only when the bytes are at hand: a 304 is useless without them.
        if cached is not None and record is not None:
            validators = {"If-None-Match": record.etag, "If-Modified-Since": record.last_modified}
            headers.update((name, value) for name, value in validators.items() if value)
        try:
            download = Downloader(self.session, self.settings).get(url, headers, where)
        except InputImageError as exc:
            if cached is None:
                raise
            # The server's answer is final (404, an HTML page…), but the bytes are at hand.
            raise InputImageError(
                exc.message,
                pair=exc.pair,
                field=exc.field,
                hint=f"{exc.hint}; or build offline to use the copy fetched earlier",
            ) from None
        except Transient as exc:
            if cached is not None:
                return cached
            raise where.error(
                f"the server is unreachable ({exc.reason}), and the image has never been fetched",
                hint="check the URL and the connection, then build again",
            ) from None
        if download.not_modified:
            if cached is not None:
                return cached
            raise where.error(
                "the server answered 304 Not Modified to a request that was not conditional",
                hint="build again; if it persists, the server is misbehaving",
            )
        stored = self._keep(download.data, where)  # (a read-only store never gets here)
        fetched = UrlRecord(
            url, stored.sha256, download.final_url, download.etag, download.last_modified
        )
        self._write(self.urls, _url_name(url), dumps(fetched), where)
        return stored

    # ------------------------------------------------------------------ the store

    def _keep(self, data: bytes, where: Where) -> StoredImage:
        """Validate and store bytes. Bytes the store already knows, or met earlier in this
        build, are not decoded again; their stored copy is still checked (and replaced when
        damaged)."""
        sha = digest(data)
        known = self._known(sha)  # None: never decoded; decoded now, and recorded below
        size = known
        if size is None:
            image, fmt = decode(data, self.settings, where)
            size = (*image.size, fmt)
            image.close()
        path = self.path_for(sha, size[2])
        if not self.read_only:
            if not self._still_verified(sha) and self._verified(sha) is None:
                self._write(self.images, path.name, data, where)
                self._note_checked(sha, path)
            if known is None:
                self._write(self.known, f"{sha}.json", dumps(KnownImage(*size)), where)
        return self._stored(sha, path, size, where, from_cache=False)

    def _still_verified(self, digest: str) -> bool:
        """Whether this build already hashed the stored copy, and it has not changed since
        (same inode, size, modification and change time)."""
        path, seen = self._checked.get(digest, (None, None))
        return path is not None and seen is not None and _identity(path) == seen

    def _cached(self, record: UrlRecord, where: Where) -> StoredImage | None:
        """The stored copy a URL record points to, if intact; None otherwise."""
        found = self._verified(record.sha256)
        if found is None:
            return None
        path, data = found
        size = self._known(record.sha256) or inspect(data, self.settings, where)
        return self._stored(record.sha256, path, size, where, from_cache=True)

    def _stored(
        self, sha: str, path: Path, size: tuple[int, int, str], where: Where, from_cache: bool
    ) -> StoredImage:
        self._sizes[sha] = size
        return StoredImage(sha, path, *size, where.src, from_cache)

    def _verified(self, sha: str) -> tuple[Path, bytes] | None:
        """The stored file and its bytes if they still hash to ``sha``; a corrupt one is
        deleted so that it is fetched again."""
        path = self.find(sha)
        data = None if path is None else self.images.get(path.name)
        if path is None or data is None:
            self._checked.pop(sha, None)
            return None
        self._note_checked(sha, path)
        return path, data

    def _note_checked(self, digest: str, path: Path) -> None:
        self._checked[digest] = (path, _identity(path))

    def _known(self, sha: str) -> tuple[int, int, str] | None:
        """Size and format of bytes this build, or a full decode before it, found out."""
        if sha in self._sizes:
            return self._sizes[sha]
        known = self.known.get_record(f"{sha}.json", KnownImage)
        return None if known is None else (known.width, known.height, known.format)

    def _read_record(self, url: str) -> UrlRecord | None:
        # A damaged or foreign record is ignored; the next successful fetch rewrites it.
        record = self.urls.get_record(_url_name(url), UrlRecord)
        return record if record is not None and record.url == url else None

    def _write(self, store: Store, name: str, data: bytes, where: Where) -> None:
        try:
            store.put(name, data)
        except OSError as exc:
            raise CovergenError(
                f"cannot write the image store at {store.path(name)} ({exc.strerror or exc})",
                pair=where.pair,
                field=where.field,
                hint=f"check the free space and permissions of {self.root}",
            ) from None


def _url_name(url: str) -> str:
    return f"{digest(url.encode())}.json"


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when a file is written: inode, size, modification and change time (None
    when it cannot be read)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
