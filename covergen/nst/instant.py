"""The feed-forward methods: a painting in one pass of a network, beside Gatys' optimisation.

- ``arbitrary`` (Ghiasi et al. 2017, Magenta's arbitrary image stylization): the style
  predictor reads the cover (a centre square at 256×256) into 100 numbers; the transformer
  paints the photo with them at the photo's own size and aspect (it is fully convolutional:
  any size, padded to a multiple of 4 and cropped back). ``style_strength`` mixes the cover's
  numbers with the photo's own, as the paper does.
- ``fast`` (Dumoulin et al. 2017): the 26-style network's convolutions with a normalisation
  row learnt for the cover (``fasttrain``), trained once per cover and recipe, kept in the
  target cache by content hash, then one pass per photo.

What the methods share with Gatys, through ``prepared.PreparedJob``: the sizes, the colour
options (``preserve_color: luminance`` paints the photo's luminance and gives the result the
photo's chroma; ``histogram`` recolours the cover to the photo's palette first), the guided
filter (``smoothing``, and ``mode: photo``, which turns it on), the quality measures, and
face and region protection. A network has no content weight to raise inside a face, so
protection lowers the *strength* there instead: the photo is painted twice, at the pair's
strength and at that strength divided by the largest protection weight, and the two are
blended pixel by pixel by the protection map (``_protected``). ``style_scale`` paints at
``size × style_scale`` and resizes to ``size``: above 1 the brush marks come out finer.
Several covers (``covergen stylize``) blend their style vectors by ``style_blend``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from . import feedforward, imaging
from .errors import Cancelled, ParameterError
from .feedforward import centre_square

if TYPE_CHECKING:
    from .fasttrain import CancelFn
    from .prepared import PreparedJob
    from .services import EngineServices

ReportFn = Callable[[str, int, int], None]  # report(stage, done, total)

MAX_WORKING_SIDE = 4096  # style_scale above 1 paints larger first: bounded
# What, besides the fast_* parameters, decides a cover's trained network: the Gatys loss
# it is trained with, the crops' seed and the cover's scale against the crops.
_TRAINING_FIELDS = frozenset(
    ("network", "weights", "pooling", "content_weight", "style_weight", "tv_weight",
     "content_layers", "content_layer_weights", "style_layers", "style_layer_weights",
     "style_loss", "seed", "style_scale")
)  # fmt: skip


class InstantMethods:
    """One engine's feed-forward networks, loaded on its device on first use."""

    def __init__(self, engine: EngineServices):
        self.engine = engine
        self._networks: dict[str, torch.nn.Module] = {}
        self._photos: list[torch.Tensor] | None = None  # the bundled training photos

    def network(self, name: str) -> Any:
        if name not in self._networks:
            self._networks[name] = feedforward.load_network(
                name, self.engine.device, cache_dir=self.engine.cache_dir
            )
        return self._networks[name]

    # -- painting --------------------------------------------------------------------------
    def paint(
        self, jobs: Sequence[PreparedJob], report: ReportFn, cancel: CancelFn | None
    ) -> list[torch.Tensor]:
        """Each job's painting, (1, 3, H, W) in 0..1 at its result size, before ``finish``.

        ``report(stage, done, total)`` hears of the steps (a cover's training, the painting).
        """
        out = []
        for job in jobs:
            if cancel is not None and cancel():
                raise Cancelled("stopped before painting")
            if job.params.method == "arbitrary":
                out.append(self.arbitrary_painting(job))
            elif job.params.method == "fast":
                out.append(self._fast(job, report, cancel))
            else:
                raise ParameterError(
                    "method", f"{job.params.method!r} is not a feed-forward method"
                )
            report("paint", 1, 1)
        return out

    def arbitrary_painting(self, job: PreparedJob) -> torch.Tensor:
        """The arbitrary method's painting of a prepared job at its result size (also Gatys'
        starting image with ``init: arbitrary``)."""
        params = job.params
        device = self.engine.device
        predictor = self.network("predictor")
        transformer = self.network("transformer")
        with torch.no_grad():
            cover = sum(
                weight * feedforward.predict_style(predictor, centre_square(style.to(device)))
                for weight, style in zip(job.blend, job.styles, strict=True)
            )
            content = _working(job.content, params.style_scale).to(device)
            own = feedforward.predict_style(predictor, centre_square(content))

            def painted(strength: float) -> torch.Tensor:
                vector = strength * cover + (1.0 - strength) * own
                return transformer(content, vector)

            image = _protected(job, painted, params.style_strength)
        height, width = job.content.shape[-2:]
        return imaging.resize(image.float().cpu(), width, height)

    def _fast(self, job: PreparedJob, report: ReportFn, cancel: CancelFn | None) -> torch.Tensor:
        from .fasttrain import cover_painter

        trained = self.trained(job, report, cancel)
        painter = cover_painter(self.network("multistyle"), trained)
        params = job.params
        with torch.no_grad():
            content = _working(job.content, params.style_scale).to(self.engine.device)
            image = painter(content)
            if job.content_map is not None:
                # No strength to lower: a protected region keeps the photo by its weight.
                image = _blend_toward_photo(job, image, content)
        height, width = job.content.shape[-2:]
        return imaging.resize(image.float().cpu(), width, height)

    def trained(
        self, job: PreparedJob, report: ReportFn, cancel: CancelFn | None
    ) -> dict[str, torch.Tensor]:
        """The cover's own network (what ``fasttrain`` learns): from the target cache,
        keyed by the cover's pixels and the training's recipe, else trained now and kept.

        The training set is the bundled one alone, not the catalog's photos: a cover's
        network must not depend on which pairs a catalog holds, or adding a pair would
        retrain every cover. A cancelled training keeps nothing."""
        from .fasttrain import load_photos, train_cover_network, training_set_identity
        from .params import FAST_TRAINING_VERSION, key_values

        engine = self.engine
        params = job.params
        recipe = {
            name: value
            for name, value in key_values(params).items()
            if name.startswith("fast_") or name in _TRAINING_FIELDS
        }
        key = engine.cache_key(
            job.cover_source,
            "fast",
            FAST_TRAINING_VERSION,
            training_set_identity(),
            engine.weights_identity(params),
            feedforward.MULTISTYLE_FILE.sha256,
            engine.precision,
            repr(sorted(recipe.items())),
        )
        kept = engine.cache_get(key)
        if kept is not None and "norm.0.scale" in kept:
            job.metrics["trained_steps"] = 0
            return kept
        if self._photos is None:
            self._photos = load_photos()
        total = params.fast_iterations
        trained = train_cover_network(
            engine,
            params,
            job.cover_source,
            self._photos,
            progress=lambda step, _total, _loss: report("train", step, total),
            cancel=cancel,
        )
        engine.cache_put(key, trained)
        job.metrics["trained_steps"] = total
        return trained


