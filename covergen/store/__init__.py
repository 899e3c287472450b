"""The one content-addressed store under every cache: images, results, features, derived
images and converted weights (torch-free: the engine's weights cache stands on it too).

An entry is a few files named by its key (``<key>.png``, ``<key>-320.webp``), sharded by the
key's first two characters, each written by ``atomic.write_bytes``. Its bytes are verified
whenever they are read, against the digest that vouches for them: the key itself (bytes named
by their SHA-256), or a record written last (``put_entry``), so a record only exists beside
whole files. Records are decoded strictly by ``decode``. What fails a check is no entry at
all: it is removed (unless the store is read-only: a dry run) and the caller makes it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from ..atomic import write_bytes

R = TypeVar("R")


def cache_paths(cache_dir: Path) -> dict[str, Path]:
    """Where things live in a cache folder (``cache/`` unless --cache-dir says otherwise):
    fetched images, results, engine features, the site's derived images, the run log and
    the build lock (converted weights live in ``weights/``)."""
    cache_dir = Path(cache_dir)
    return {
        "images": cache_dir / "images",
        "results": cache_dir / "results",
        "features": cache_dir / "features",
        "derived": cache_dir / "derived",
        "runlog": cache_dir / "runs.sqlite",
        "lock": cache_dir / "build.lock",  # see locks.cache_lock
    }


SHA256 = re.compile(r"[0-9a-f]{64}")


def digest(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex: the address of bytes throughout covergen."""
    return hashlib.sha256(data).hexdigest()


def key_of(name: str) -> str:
    """The key of the entry a file belongs to: its name up to the first "." or "-"."""
    return name.split(".", 1)[0].split("-", 1)[0]


# ----------------------------------------------------------------------------- typed records


class RecordError(ValueError):
    """A stored record that is not what its type says; the message names the field."""


@dataclass(frozen=True)
class Check:
    """A condition on a record field beyond its type, for ``Annotated[type, Check(...)]``."""

    test: Callable[[Any], Any]
    meaning: str  # "a SHA-256": the error reads "<field> is not a SHA-256"


Sha256 = Annotated[str, Check(SHA256.fullmatch, "a SHA-256")]
Count = Annotated[int, Check(lambda v: v >= 0, "a count")]
Pixels = Annotated[int, Check(lambda v: v >= 1, "a size in pixels")]
Duration = Annotated[float, Check(lambda v: v >= 0, "a duration")]


def decode(cls: type[R], value: Any, where: str = "") -> R:
    """The dataclass ``cls`` from a JSON value, every field checked; RecordError otherwise.

    Unknown and missing fields are refused (fields with defaults may be left out); numbers
    must be finite, ``bool`` is no ``int``; ``Annotated`` fields also pass their ``Check``.
    """
    if not isinstance(value, dict):
        raise RecordError(f"{where or 'the record'} is not a JSON object")
    fields, hints, required = _fields(cls)
    if unknown := sorted(set(value) - set(fields)):
        raise RecordError(f"{where}unknown fields {unknown}")
    if missing := sorted(required - set(value)):
        raise RecordError(f"{where}missing fields {missing}")
    return cls(**{n: _value(hints[n], v, f"{where}{n}") for n, v in value.items()})


@functools.cache
def _fields(cls: type) -> tuple[dict[str, dataclasses.Field[Any]], dict[str, Any], set[str]]:
    """A record type's fields, their type hints and the names of those without a default."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = dataclasses.MISSING
    required = {n for n, f in fields.items() if f.default is f.default_factory is missing}
    return fields, typing.get_type_hints(cls, include_extras=True), required


_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false"}


def _value(kind: Any, value: Any, name: str) -> Any:
    if kind in _NAMES:  # the leaves first: most of a record's values are text and numbers
        accepted = (int, float) if kind is float else kind
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, accepted):
            raise RecordError(f"{name} is not {_NAMES[kind]}")
        if kind is float and not _finite(value):
            raise RecordError(f"{name} is not a finite number")
        return float(value) if kind is float else value
    origin, args = _shape(kind)
    if origin is Annotated:
        value = _value(args[0], value, name)
        for check in args[1:]:
            if not check.test(value):
                raise RecordError(f"{name} is not {check.meaning}")
        return value
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and args[1] is type(None):
        return None if value is None else _value(args[0], value, name)  # X | None
    if origin is Literal:
        if value not in args:
            raise RecordError(f"{name} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(kind):
        return decode(kind, value, f"{name}.")  # type: ignore[arg-type]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise RecordError(f"{name} is not a mapping")
        if args[1] is Any:
            return dict(value)
        return {k: _value(args[1], v, f"{name}[{k!r}]") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecordError(f"{name} is not a list")
        items = [_value(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)]
        return origin(items)
    if isinstance(value, bool) or not isinstance(value, kind):  # any other class
        raise RecordError(f"{name} is not {kind.__name__}")
    return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (10**400)
        return False


@functools.cache
def _shape(kind: Any) -> tuple[Any, tuple[Any, ...]]:
    """A field type's origin and arguments (typing's answers, asked once per type)."""
    return typing.get_origin(kind), typing.get_args(kind)


def loads(cls: type[R], data: bytes) -> R:
    """A record of type ``cls`` from its stored JSON bytes; RecordError when it is not one."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RecordError(f"not JSON ({exc})") from None
    return decode(cls, value)


