"""Finished results, addressed by job key, each verified by its checksum before use.

A record is decoded strictly when it is read (``store.decode``): a tampered or damaged record
is no result at all, so it is painted again rather than trusted into the site or the run log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import (
    SHA256,
    Count,
    Duration,
    Pixels,
    RecordError,
    Sha256,
    Store,
    decode,
    digest,
    dumps,
)


@dataclass(frozen=True)
class ResultRecord:
    """What is known of a finished result; stored as JSON beside the image."""

    key: Sha256
    pair: str
    sha256: Sha256  # of the PNG bytes
    width: Pixels
    height: Pixels
    iterations: Count
    seconds: Duration
    device: str
    losses: dict[str, float]
    params: dict[str, Any]
    photo_sha256: Sha256
    cover_sha256: Sha256
    engine_version: str
    weights: str
    extra: dict[str, Any] = field(default_factory=dict)
    # Found out while painting: quality scores, values chosen automatically, faces protected.
    metrics: dict[str, Any] = field(default_factory=dict)


class ResultStore:
    """``root/<key[:2]>/<key>.png`` plus ``<key>.json``, an entry of the one ``Store``.

    A result exists only when both files exist, the record checks out and the image's
    SHA-256 matches it, so an interrupted write, a damaged file or a tampered record reads
    as "not built" and is simply rebuilt.
    """

    def __init__(self, root: Path, *, read_only: bool = False):
        self.store = Store(Path(root), read_only=read_only)
        self.root = self.store.root

    def image_path(self, key: str) -> Path:
        return self.store.path(f"{key}.png")

    def get(self, key: str) -> ResultRecord | None:
        """The verified record for ``key``, or None (a damaged entry is removed)."""
        if not SHA256.fullmatch(key):
            return None

        def vouched(record: ResultRecord) -> dict[str, str]:
            if record.key != key:
                raise RecordError(f"the record of {key} names {record.key}")
            return {f"{key}.png": record.sha256}

        return self.store.get_entry(f"{key}.json", ResultRecord, vouched)

    def put(
        self, png: bytes, width: int, height: int, record_fields: Mapping[str, Any]
    ) -> ResultRecord:
        """Store a finished PNG; the record's sha256, width and height are filled in."""
        fields = {**record_fields, "sha256": digest(png), "width": width, "height": height}
        record = decode(ResultRecord, fields)
        self.store.put_entry(f"{record.key}.json", dumps(record), {f"{record.key}.png": png})
        return record

    def remove(self, key: str) -> None:
        self.store.remove(key)

    def keys(self) -> Iterator[str]:
        return self.store.keys()
