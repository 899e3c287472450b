"""The sources stage: input images fetched, verified and stored by the SHA-256 of their bytes.

A catalog ``src`` is either a path relative to the catalog's folder or an http(s) URL. Either
way the bytes are checked (size, type, fully decodable, sensible dimensions) before they enter
the store, so the store only ever holds usable images::

    root/sha256/ab/ab12…ef.jpg     the bytes, named by their hash, written atomically
    root/urls/<sha256(url)>.json   per URL: ETag, Last-Modified and the hash of its bytes

Remote images are revalidated with If-None-Match / If-Modified-Since; when the server says
304, or cannot be reached, or the build is offline, the stored copy is used. Every stored file
is re-hashed when read back: a corrupt one is deleted and fetched (or copied) again.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import os
import re
import secrets
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np
import requests
import urllib3.exceptions
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from . import __version__
from .errors import CovergenError, InputImageError

# PIL format name -> suffix of the stored file. Only these decoders are ever run: Image.open is
# restricted to them, so a hostile file cannot reach e.g. the EPS plugin (Ghostscript).
ACCEPTED_FORMATS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
# Phone cameras write MPO: a JPEG with extra frames appended. Pillow's JPEG opener returns it
# under its own name; it is a JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF, TIFF or BMP"

USER_AGENT = f"covergen/{__version__}"
# Listing what we decode keeps content-negotiating CDNs from answering with AVIF or JPEG XL.
ACCEPT = "image/webp,image/png,image/jpeg,image/gif,image/*;q=0.8,*/*;q=0.5"
MAX_REDIRECTS = 5
MAX_RETRY_AFTER_S = 60.0  # a server asking for longer is treated as down, not waited for
_CHUNK = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# Schemes recognised even without "//" (a bare "name:" prefix could be part of a file name).
_BARE_SCHEMES = {"file", "data", "ftp", "ftps", "sftp", "javascript", "mailto"}
_EXIF_ORIENTATION = 0x0112
_INCOMPLETE = re.compile(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)")


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
class FetchSettings:
    """Limits and network behaviour of the sources stage."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 64_000_000  # decompression-bomb limit (width*height)
    min_side: int = 16  # smaller images are refused (too small to paint)
    max_aspect: float = 8.0  # long/short side; beyond is refused
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # the longest wait for any one piece of the answer
    # A whole download's limit: a server trickling a byte now and then never trips the read
    # timeout, but it cannot hold a build for longer than this.
    download_timeout: float = 300.0
    retries: int = 3  # extra attempts on connection errors, timeouts, 429 and 5xx
    backoff: float = 0.5  # seconds, doubled each retry
    offline: bool = False  # never touch the network; use the store
    allow_outside: bool = False  # allow local paths outside the catalog folder


DEFAULT_SETTINGS = FetchSettings()


@dataclass(frozen=True)
class _Where:
    """Which catalog entry an error is about: every message names the src."""

    src: str
    pair: str | None
    field: str

    def error(self, message: str, hint: str = "") -> InputImageError:
        return InputImageError(
            f"{self.src}: {message}", pair=self.pair, field=self.field, hint=hint
        )


