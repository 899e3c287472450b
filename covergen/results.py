"""Finished results, addressed by job key, each verified by its checksum before use."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .atomic import write_bytes


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


class ResultStore:
    """``root/<key[:2]>/<key>.png`` plus ``<key>.json``; the JSON is written last.

    A result exists only when both files exist and the image's SHA-256 matches the record,
    so an interrupted write or a damaged file reads as "not built" and is simply rebuilt.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.png", folder / f"{key}.json"

    def image_path(self, key: str) -> Path:
        return self._paths(key)[0]

    def get(self, key: str) -> ResultRecord | None:
        """The verified record for ``key``, or None (a damaged entry is removed)."""
        image, meta = self._paths(key)
        try:
            record = ResultRecord(**json.loads(meta.read_text()))
            data = image.read_bytes()
        except (OSError, ValueError, TypeError):
            return None
        if hashlib.sha256(data).hexdigest() != record.sha256 or record.key != key:
            self.remove(key)
            return None
        return record

    def exists(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, image: Image.Image, record_fields: dict[str, Any]) -> ResultRecord:
        """Store a finished image; the record's sha256, width and height are filled in."""
        buffer = io.BytesIO()
        image.save(buffer, "PNG", optimize=False)
        data = buffer.getvalue()
        record = ResultRecord(
            **{
                **record_fields,
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": image.width,
                "height": image.height,
            }
        )
        image_path, meta_path = self._paths(record.key)
        write_bytes(image_path, data)
        try:
            write_bytes(meta_path, json.dumps(asdict(record), indent=1, sort_keys=True).encode())
        except BaseException:
            # A full disk or Ctrl-C between the two writes: leave no image without its record.
            self.remove(record.key)
            raise
        return record

    def remove(self, key: str) -> None:
        for path in self._paths(key):
            path.unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for meta in sorted(self.root.glob("*/*.json")):
            yield meta.stem
