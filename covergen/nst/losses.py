"""Content, style and total-variation losses, normalised to be independent of size.

Every loss returns one value per batch item, so that jobs optimised together in a batch
keep their own losses and weights. The normalisations make a weight mean the same thing
at 256 px and at 1024 px and whatever a layer's size or activation magnitude:

- content: squared feature error averaged over positions and channels, relative to the
  target's mean square (a dimensionless fraction);
- style: statistics averaged over positions (a Gram matrix divided by H*W), and their
  error relative to the target statistics' own magnitude;
- total variation: the mean gradient magnitude with the image mapped to the unit square,
  i.e. the continuous TV norm, which a finer sampling of the same picture leaves unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .linalg import eigvalsh
from .linalg import symmetric_sqrt as symmetric_sqrt  # the style targets' roots

EPS = 1e-8


class _Gram(torch.autograd.Function):
    """G = F Fᵀ / N with a one-matmul backward: dF = (dG + dGᵀ) F / N.

    Autograd's own backward of ``bmm(F, Fᵀ)`` takes two matmuls over the N positions; the
    Gram matmuls are the engine's main cost beyond the network itself.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        return torch.bmm(flat, flat.transpose(1, 2)) / flat.shape[2]

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.bmm(grad + grad.transpose(1, 2), flat) / flat.shape[2]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) second moments, averaged over the H*W positions."""
    b, c, h, w = features.shape
    return _Gram.apply(features.reshape(b, c, h * w))


def mean_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> channel means (B, C) and covariances (B, C, C)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    mean = flat.mean(dim=2)
    centred = flat - mean.unsqueeze(2)
    return mean, torch.bmm(centred, centred.transpose(1, 2)) / (h * w)


def content_loss(
    features: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor | None = None
) -> torch.Tensor:
    """Relative squared feature error per batch item.

    ``weight_map`` (B, 1, h, w) at any resolution scales each position's error; it is
    averaged down to the layer's resolution, so a region with weight 3 counts three times.
    """
    diff = (features - target).square()
    if weight_map is not None:
        diff = diff * F.adaptive_avg_pool2d(weight_map, features.shape[-2:])
    scale = target.square().mean(dim=(1, 2, 3)) + EPS
    return diff.mean(dim=(1, 2, 3)) / scale


def gram_style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Squared Gram error relative to the target Gram's squared norm, per batch item."""
    gram = gram_matrix(features)
    err = (gram - target_gram).square().sum(dim=(1, 2))
    return err / (target_gram.square().sum(dim=(1, 2)) + EPS)


def meancov_style_loss(
    features: torch.Tensor,
    target_mean: torch.Tensor,
    target_cov: torch.Tensor,
    target_cov_sqrt: torch.Tensor,
) -> torch.Tensor:
    """Squared Wasserstein-2 distance between Gaussians fitted to the features, per item.

    W2² = |μ - μt|² + tr Σ + tr Σt - 2 tr (Σt^½ Σ Σt^½)^½, made relative to the target's
    second moment |μt|² + tr Σt. Only eigenvalues are differentiated (never eigenvectors),
    which keeps the gradient stable when eigenvalues repeat. With Σ = F Fᵀ / N, the matrix
    Σt^½ Σ Σt^½ = (Σt^½ F)(Σt^½ F)ᵀ / N has the same non-zero eigenvalues as the N×N
    matrix (Σt^½ F)ᵀ(Σt^½ F) / N, so the smaller of the two is decomposed: a deep layer of a
    small image has far fewer positions than channels.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    mean = flat.mean(dim=2)
    centred = flat - mean.unsqueeze(2)
    whitened = target_cov_sqrt @ centred  # (B, C, N)
    n = h * w
    if n < c:
        inner = whitened.transpose(1, 2) @ whitened / n
    else:
        inner = whitened @ whitened.transpose(1, 2) / n
    inner = (inner + inner.transpose(1, 2)) / 2  # symmetric up to rounding; eigvalsh needs it
    eigenvalues = eigvalsh(inner).clamp_min(0)
    target_trace = torch.diagonal(target_cov, dim1=1, dim2=2).sum(dim=1)
    # sqrt(λ + δ²) - δ keeps the gradient finite at λ = 0 and lets zero eigenvalues add
    # nothing; δ, a millionth of the target's mean variance, biases the loss by < 1e-6.
    delta = (1e-6 * target_trace / c).unsqueeze(1) + EPS
    cross = ((eigenvalues + delta.square()).sqrt() - delta).sum(dim=1)
    trace = centred.square().sum(dim=(1, 2)) / n
    w2 = (mean - target_mean).square().sum(dim=1) + trace + target_trace - 2 * cross
    return w2 / (target_mean.square().sum(dim=1) + target_trace + EPS)


def tv_loss(image: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """Mean gradient magnitude of (B, C, H, W) images on the unit square, per batch item.

    Differences are multiplied by the side length, so they are derivatives per image width,
    and a flat image scores 0. ``smoothing`` (in the same units: a change of one full
    intensity across the whole image) rounds the norm near zero (the Charbonnier form),
    keeping the gradient finite without depending on the pixel count.
    """
    _, _, h, w = image.shape
    dx = (image[..., :-1, 1:] - image[..., :-1, :-1]) * w
    dy = (image[..., 1:, :-1] - image[..., :-1, :-1]) * h
    magnitude = (dx.square() + dy.square() + smoothing**2).sqrt() - smoothing
    return magnitude.mean(dim=(1, 2, 3))