class _Transient(Exception):
    """The server could not be reached or is overloaded: connection error, timeout, 429, 5xx.

    ``retry`` is False for failures that another attempt will not cure (a bad certificate).
    """

    def __init__(self, reason: str, retry_after: float = 0.0, *, retry: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.retry = retry


@dataclass(frozen=True)
class _Download:
    data: bytes = b""
    not_modified: bool = False
    etag: str = ""
    last_modified: str = ""
    final_url: str = ""


class ImageStore:
    """Input images stored by content hash, fetched from the catalog's folder or over http(s).

    ``session`` is used for every request when given (tests, connection pooling across stages);
    otherwise the store makes one on first use and closes it in ``close()``.
    """

    def __init__(
        self,
        root: Path,
        settings: FetchSettings = DEFAULT_SETTINGS,
        session: requests.Session | None = None,
    ):
        self.root = Path(root)
        self.settings = settings
        self._session = session
        self._owns_session = session is None

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if the store made it."""
        if self._owns_session and self._session is not None:
            self._session.close()
            self._session = None

    @property
    def session(self) -> requests.Session:
        # Made lazily so that an offline or local-only build never creates one.
        if self._session is None:
            self._session = requests.Session()
        return self._session

    # ------------------------------------------------------------------ public API

    def fetch(
        self, src: str, base_dir: Path, *, pair: str | None = None, field: str = "src"
    ) -> StoredImage:
        """Fetch ``src`` (a path relative to ``base_dir`` or an http(s) URL) into the store.

        The bytes are validated (fully decoded, size and aspect checked) before being stored.
        Raises InputImageError naming the src, what was wrong and what to do.
        """
        where = _Where(src, pair, field)
        if not src.strip():
            raise where.error(
                "the src is empty", hint="give a path relative to the catalog or a URL"
            )
        scheme = _scheme(src)
        if scheme in ("http", "https"):
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
        if not _HEX64.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        shard = self.root / "sha256" / sha256[:2]
        if format is not None:
            return shard / f"{sha256}{ACCEPTED_FORMATS[format]}"
        for suffix in ACCEPTED_FORMATS.values():
            candidate = shard / f"{sha256}{suffix}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"the image store {self.root} holds no image {sha256}")

    def open(
        self, stored: StoredImage, *, pair: str | None = None, field: str = "src"
    ) -> Image.Image:
        """The stored image decoded: upright 8-bit RGB, its hash checked first."""
        where = _Where(stored.src, pair, field)
        try:
            data = stored.path.read_bytes()
        except OSError as exc:
            raise where.error(
                f"the stored copy {stored.path} cannot be read ({exc.strerror or exc})",
                hint="fetch the sources again",
            ) from None
        if hashlib.sha256(data).hexdigest() != stored.sha256:
            stored.path.unlink(missing_ok=True)
            raise where.error(
                f"the stored copy {stored.path} is corrupt (its hash changed) and was removed",
                hint="fetch the sources again",
            )
        image, _ = _decode(data, self.settings, where)
        return image

    # ------------------------------------------------------------------ local files

    def _fetch_local(self, src: str, base_dir: Path, where: _Where) -> StoredImage:
        settings = self.settings
        relative = Path(src)
        base = base_dir.resolve()
        outside_hint = (
            f"copy the image into {base} and give its path relative to it, "
            "or allow images outside it (`covergen build --allow-outside`, "
            "FetchSettings.allow_outside)"
        )
        if relative.is_absolute() and not settings.allow_outside:
            raise where.error(
                "is an absolute path; sources must lie inside the catalog's folder", outside_hint
            )
        candidate = base / relative
        # resolve() follows symlinks and folds "..", so both escapes are caught by one check.
        target = candidate.resolve()
        if not settings.allow_outside and not target.is_relative_to(base):
            if not Path(os.path.normpath(candidate)).is_relative_to(base):
                message = f"leads outside the catalog's folder {base} (through '..')"
            else:
                message = f"is a symbolic link to {target}, outside the catalog's folder {base}"
            raise where.error(message, outside_hint)
        try:
            size = target.stat().st_size
            if not target.is_file():
                raise where.error(f"{candidate} is not a file", hint="give the path of an image")
            if size > settings.max_bytes:
                raise where.error(*_too_large(size, settings.max_bytes))
            # The resolved target, not the link, is read: what was checked is what is copied.
            data = target.read_bytes()
        except FileNotFoundError:
            raise where.error(
                f"no such file: {candidate}",
                hint=f"check the path; it is relative to the catalog's folder {base}",
            ) from None
        except OSError as exc:
            raise where.error(
                f"cannot read {candidate} ({exc.strerror or exc})", hint="check its permissions"
            ) from None
        if len(data) > settings.max_bytes:  # the file grew since stat()
            raise where.error(*_too_large(len(data), settings.max_bytes))
        return self._keep(data, where)

    # ------------------------------------------------------------------ remote images

    def _fetch_remote(self, url: str, where: _Where) -> StoredImage:
        record = self._read_record(url)
        cached = self._cached(record, where) if record else None
        if self.settings.offline:
            if cached is not None:
                return cached
            raise where.error(
                "has never been fetched, and the build is offline",
                hint="build once with network access so that the image is stored",
            )
        headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
        # Conditional only when the bytes are at hand: a 304 is useless without them.
        if cached is not None and record is not None:
            if record.get("etag"):
                headers["If-None-Match"] = record["etag"]
            if record.get("last_modified"):
                headers["If-Modified-Since"] = record["last_modified"]
        try:
            download = self._download(url, headers, where)
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
        except _Transient as exc:
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
        stored = self._keep(download.data, where)
        self._write_record(
            url,
            {
                "url": url,
                "final_url": download.final_url,
                "sha256": stored.sha256,
                "etag": download.etag,
                "last_modified": download.last_modified,
            },
            where,
        )
        return stored

    def _download(self, url: str, headers: dict[str, str], where: _Where) -> _Download:
        """GET with retries and exponential backoff; raise _Transient when all attempts fail."""
        settings = self.settings
        for attempt in range(settings.retries + 1):
            try:
                return self._attempt(url, headers, where)
            except _Transient as exc:
                if attempt == settings.retries or not exc.retry:
                    raise
                time.sleep(max(settings.backoff * 2**attempt, exc.retry_after))
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _attempt(self, url: str, headers: dict[str, str], where: _Where) -> _Download:
        try:
            response = self._get(url, headers, where)
            with response:
                status = response.status_code
                if status == 304:
                    return _Download(not_modified=True, final_url=response.url)
                if status == 429 or 500 <= status <= 599:
                    raise _Transient(
                        f"HTTP {status} {response.reason}".strip(), _retry_after(response)
                    )
                if status != 200:
                    raise where.error(*_status_problem(status, response.reason, url, response.url))
                _check_content_type(response, where)
                data = self._read_body(response, where)
                return _Download(
                    data=data,
                    etag=response.headers.get("ETag", ""),
                    last_modified=response.headers.get("Last-Modified", ""),
                    final_url=response.url,
                )
        except requests.exceptions.SSLError as exc:
            raise _Transient(_network_reason(exc, self.settings), retry=False) from None
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise _Transient(_network_reason(exc, self.settings)) from None
        except requests.RequestException as exc:
            raise where.error(
                f"the request failed ({_network_reason(exc, self.settings)})", hint="check the URL"
            ) from None

    def _get(self, url: str, headers: dict[str, str], where: _Where) -> requests.Response:
        """GET following up to MAX_REDIRECTS redirects, each checked to stay on http(s)."""
        settings = self.settings
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            response = self.session.get(
                current,
                headers=headers,
                stream=True,
                timeout=(settings.connect_timeout, settings.read_timeout),
                allow_redirects=False,
            )
            location = self.session.get_redirect_target(response)
            if location is None:
                return response
            response.close()
            target = urljoin(current, location)
            scheme = urlsplit(target).scheme.lower()
            if scheme not in ("http", "https"):
                raise where.error(
                    f"the server redirected to {target}; only http(s) addresses are followed",
                    hint="use the image's final http(s) address, or another source",
                )
            current = target
        raise where.error(
            f"more than {MAX_REDIRECTS} redirects", hint="use the image's final address"
        )

    def _read_body(self, response: requests.Response, where: _Where) -> bytes:
        """The body, refused as soon as it passes max_bytes (announced or counted), and given
        up when the whole download takes longer than download_timeout."""
        settings = self.settings
        limit = settings.max_bytes
        declared = response.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise where.error(*_too_large(int(declared), limit))
        deadline = time.monotonic() + settings.download_timeout
        chunks: list[bytes] = []
        total = 0
        for chunk in _arriving(response):
            total += len(chunk)
            if total > limit:
                raise where.error(*_too_large(total, limit, counted=True))
            if time.monotonic() > deadline:
                # Not retried: a server this slow will not be quicker a second time.
                raise _Transient(
                    f"the download took longer than {settings.download_timeout:g} s "
                    f"({total:,} bytes arrived)",
                    retry=False,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ the store

    def _keep(self, data: bytes, where: _Where) -> StoredImage:
        """Validate and store bytes (unless an intact copy is there already)."""
        digest = hashlib.sha256(data).hexdigest()
        existing = self._verified(digest)
        if existing is not None:
            # Decoded in full when it was stored; the header is enough to describe it now.
            width, height, fmt = _inspect(data, self.settings, where)
            path = existing[0]
        else:
            image, fmt = _decode(data, self.settings, where)
            width, height = image.size
            path = self.path_for(digest, fmt)
            self._write(path, data, where)
        return StoredImage(digest, path, width, height, fmt, where.src, from_cache=False)

    def _cached(self, record: dict[str, Any], where: _Where) -> StoredImage | None:
        """The stored copy a URL record points to, if intact; None otherwise."""
        found = self._verified(record["sha256"])
        if found is None:
            return None
        path, data = found
        width, height, fmt = _inspect(data, self.settings, where)
        return StoredImage(record["sha256"], path, width, height, fmt, where.src, from_cache=True)

    def _verified(self, digest: str) -> tuple[Path, bytes] | None:
        """The stored file and its bytes if they still hash to ``digest``; a corrupt one is
        deleted so that it is fetched again."""
        try:
            path = self.path_for(digest)
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            path.unlink(missing_ok=True)
            return None
        return path, data

    def _record_path(self, url: str) -> Path:
        return self.root / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def _read_record(self, url: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self._record_path(url).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # A damaged or foreign record is ignored; the next successful fetch rewrites it.
        if (
            not isinstance(record, dict)
            or record.get("url") != url
            or not isinstance(record.get("sha256"), str)
            or not _HEX64.match(record["sha256"])
        ):
            return None
        for key in ("etag", "last_modified"):
            if not isinstance(record.get(key, ""), str):
                record[key] = ""
        return record

    def _write_record(self, url: str, record: dict[str, Any], where: _Where) -> None:
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        self._write(self._record_path(url), text.encode("utf-8"), where)

    def _write(self, path: Path, data: bytes, where: _Where) -> None:
        """Write aside, fsync, rename: readers never see a half-written file."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
            # os.open rather than mkstemp: mkstemp forces mode 0600, the store follows the umask.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, path)
            finally:
                temp.unlink(missing_ok=True)
        except OSError as exc:
            raise CovergenError(
                f"cannot write the image store at {path} ({exc.strerror or exc})",
                pair=where.pair,
                field=where.field,
                hint=f"check the free space and permissions of {self.root}",
            ) from None


# ---------------------------------------------------------------------- decoding


def decode_image(
    data: bytes,
    settings: FetchSettings = DEFAULT_SETTINGS,
    *,
    pair: str | None = None,
    field: str = "src",
    src: str = "",
) -> Image.Image:
    """Decode image bytes to upright 8-bit RGB, or raise InputImageError saying why not.

    Only JPEG, PNG, WebP, GIF, TIFF and BMP are decoded; the pixel count is checked from the
    header before any pixel is decoded; the image is loaded in full so that truncated or
    corrupt files fail here. Animated images give their first frame; EXIF orientation is
    applied; alpha is composited on white; 16-bit and float images are scaled, not clipped.
    ``src`` names the image in messages.
    """
    image, _ = _decode(data, settings, _Where(src or "the image", pair, field))
    return image


def _decode(data: bytes, settings: FetchSettings, where: _Where) -> tuple[Image.Image, str]:
    image, fmt = _open_checked(data, settings, where)
    with image:
        try:
            image.seek(0)
            image.load()
        except Exception as exc:
            # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError… on bad input;
            # whichever it is, the file cannot be used.
            raise where.error(
                f"the {fmt} data is damaged or truncated ({exc})",
                hint="download or export the image again",
            ) from None
        upright = _upright(image)
        return _to_rgb(upright, where), fmt


def _inspect(data: bytes, settings: FetchSettings, where: _Where) -> tuple[int, int, str]:
    """Upright width, height and format from the header alone, with the same checks."""
    image, fmt = _open_checked(data, settings, where)
    with image:
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION)
        except Exception:
            orientation = None  # unreadable EXIF: _upright ignores it too
    if orientation in (5, 6, 7, 8):  # the transposing and 90° rotations
        width, height = height, width
    return width, height, fmt