def dumps(record: Any) -> bytes:
    """The stored form of a record (a dataclass): JSON, keys sorted."""
    return json.dumps(dataclasses.asdict(record), indent=1, sort_keys=True).encode()


# ----------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Collected:
    """What ``Store.collect`` removed (or, in a dry run, would remove)."""

    entries: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Store:
    """Files by key under ``root``: ``root/<name[:2]>/<name>``, or ``root/<name>`` when not
    ``sharded``. ``read_only`` (a dry run): a damaged entry is skipped, never removed."""

    root: Path
    read_only: bool = False
    sharded: bool = True

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name if self.sharded else self.root / name

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name`` as they are, or None when it cannot be read."""
        try:
            return self.path(name).read_bytes()
        except OSError:
            return None

    def put(self, name: str, data: bytes) -> str:
        """Write ``data`` as ``name`` atomically; return its SHA-256."""
        write_bytes(self.path(name), data)
        return digest(data)

    def get(self, name: str, expected: str | None = None) -> bytes | None:
        """The bytes of ``name`` if they hash to ``expected`` (by default: the key they are
        named by), else None; a damaged file is removed."""
        data = self.read(name)
        if data is not None and digest(data) != (key_of(name) if expected is None else expected):
            self.discard(name)
            return None
        return data

    def put_entry(self, record_name: str, record: bytes, files: Mapping[str, bytes]) -> None:
        """Write ``files``, then the record that vouches for them: a record is only ever read
        beside whole files. On any failure (a full disk, Ctrl-C) nothing of it is left."""
        written: list[str] = []
        try:
            for name, data in [*files.items(), (record_name, record)]:
                # Not self.put: the callers hashed these bytes already (the record says so).
                write_bytes(self.path(name), data)
                written.append(name)
        except BaseException:
            # What was replaced goes, with the record (its files may no longer match it);
            # what the failed write never touched is still whole and stays.
            self.discard(*{record_name, *written}, force=True)
            raise

    def get_entry(
        self, record_name: str, cls: type[R], vouched: Callable[[R], Mapping[str, str]]
    ) -> R | None:
        """The record ``record_name`` of type ``cls`` when it decodes and every file it
        vouches for (``vouched``: name → SHA-256, or RecordError when the record does not
        fit) verifies; None otherwise, the damaged entry removed."""
        data = self.read(record_name)
        if data is None:
            return None
        with contextlib.suppress(RecordError):
            record = loads(cls, data)
            if all(self.get(name, sha) is not None for name, sha in vouched(record).items()):
                return record
        self.remove(key_of(record_name))  # the whole entry: a record it cannot read vouches
        return None

    def get_record(self, name: str, cls: type[R]) -> R | None:
        """The typed record ``name``, or None when absent or malformed (then removed)."""
        return self.get_entry(name, cls, lambda _: {})

    def discard(self, *names: str, force: bool = False) -> None:
        """Remove files by name (a read-only store keeps them unless ``force``: they are
        its own half-written ones)."""
        if self.read_only and not force:
            return
        for name in names:
            self.path(name).unlink(missing_ok=True)

    def files(self) -> Iterator[Path]:
        """Every stored file (not those a writer is still writing), sorted."""
        if not self.root.is_dir():
            return
        # Shards have two-character names: other stores' folders beside them are not ours.
        pattern = "??/*" if self.sharded else "*"
        for path in sorted(self.root.glob(pattern)):
            if path.is_file() and not path.name.startswith("."):
                yield path

    def keys(self) -> Iterator[str]:
        """The key of every entry, each once, sorted."""
        yield from sorted({key_of(path.name) for path in self.files()})

    def remove(self, key: str) -> None:
        """Remove every file of the entry ``key``."""
        folder = self.path(key).parent
        self.discard(*(p.name for p in folder.glob(f"{key}*") if key_of(p.name) == key))

    def collect(self, keep: Container[str], *, dry_run: bool = False) -> Collected:
        """Remove every entry whose key is not in ``keep``; what went (or would go)."""
        gone = [path for path in self.files() if key_of(path.name) not in keep]
        size = sum(path.stat().st_size for path in gone)
        if not dry_run:
            for path in gone:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # the shard's last file: the shard goes too
                    path.parent.rmdir()
        return Collected(len({key_of(path.name) for path in gone}), size)
