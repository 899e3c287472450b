"""A disk store for the engine's targets (content features, style statistics).

Keys come from the engine: a hash of the image tensor, the network, the weights' identity
and the layers. Covers shared by several pairs and reruns with new loss weights reuse
them. Each file starts with the SHA-256 of the rest: torch.load does not check the zip's
CRCs, so a flipped byte in a tensor would otherwise load as a wrong value. A file that does
not verify or load is treated as missing and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import torch

from .atomic import write_bytes

MAGIC = b"covergen-features sha256:"
_HEADER = len(MAGIC) + 64 + 1  # magic, hex digest, newline


class FeatureCache:
    """Implements the engine's ``TargetCache`` protocol on ``root/<key[:2]>/<key>.pt``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        value = _verified_load(data)
        if value is None:  # damaged, truncated or of an older format: recompute, overwrite
            path.unlink(missing_ok=True)
        return value

    def put(self, key: str, value: dict[str, torch.Tensor]) -> None:
        buffer = io.BytesIO()
        torch.save({name: t.contiguous() for name, t in value.items()}, buffer)
        body = buffer.getvalue()
        header = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n"
        # The cache only saves time: a full disk or a read-only cache must not fail the
        # painting (the result's own write reports it). The atomic write leaves no file.
        with contextlib.suppress(OSError):
            write_bytes(self._path(key), header + body)


def _verified_load(data: bytes) -> dict[str, torch.Tensor] | None:
    """The tensors of a cache file whose checksum matches, else None."""
    header, body = data[:_HEADER], data[_HEADER:]
    if not header.startswith(MAGIC) or not header.endswith(b"\n"):
        return None
    if hashlib.sha256(body).hexdigest().encode() != header[len(MAGIC) : -1]:
        return None
    try:
        value = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception:  # verified bytes that still do not load: another torch, say
        return None
    if not isinstance(value, dict) or not all(isinstance(t, torch.Tensor) for t in value.values()):
        return None
    return value
