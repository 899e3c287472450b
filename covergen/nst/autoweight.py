"""The automatic content weight (``content_weight: auto``): candidates painted at the coarse
scale and judged; the lowest weight that keeps the band recognisable is chosen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .params import AUTO_AIM


def choose_content_weight(kept: Sequence[tuple[float, float]], aim: float = AUTO_AIM) -> float:
    """The automatic content weight from (candidate weight, content_kept) pairs: the lowest
    weight that keeps at least ``aim`` of the photo, so the cover shows as much as it can
    while the band stays recognisable; the highest when none does. A NaN score (photo and
    cover too alike for the judge's anchors to mean anything) never qualifies, so a pair
    the judge cannot tell apart gets the highest weight, the one that changes least."""
    if not kept:
        raise ValueError("no candidates to choose from")
    ordered = sorted(kept)
    return next(
        (weight for weight, content in ordered if keeps_enough(content, aim)), ordered[-1][0]
    )


def keeps_enough(content: float, aim: float = AUTO_AIM) -> bool:
    """Whether a candidate keeps enough of the photo to be chosen (False for NaN)."""
    return content >= aim


@dataclass
class Candidate:
    """One candidate of an automatic content weight, painted and judged."""

    weight: float
    scores: Any  # quality.Scores
    image: torch.Tensor  # its coarse image, (1, 3, h, w)
    iterations: int
    history: list[dict[str, float]]
