"""Finished results, addressed by job key, each verified by its checksum before use.

A record is checked field by field when it is read (``ResultRecord.from_json``): a tampered
or damaged record is no result at all, so it is painted again rather than trusted into the
site or the run log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_bytes

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ResultRecord:
    """What is known of a finished result; stored as JSON beside the image."""

    key: str
    pair: str
    sha256: str  # of the PNG bytes
    width: int
    height: int
    iterations: int
    seconds: float
    device: str
    losses: dict[str, float]
    params: dict[str, Any]
    photo_sha256: str
    cover_sha256: str
    engine_version: str
    weights: str
    extra: dict[str, Any] = field(default_factory=dict)
    # Found out while painting: quality scores, values chosen automatically, faces protected.
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> ResultRecord:
        """A record from its JSON form, every field checked; ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        values = {**{"extra": {}, "metrics": {}}, **data}
        missing = names - set(values)
        if missing:
            raise ValueError(f"missing fields {sorted(missing)}")
        for name in ("key", "sha256", "photo_sha256", "cover_sha256"):
            if not isinstance(values[name], str) or not _HEX64.match(values[name]):
                raise ValueError(f"{name} is not a SHA-256")
        for name in ("pair", "device", "engine_version", "weights"):
            if not isinstance(values[name], str):
                raise ValueError(f"{name} is not text")
        for name in ("width", "height", "iterations"):
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} is not a count")
        if values["width"] < 1 or values["height"] < 1:
            raise ValueError("the image has no pixels")
        if not _finite(values["seconds"]) or values["seconds"] < 0:
            raise ValueError("seconds is not a duration")
        for name in ("losses", "params", "extra", "metrics"):
            if not isinstance(values[name], dict) or not all(
                isinstance(k, str) for k in values[name]
            ):
                raise ValueError(f"{name} is not a mapping")
        if not all(_finite(v) for v in values["losses"].values()):
            raise ValueError("losses are not numbers")
        return cls(**values)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class ResultStore:
    """``root/<key[:2]>/<key>.png`` plus ``<key>.json``; the JSON is written last.

    A result exists only when both files exist, the record checks out and the image's
    SHA-256 matches it, so an interrupted write, a damaged file or a tampered record reads
    as "not built" and is simply rebuilt.
    """

    def __init__(self, root: Path, *, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only  # a dry run: a damaged entry is not removed, only skipped

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.png", folder / f"{key}.json"

    def image_path(self, key: str) -> Path:
        return self._paths(key)[0]

    def get(self, key: str) -> ResultRecord | None:
        """The verified record for ``key``, or None (a damaged entry is removed)."""
        if not _HEX64.match(key):
            return None
        image, meta = self._paths(key)
        try:
            text = meta.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        try:
            record = ResultRecord.from_json(json.loads(text))
            data = image.read_bytes()
        except (OSError, ValueError, RecursionError):
            self.remove(key)
            return None
        if hashlib.sha256(data).hexdigest() != record.sha256 or record.key != key:
            self.remove(key)
            return None
        return record

    def exists(self, key: str) -> bool:
        return self.get(key) is not None

    def put(
        self, png: bytes, width: int, height: int, record_fields: Mapping[str, Any]
    ) -> ResultRecord:
        """Store a finished PNG; the record's sha256, width and height are filled in."""
        record = ResultRecord.from_json(
            {
                **record_fields,
                "sha256": hashlib.sha256(png).hexdigest(),
                "width": width,
                "height": height,
            }
        )
        image_path, meta_path = self._paths(record.key)
        write_bytes(image_path, png)
        try:
            write_bytes(meta_path, json.dumps(asdict(record), indent=1, sort_keys=True).encode())
        except BaseException:
            # A full disk or Ctrl-C between the two writes: leave no image without its record.
            self.remove(record.key)
            raise
        return record

    def remove(self, key: str) -> None:
        if self.read_only:
            return
        for path in self._paths(key):
            path.unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for meta in sorted(self.root.glob("*/*.json")):
            yield meta.stem
