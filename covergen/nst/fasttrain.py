"""The fast method's training: a network of the cover's own.

Dumoulin et al. (2017) showed that one feed-forward network can paint many styles when only
the scale and shift of its instance norms change from style to style. ``MultiStyleNetwork``
is their network with 26 styles learnt; ``train_cover_network`` learns one more row, the
cover's, with the convolutions frozen (``fast_train: norm``, what Magenta's
``image_stylization_finetune`` does), or every weight (``fast_train: all``). The loss is the
Gatys loss this engine optimises an image with (``objective.Objective``: content at the content
layers against the crop's own features, style at the style layers against the cover's
statistics, total variation), averaged over random crops of training photos, so the network
learns to do in one pass what the Gatys method does in a few hundred iterations.

The training photos are a small public-domain / CC0 set that ships with the package
(``training_photos/``, credited in its CREDITS.md) and whatever the caller adds (the job's
own photo). A small set is enough because only 2 x 18 vectors (about 640 numbers) are learnt;
training every weight on it overfits, which is why ``norm`` is the default.

What comes back is a dict of tensors, ready for a content-addressed tensor cache;
``cover_painter`` turns it, fresh or cached, into a module that paints photos.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from . import imaging, losses
from .errors import Cancelled, ParameterError
from .feedforward import MIN_SIDE, MultiStyleNetwork, StyleNorm, load_multistyle
from .objective import Objective
from .params import AUTO, StyleParams
from .precision import precision_flags
from .services import EngineServices

# `content_weight: auto` for the fast method. Gatys' automatic weight is chosen per pair by
# painting candidates and judging them; a cover's network paints photos it has never seen,
# so it gets one fixed weight, measured on the sample pairs (scripts/fast_train_bench.py,
# 300 steps of one crop): at 1 the pulsar cover's networks lost the faces (content kept
# 0.14-0.30 against the arbitrary network's 0.28-0.41); at 2 they kept them (0.24-0.41) but
# took less of the red-lines cover (style taken 0.25-0.43 against 0.46-0.60).
FAST_CONTENT_WEIGHT = 1.5
# Each crop comes from its photo resized so that its shorter side is this many times the
# crop's side (uniformly at random): from the whole photo's height down to two thirds of it,
# the framings a band photo is painted at.
CROP_SCALES = (1.0, 1.5)
# Steps of linear warm-up, as a fraction of the training, then a cosine decay to
# FINAL_LR_FRACTION of the learning rate.
WARMUP_FRACTION = 0.05
FINAL_LR_FRACTION = 0.1
# fast_train: all: the convolutions learn at this fraction of the norms' learning rate (a
# norm's scale or shift moves a whole channel; a convolution's weights are many and small).
CONV_LR_FRACTION = 0.05

TRAINING_PHOTOS_DIR = Path(__file__).with_name("training_photos")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

ProgressFn = Callable[[int, int, float], None]
CancelFn = Callable[[], bool]


# --------------------------------------------------------------------------- training set


def training_photos() -> list[Path]:
    """The bundled training photos, in name order."""
    return sorted(
        path
        for path in TRAINING_PHOTOS_DIR.iterdir()
        if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES
    )


@functools.cache
def training_set_identity() -> str:
    """SHA-256 over the bundled training photos' names and bytes (for cache keys; read once
    per process)."""
    digest = hashlib.sha256()
    for path in training_photos():
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def load_photos(paths: Sequence[Path] | None = None) -> list[Tensor]:
    """Photos as (1, 3, H, W) RGB tensors in 0..1 (default: the bundled training photos)."""
    out = []
    for path in training_photos() if paths is None else paths:
        with Image.open(path) as image:
            out.append(imaging.pil_to_tensor(image))
    return out


# --------------------------------------------------------------------------- what is learnt


def trained_norm(trained: Mapping[str, Tensor]) -> StyleNorm:
    """The cover's ``StyleNorm`` from a training's tensors (``norm.{i}.scale`` / ``.shift``)."""
    layers = []
    i = 0
    while f"norm.{i}.scale" in trained:
        layers.append((trained[f"norm.{i}.scale"], trained[f"norm.{i}.shift"]))
        i += 1
    if not layers:
        raise ParameterError("fast", "the trained tensors hold no norm.0.scale")
    return StyleNorm(tuple(layers))


class CoverPainter(nn.Module):
    """A multistyle network with a cover's norm (and, trained with ``all``, its own
    convolutions): NCHW images in 0..1 → paintings in 0..1 at their own size."""

    def __init__(self, network: MultiStyleNetwork, norm: StyleNorm) -> None:
        super().__init__()
        self.network = network
        self.norm = norm

    def forward(self, image: Tensor) -> Tensor:
        param = next(self.network.parameters())  # the network's device and dtype
        norm = StyleNorm(tuple((s.to(param), b.to(param)) for s, b in self.norm))
        return self.network(image.to(param), norm=norm)


def cover_painter(network: MultiStyleNetwork, trained: Mapping[str, Tensor]) -> CoverPainter:
    """The painter of a training's tensors (``train_cover_network``'s result, or the same
    dict read back from a cache). ``network`` (``load_multistyle``) is never changed: tensors
    of a network trained with ``all`` go into a copy of it."""
    convs = {k.removeprefix("network."): v for k, v in trained.items() if k.startswith("network.")}
    if convs:
        network = copy.deepcopy(network)
        param = next(network.parameters())
        state = network.state_dict()
        unknown = sorted(set(convs) - set(state))
        if unknown:
            raise ParameterError("fast", f"the trained tensors name unknown weights {unknown[:3]}")
        network.load_state_dict({**state, **{k: v.to(param) for k, v in convs.items()}})
    return CoverPainter(network, trained_norm(trained))


# --------------------------------------------------------------------------- training


def fast_loss_params(params: StyleParams) -> StyleParams:
    """The job's parameters with the content weight the fast method trains with."""
    if params.content_weight == AUTO:
        return dataclasses.replace(params, content_weight=FAST_CONTENT_WEIGHT)
    return params


