"""What the feed-forward methods borrow from the engine they run in, as a protocol: the
device and precision, the encoder and the style targets it caches, the feature cache. The
methods (``instant``, ``fasttrain``) depend on this, not on ``engine``, which imports them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from .params import StyleParams
from .runtime import Runtime
from .vgg import VGGEncoder


class EngineServices(Protocol):
    device: torch.device
    dtype: torch.dtype
    precision: str  # as resolved for this device (``auto`` never)
    runtime: Runtime
    cache_dir: Path

    def weights_identity(self, params: StyleParams) -> str: ...

    def encoder(self, params: StyleParams) -> VGGEncoder: ...

    def style_targets(
        self, params: StyleParams, style: torch.Tensor
    ) -> dict[str, torch.Tensor]: ...

    def features(
        self, encoder: VGGEncoder, x: torch.Tensor, layers: list[str]
    ) -> dict[str, torch.Tensor]: ...

    def cache_key(self, image: torch.Tensor, *parts: str) -> str | None: ...

    def cache_get(self, key: str | None) -> dict[str, torch.Tensor] | None: ...

    def cache_put(self, key: str | None, value: dict[str, torch.Tensor]) -> None: ...
