"""The Gatys objective of one batch at one scale, assembled from the loss modules
(``losses``), and the early-stopping rule of its optimisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import losses
from .errors import ParameterError
from .params import AUTO, StyleParams
from .vgg import VGGEncoder

# (encoder, images, layers) -> features by layer: the engine's one pass, targets cached.
Features = Callable[[VGGEncoder, torch.Tensor, list[str]], dict[str, torch.Tensor]]


@dataclass
class Objective:
    """The loss function of one batch at one scale."""

    features: Features
    encoder: VGGEncoder
    params: StyleParams
    content_targets: dict[str, torch.Tensor]
    style_targets: dict[str, torch.Tensor]
    weight_map: torch.Tensor | None
    content_layer_weights: torch.Tensor  # (B, layers)
    style_layer_weights: torch.Tensor  # (B, layers)
    term_weights: torch.Tensor  # (B, 4): content, style, tv, photorealism
    laplacians: list[Any]  # per job: a photoreal.MattingLaplacian, or None

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.params
        layers = list(dict.fromkeys([*p.content_layers, *p.style_layers]))
        feats = self.features(self.encoder, x, layers)
        content = x.new_zeros(x.shape[0])
        for i, name in enumerate(p.content_layers):
            term = losses.content_loss(feats[name], self.content_targets[name], self.weight_map)
            content = content + self.content_layer_weights[:, i] * term
        style = x.new_zeros(x.shape[0])
        for i, name in enumerate(p.style_layers):
            if p.style_loss == "gram":
                term = losses.gram_style_loss(feats[name], self.style_targets[name])
            else:
                stats = (self.style_targets[f"{name}.{k}"] for k in ("mean", "cov", "sqrt"))
                term = losses.meancov_style_loss(feats[name], *stats)
            style = style + self.style_layer_weights[:, i] * term
        raw = (content, style, losses.tv_loss(x), self._photorealism(x))
        weighted = [self.term_weights[:, i] * term for i, term in enumerate(raw)]
        content, style, tv, photo = weighted
        terms = dict(zip(("content", "style", "tv", "photo"), weighted, strict=True))
        return {"total": content + style + tv + photo, **terms}

    def _photorealism(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_c xᵀ L x per image, averaged over its values (so λ means the same at every size);
        0 for jobs without the regulariser."""
        out = x.new_zeros(x.shape[0])
        used = [i for i, lap in enumerate(self.laplacians) if lap is not None]
        if not used:
            return out
        from .photoreal import photorealism_loss

        index = torch.tensor(used, device=x.device)
        values = photorealism_loss(x.index_select(0, index), [self.laplacians[i] for i in used]) / (
            x.shape[1] * x.shape[2] * x.shape[3]
        )
        return out.index_copy(0, index, values.to(out.dtype))


class EarlyStop:
    """Per-job iteration budgets and the relative-improvement stopping rule."""

    def __init__(self, params: list[StyleParams], budgets: list[int], device: torch.device):
        self.params = params
        self.budgets = budgets
        self.active = torch.tensor([b > 0 for b in budgets], device=device)
        self.history: list[torch.Tensor] = []

    def update(self, iteration: int, total: torch.Tensor) -> None:
        self.history.append(total.cpu())
        for i, p in enumerate(self.params):
            if not bool(self.active[i]):
                continue
            if iteration >= self.budgets[i]:
                self.active[i] = False
            elif p.tolerance > 0 and len(self.history) > p.patience:
                before = float(self.history[-1 - p.patience][i])
                now = float(self.history[-1][i])
                if before - now < p.tolerance * abs(before):
                    self.active[i] = False


def term_weights(params: StyleParams) -> list[float]:
    """content, style, total-variation and photorealism weights of a job (content fixed:
    an automatic weight has been chosen by the probe before any loss is built)."""
    if params.content_weight == AUTO:
        raise ParameterError("content_weight", "auto must be chosen before painting")
    return [
        float(params.content_weight),
        params.style_weight,
        params.tv_weight,
        params.photorealism_weight(),
    ]
