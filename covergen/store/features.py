"""A disk store for the engine's targets (content features, style statistics).

Keys come from the engine: a hash of the image tensor, the network, the weights' identity
and the layers. Covers shared by several pairs and reruns with new loss weights reuse
them. Each file starts with the SHA-256 of the rest: torch.load does not check the zip's
CRCs, so a flipped byte in a tensor would otherwise load as a wrong value. A file that does
not verify or load is treated as missing and rewritten.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from . import Collected, Store, digest

if TYPE_CHECKING:  # torch loads when a job runs, not for `covergen clean`
    import torch

MAGIC = b"covergen-features sha256:"
_HEADER = len(MAGIC) + 64 + 1  # magic, hex digest, newline


class FeatureCache:
    """Implements the engine's ``TargetCache`` protocol on ``root/<key[:2]>/<key>.pt``."""

    def __init__(self, root: Path):
        self.store = Store(Path(root))
        self.root = self.store.root

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        data = self.store.read(f"{key}.pt")
        if data is None:
            return None
        # The file carries its own digest: the header is this entry's record.
        header, body = data[:_HEADER], data[_HEADER:]
        if header != MAGIC + digest(body).encode() + b"\n" or (value := _load(body)) is None:
            self.store.discard(f"{key}.pt")  # damaged, truncated or of an older format
            return None
        return value

    def put(self, key: str, value: dict[str, torch.Tensor]) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save({name: t.contiguous() for name, t in value.items()}, buffer)
        body = buffer.getvalue()
        # The cache only saves time: a full disk or a read-only cache must not fail the
        # painting (the result's own write reports it). The atomic write leaves no file.
        with contextlib.suppress(OSError):
            self.store.put(f"{key}.pt", MAGIC + digest(body).encode() + b"\n" + body)

    def clear(self, *, dry_run: bool = False) -> Collected:
        """Remove every target (they are only worth the time they save)."""
        return self.store.collect((), dry_run=dry_run)


def _load(body: bytes) -> dict[str, torch.Tensor] | None:
    """The tensors of verified bytes, or None when they do not load as a dict of tensors."""
    import torch

    try:
        value = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception:  # verified bytes that still do not load: another torch, say
        return None
    tensors = isinstance(value, dict) and all(isinstance(t, torch.Tensor) for t in value.values())
    return value if tensors else None