def _open_checked(data: bytes, settings: FetchSettings, where: _Where) -> tuple[Image.Image, str]:
    """Identify the image and check format, pixel count, size and aspect, decoding nothing."""
    accepted = f"use a {ACCEPTED_NAMES} image"
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning follows a process-wide setting; the check below, against
            # settings.max_pixels, is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=tuple(ACCEPTED_FORMATS))
    except Image.DecompressionBombError as exc:
        raise where.error(
            f"declares too many pixels to decode safely ({exc})", hint="use a smaller image"
        ) from None
    except UnidentifiedImageError:
        raise where.error(_not_an_image(data), hint=accepted) from None
    except Exception as exc:
        raise where.error(f"cannot be read as an image ({exc})", hint=accepted) from None
    fmt = _FORMAT_ALIASES.get(image.format or "", image.format or "")
    width, height = image.size
    problem: tuple[str, str] | None = None
    if fmt not in ACCEPTED_FORMATS:
        problem = (f"is a {fmt or 'unknown'} image, which covergen does not read", accepted)
    elif width * height > settings.max_pixels:
        problem = (
            f"is {width}×{height} = {width * height:,} pixels, more than the limit of "
            f"{settings.max_pixels:,} (a decompression bomb, or simply too large)",
            "scale the image down, or raise max_pixels",
        )
    elif min(width, height) < settings.min_side:
        problem = (
            f"is only {width}×{height} pixels; at least {settings.min_side} on each side "
            "are needed to paint",
            "use a larger image",
        )
    elif max(width, height) / min(width, height) > settings.max_aspect:
        ratio = max(width, height) / min(width, height)
        problem = (
            f"is {width}×{height} pixels, an aspect ratio of {ratio:.1f}:1, beyond the limit "
            f"of {settings.max_aspect:g}:1",
            "crop the image closer to a usual shape, or raise max_aspect",
        )
    if problem is not None:
        image.close()
        raise where.error(*problem)
    return image, fmt


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (always a new image)."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:
        # Malformed EXIF from some cameras: better an unturned picture than a refused one.
        upright = None
    return upright if upright is not None else image.copy()