def _protected(
    job: PreparedJob, painted: Callable[[float], torch.Tensor], strength: float
) -> torch.Tensor:
    """The painting at ``strength``, lowered where the job's protection map (faces, content
    regions) raises the content weight: strength / weight, by blending two paintings."""
    full = painted(strength)
    weights = job.content_map
    if weights is None or strength <= 0:
        return full
    height, width = full.shape[-2:]
    weights = F.interpolate(weights.to(full), size=(height, width), mode="area").clamp(min=1.0)
    top = float(weights.max())
    if top <= 1.0:
        return full
    low = strength / top
    local = strength / weights  # the strength each pixel should have, between low and strength
    mix = ((local - low) / (strength - low)).clamp(0, 1)  # 1: full painting, 0: the weak one
    return _with_light_of(full, painted(low), 1 - mix)


def _blend_toward_photo(job: PreparedJob, image: torch.Tensor, content: torch.Tensor):
    height, width = image.shape[-2:]
    weights = F.interpolate(job.content_map.to(image), size=(height, width), mode="area")
    keep = (1 - 1 / weights.clamp(min=1.0)).clamp(0, 1)  # weight 10: 90 % of the photo's light
    return _with_light_of(image, content.to(image), keep)


def _with_light_of(painting: torch.Tensor, source: torch.Tensor, amount: torch.Tensor):
    """``painting`` with its light and shade moved toward ``source``'s by ``amount`` (0..1,
    per pixel), its colours kept: a protected face keeps its features and wears the cover's
    colours. (Blending whole pixels toward the photo pasted a photographic face into the
    painting.)"""
    shift = imaging.rgb_to_yiq(source)[:, :1] - imaging.rgb_to_yiq(painting)[:, :1]
    return (painting + amount * shift).clamp(0, 1)


def _working(content: torch.Tensor, style_scale: float) -> torch.Tensor:
    """The photo at the size the network paints it: ``style_scale`` times the result's."""
    if style_scale == 1.0:
        return content
    height, width = content.shape[-2:]
    factor = min(style_scale, MAX_WORKING_SIDE / max(height, width))
    size = (max(feedforward.MIN_SIDE, round(height * factor)),
            max(feedforward.MIN_SIDE, round(width * factor)))  # fmt: skip
    return imaging.resize(content, size[1], size[0])
