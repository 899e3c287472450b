"""Optimisers that treat each batch item as its own problem.

``torch.optim.LBFGS`` shares one curvature history and one step length across the whole
tensor, so images optimised together would steer each other. ``BatchLBFGS`` keeps the
history, the Hessian scaling and the step per item, so a batch gives the same images as
running each item alone. Both optimisers take one gradient per iteration (no line
search), so an iteration costs exactly one forward and backward pass.
"""

from __future__ import annotations

from collections import deque

import torch


class BatchLBFGS:
    """Limited-memory BFGS with independent state per batch item, unit steps."""

    def __init__(self, x: torch.Tensor, history_size: int = 10, lr: float = 1.0):
        self.x = x
        self.batch = x.shape[0]
        self.lr = lr
        # (s, y, rho) of the latest steps, the oldest falling out.
        self._history: deque[tuple[torch.Tensor, ...]] = deque(maxlen=history_size)
        self._h_diag = torch.ones(self.batch, device=x.device, dtype=x.dtype)
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None  # gradient, step

    def step(self, grad: torch.Tensor, active: torch.Tensor) -> None:
        """Move ``x`` along the L-BFGS direction; items where ``active`` is False stay put."""
        g = grad.reshape(self.batch, -1)
        if self._previous is None:
            # First step: no curvature yet, so bound the step by the gradient's size
            # (the same rule as torch.optim.LBFGS).
            scale = (1.0 / g.abs().sum(dim=1).clamp_min(1e-12)).clamp(max=1.0) * self.lr
        else:
            previous_grad, previous_step = self._previous
            self._remember(g - previous_grad, previous_step)
            scale = torch.full_like(self._h_diag, self.lr)
        step = self._direction(g) * (scale * active.to(g.dtype)).unsqueeze(1)
        with torch.no_grad():
            self.x.add_(step.view_as(self.x))
        self._previous = (g.clone(), step)

    def _remember(self, y: torch.Tensor, s: torch.Tensor) -> None:
        ys = (y * s).sum(dim=1)
        # A pair without positive curvature would break the update; rho = 0 makes it a no-op.
        valid = ys > 1e-10
        rho = torch.where(valid, 1.0 / ys.where(valid, torch.ones_like(ys)), torch.zeros_like(ys))
        yy = (y * y).sum(dim=1).clamp_min(1e-20)
        self._h_diag = torch.where(valid, ys / yy, self._h_diag)
        self._history.append((s, y, rho))

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        q = -g
        alphas = []
        for s, y, rho in reversed(self._history):
            alpha = rho * (s * q).sum(dim=1)
            q = q - alpha.unsqueeze(1) * y
            alphas.append(alpha)
        r = q * self._h_diag.unsqueeze(1)
        for (s, y, rho), alpha in zip(self._history, reversed(alphas), strict=True):
            beta = rho * (y * r).sum(dim=1)
            r = r + s * (alpha - beta).unsqueeze(1)
        return r


class BatchAdam:
    """Adam on a batch tensor, with per-item freezing and an averaged iterate.

    Adam is element-wise, so items never interact; freezing restores frozen items after
    the update because momentum would otherwise keep moving them. The running average
    of iterates (an exponential moving average) smooths the optimiser's
    jitter out of the returned image.
    """

    def __init__(self, x: torch.Tensor, lr: float, average: float):
        self.x = x
        self._adam = torch.optim.Adam([x], lr=lr)
        self._decay = average
        self._avg = x.detach().clone() if average > 0 else None

    def step(self, grad: torch.Tensor, active: torch.Tensor) -> None:
        before = self.x.detach().clone()
        self.x.grad = grad
        self._adam.step()
        self._adam.zero_grad(set_to_none=True)
        with torch.no_grad():
            keep = active.view(-1, *([1] * (self.x.dim() - 1)))
            self.x.copy_(torch.where(keep, self.x, before).clamp_(0, 1))
            if self._avg is not None:
                blended = self._decay * self._avg + (1 - self._decay) * self.x
                self._avg = torch.where(keep, blended, self._avg)

    def result(self) -> torch.Tensor:
        """The averaged iterate, or the last one without averaging.

        The average starts at the initial image rather than at zero, so it needs no bias
        correction: after t steps the start keeps a share of decay**t (0.9**50 < 1%).
        """
        return self.x.detach() if self._avg is None else self._avg