def _to_rgb(image: Image.Image, where: _Where) -> Image.Image:
    """8-bit RGB: alpha composited on white, CMYK and ICC-tagged RGB to sRGB, deep images scaled."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _scale_to_8bit(image).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("RGB", "CMYK") and image.info.get("icc_profile"):
        converted = _icc_to_srgb(image)
        if converted is not None:
            return converted
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise where.error(
            f"has the colour mode {mode}, which cannot be converted to RGB ({exc})",
            hint="export the image as an ordinary RGB JPEG or PNG",
        ) from None


def _icc_to_srgb(image: Image.Image) -> Image.Image | None:
    """Convert through the embedded ICC profile (print CMYK, Display P3…); None if it fails."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        converted = ImageCms.profileToProfile(image, profile, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile: the plain conversion is still a usable picture.
        return None
    return converted


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Greyscale of more than 8 bits (I;16, I, F) scaled to L by its range, never clipped.

    I;16 is scaled from 0–65535. For I and F the values decide: 0–1 (float convention),
    0–255 or 0–65535 are scaled from that range; anything else is stretched min to max.
    """
    values = np.asarray(image).astype(np.float32)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        low, top = 0.0, 65535.0
    elif low >= 0 and high <= 1.0 and image.mode == "F":
        low, top = 0.0, 1.0
    elif low >= 0 and high <= 255:
        low, top = 0.0, 255.0
    elif low >= 0 and high <= 65535:
        low, top = 0.0, 65535.0
    else:
        top = high if high > low else low + 1.0
    scaled = np.rint((values - low) * (255.0 / (top - low)))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def _not_an_image(data: bytes) -> str:
    """Why Pillow could not identify the bytes, in words, guessing from their start."""
    head = data[:4096].lstrip().lower()
    if not data:
        return "is empty (0 bytes)"
    if b"<svg" in head:
        return "is an SVG (vector) image; covergen paints raster images only"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]:
        return "is an HTML page, not an image"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace").strip()
        kind = "an AVIF" if brand.startswith("avi") else "a HEIF/HEIC" if brand else "an ISO media"
        return f"is {kind} file, which covergen does not read"
    if head.startswith(b"%pdf"):
        return "is a PDF document, not an image"
    return f"is not a {ACCEPTED_NAMES} image"


# ---------------------------------------------------------------------- HTTP details


def _scheme(src: str) -> str:
    """The URL scheme of src in lower case, or '' for a file path."""
    match = _SCHEME.match(src)
    if not match:
        return ""
    scheme = match.group(1).lower()
    if src[match.end() :].startswith("//") or scheme in _BARE_SCHEMES:
        return scheme
    return ""


def _arriving(response: requests.Response) -> Iterator[bytes]:
    """The body in pieces as they arrive, each from one socket read.

    ``iter_content`` blocks until a whole chunk is in, so a server sending a byte at a time
    just inside the read timeout could hold it for hours; ``read1`` returns what one read
    brought. urllib3's errors are raised as requests' own, as ``iter_content`` raises them.
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