def train_cover_network(
    engine: EngineServices,
    params: StyleParams,
    cover: Tensor,
    photos: Sequence[Tensor],
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> dict[str, Tensor]:
    """Train a multistyle network's norm (and, with ``fast_train: all``, its convolutions)
    to paint in the style of ``cover``; return what was learnt, as CPU float32 tensors.

    ``cover``: (1, 3, h, w) in 0..1, colour-prepared by the caller. ``photos``: (1, 3, H, W)
    in 0..1, the bundled set (``load_photos()``) plus any the caller adds. Every step paints
    ``fast_batch`` random crops of ``fast_size`` pixels (a random photo at a random scale,
    ``CROP_SCALES``, flipped half the time) and takes an Adam step on the Gatys loss of the
    paintings (``content_weight: auto`` is ``FAST_CONTENT_WEIGHT``); the cover's statistics
    are those of the cover at ``fast_size * style_scale`` pixels, as Gatys sizes it for a
    result of the crop's size. The crops, hence the result on a CPU, depend on ``seed`` alone.

    ``progress(step, total, loss)`` after each step (loss: the batch's mean total);
    ``cancel()`` is asked before each step and True raises ``Cancelled``.

    The result: ``norm.{i}.scale`` and ``norm.{i}.shift`` ([1, C]) for the 18 norms, and with
    ``all`` the convolutions too (``network.{name}``); ``cover_painter`` paints with it.
    """
    if not photos:
        raise ParameterError("fast", "no training photos given")
    _check_image(cover, "cover")
    for photo in photos:
        _check_image(photo, "training photo")
    params = fast_loss_params(params)
    device, dtype = engine.device, engine.dtype
    size, batch, total = params.fast_size, params.fast_batch, params.fast_iterations
    generator = torch.Generator().manual_seed(params.seed)
    # The largest a crop's photo gets: resized once, so each step only shrinks it.
    prepared = [_shorter_side(photo, math.ceil(size * CROP_SCALES[1])) for photo in photos]
    with precision_flags(device, engine.runtime.precision), torch.enable_grad():
        network = load_multistyle(device).to(dtype)
        encoder = engine.encoder(params)
        problem = _problem(engine, encoder, params, cover, batch)
        norm = network.mean_norm().as_leaves()
        groups: list[dict] = [{"params": norm.tensors(), "lr": params.fast_learning_rate}]
        convs: dict[str, nn.Parameter] = {}
        if params.fast_train == "all":
            convs = {n: p for n, p in network.named_parameters() if n.endswith("conv.weight")}
            for weight in convs.values():
                weight.requires_grad_(True)
            lr = params.fast_learning_rate * CONV_LR_FRACTION
            groups.append({"params": list(convs.values()), "lr": lr})
        optimiser = torch.optim.Adam(groups)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, functools.partial(_learning_rate_factor, total=total)
        )
        for step in range(1, total + 1):
            if cancel is not None and cancel():
                raise Cancelled("cancelled by the caller")
            crops = _crops(prepared, size, batch, generator).to(device, dtype)
            with torch.no_grad():
                problem.content_targets = engine.features(
                    encoder, crops, list(params.content_layers)
                )
            painted = network(crops, norm=norm)
            loss = problem.losses(painted)["total"].mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if progress is not None:
                progress(step, total, float(loss.detach()))
    learnt: dict[str, Tensor] = {}
    for i, (scale, shift) in enumerate(norm):
        learnt |= {f"norm.{i}.scale": scale, f"norm.{i}.shift": shift}
    learnt |= {f"network.{name}": weight for name, weight in convs.items()}
    return {key: t.detach().to("cpu", torch.float32).clone() for key, t in learnt.items()}


