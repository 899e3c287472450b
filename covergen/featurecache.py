"""A disk store for the engine's targets (content features, style statistics).

Keys come from the engine: a hash of the image tensor, the network, the weights' identity
and the layers. Covers shared by several pairs and reruns with new loss weights reuse
them. A file that does not load is treated as missing and rewritten.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .atomic import write_bytes


class FeatureCache:
    """Implements the engine's ``TargetCache`` protocol on ``root/<key[:2]>/<key>.pt``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self._path(key)
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            self.misses += 1
            return None
        except Exception:  # damaged or truncated: recompute and overwrite
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        if not isinstance(value, dict) or not all(
            isinstance(t, torch.Tensor) for t in value.values()
        ):
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: dict[str, torch.Tensor]) -> None:
        buffer = io.BytesIO()
        torch.save({name: t.contiguous() for name, t in value.items()}, buffer)
        write_bytes(self._path(key), buffer.getvalue())