def _check_content_type(response: requests.Response, where: _Where) -> None:
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
        raise where.error(f"the server sent {what} instead of an image ({header})", hint=hint)


def _status_problem(status: int, reason: str, url: str, final_url: str) -> tuple[str, str]:
    """Message and hint for a final answer other than 200 or 304."""
    at = f" at {final_url}" if final_url != url else ""
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


def _retry_after(response: requests.Response) -> float:
    """Seconds a 429/503 asks us to wait (capped), 0 when it says nothing usable."""
    value = response.headers.get("Retry-After", "").strip()
    seconds = 0.0
    if value.isdigit():
        seconds = float(value)
    elif value:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = (when - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            seconds = 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _network_reason(exc: requests.RequestException, settings: FetchSettings) -> str:
    """A short account of a failed request, for messages."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {settings.connect_timeout:g} s"
    # A timeout while streaming the body surfaces as a ConnectionError naming the timeout.
    if isinstance(exc, requests.ReadTimeout) or "read timed out" in text.lower():
        return f"read timeout: no answer within {settings.read_timeout:g} s"
    if isinstance(exc, requests.ConnectionError) and "refused" in text.lower():
        return "connection refused"
    cut = _INCOMPLETE.search(text)
    if cut:  # the connection dropped mid-body: say how far it got, not urllib3's repr
        got, missing = int(cut.group(1)), int(cut.group(2))
        return f"the connection dropped after {got:,} of {got + missing:,} bytes"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection dropped during the download"
    return text[:200]


def _too_large(size: int, limit: int, *, counted: bool = False) -> tuple[str, str]:
    amount = f"more than {limit:,} bytes arrived" if counted else f"it is {size:,} bytes"
    return (
        f"the image is too large: {amount}, the limit is {limit:,}",
        "use a smaller version of the image, or raise max_bytes",
    )