def _learning_rate_factor(step: int, *, total: int) -> float:
    """Linear warm-up over WARMUP_FRACTION of the steps, then cosine down to
    FINAL_LR_FRACTION (``step`` counts from 0, the first step's factor)."""
    warmup = max(1, round(total * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def _problem(
    engine: EngineServices, encoder: nn.Module, params: StyleParams, cover: Tensor, batch: int
) -> Objective:
    """The Gatys loss of a batch of paintings of ``fast_size`` crops; the caller sets the
    content targets (the crops' features) before each use."""
    long_side = max(8, round(params.fast_size * params.style_scale))
    width, height = imaging.fit_long_side(cover.shape[-1], cover.shape[-2], long_side)
    cover = imaging.resize(cover.float().cpu(), width, height)
    style = dict(engine.style_targets(params, cover))
    if params.style_loss == "meancov":
        for name in params.style_layers:
            style[f"{name}.sqrt"] = losses.symmetric_sqrt(style[f"{name}.cov"])
    # One row of weights for the whole batch: the losses broadcast it, and the cover's
    # statistics, over the crops.
    term_weights = [float(params.content_weight), params.style_weight, params.tv_weight, 0.0]

    def row(values: list[float]) -> Tensor:
        return torch.tensor([values], dtype=engine.dtype, device=engine.device)

    return Objective(
        features=engine.features,
        encoder=encoder,  # type: ignore[arg-type]
        params=params,
        content_targets={},
        style_targets=style,
        weight_map=None,
        content_layer_weights=row(params.resolved_content_layer_weights()),
        style_layer_weights=row(params.resolved_style_layer_weights()),
        term_weights=row(term_weights),
        laplacians=[None] * batch,
    )


def _crops(photos: Sequence[Tensor], size: int, batch: int, generator: torch.Generator) -> Tensor:
    """``batch`` random square crops of ``size`` pixels: a random photo, resized so that its
    shorter side is a random multiple (CROP_SCALES) of ``size``, flipped half the time."""
    low, high = CROP_SCALES
    out = []
    for _ in range(batch):
        photo = photos[int(torch.randint(len(photos), (), generator=generator))]
        scale = low + (high - low) * float(torch.rand((), generator=generator))
        photo = _shorter_side(photo, max(size, round(size * scale)))
        height, width = photo.shape[-2:]
        top = int(torch.randint(height - size + 1, (), generator=generator))
        left = int(torch.randint(width - size + 1, (), generator=generator))
        crop = photo[..., top : top + size, left : left + size]
        if float(torch.rand((), generator=generator)) < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out)


def _shorter_side(image: Tensor, side: int) -> Tensor:
    """``image`` resized (aspect kept) so that its shorter side is ``side`` pixels."""
    height, width = image.shape[-2:]
    factor = side / min(height, width)
    return imaging.resize(
        image, max(side, round(width * factor)), max(side, round(height * factor))
    )


def _check_image(image: Tensor, name: str) -> None:
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ParameterError("fast", f"the {name} should be (1, 3, H, W), not {tuple(image.shape)}")
    if min(image.shape[-2:]) < MIN_SIDE:
        raise ParameterError("fast", f"the {name} of {tuple(image.shape[-2:])} pixels is too small")
