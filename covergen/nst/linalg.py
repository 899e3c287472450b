"""Symmetric eigenproblems, done one way everywhere: the style losses, the quality judge's
colour distance and colour histogram matching all take roots of covariance matrices.

LAPACK's symmetric eigensolvers can fail to converge on the (near-)singular covariances of
flat covers and of deep layers of tiny images. Every solve here falls back, on that failure,
to float64 with a tiny multiple of the mean variance added to the diagonal: the shift moves
every eigenvalue by about 1e-9 of the mean variance, far below anything the callers see.
"""

from __future__ import annotations

import torch


def _jittered(matrix: torch.Tensor) -> torch.Tensor:
    work = matrix.double()
    mean_variance = torch.diagonal(work, dim1=-2, dim2=-1).abs().mean(dim=-1) + 1e-30
    eye = torch.eye(work.shape[-1], dtype=work.dtype, device=work.device)
    return work + 1e-9 * mean_variance[..., None, None] * eye


def eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of symmetric matrices (..., C, C)."""
    try:
        return torch.linalg.eigh(matrix)
    except torch.linalg.LinAlgError:
        values, vectors = torch.linalg.eigh(_jittered(matrix))
        return values.to(matrix.dtype), vectors.to(matrix.dtype)


def eigvalsh(matrix: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending) of symmetric matrices (..., C, C); differentiable, and stable
    where eigenvalues repeat (no eigenvectors are differentiated)."""
    try:
        return torch.linalg.eigvalsh(matrix)
    except torch.linalg.LinAlgError:
        return torch.linalg.eigvalsh(_jittered(matrix)).to(matrix.dtype)


def symmetric_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    """``matrix`` to ``power`` for symmetric positive semi-definite matrices (..., C, C):
    0.5 is the square root; a negative power needs positive definite ones. Eigenvalues
    below 0 (rounding) count as 0."""
    values, vectors = eigh(matrix)
    values = values.clamp_min(0) ** power
    return vectors @ torch.diag_embed(values) @ vectors.transpose(-1, -2)


def symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of symmetric positive semi-definite matrices (..., C, C)."""
    return symmetric_power(matrix, 0.5)
