"""A job made ready for any method: its images as tensors at their sizes, colour handling
applied, the content-weight map, the start image; what Gatys, the feed-forward networks and
the quality judge read of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import imaging
from .errors import ParameterError
from .params import StyleParams, check_image_sizes, result_size


@dataclass
class StylizeJob:
    """One photo to paint with one or more covers.

    ``content_map``: a per-pixel content-weight multiplier, a PIL image (mode L: black 0,
    white 1; mode F: the values themselves) or a (H, W) tensor, resized to each scale.
    ``init_image`` is used when ``params.init == "image"``.
    """

    content: Image.Image
    styles: Sequence[Image.Image]
    params: StyleParams = field(default_factory=StyleParams)
    content_map: Image.Image | torch.Tensor | None = None
    init_image: Image.Image | None = None


COVER_SOURCE_SIDE = 1024  # a cover larger than this is trained on at this long side


@dataclass
class PreparedJob:
    """A job's images as tensors at the final size, colour handling applied."""

    params: StyleParams
    content: torch.Tensor  # (1, 3, H, W), what the optimisation sees
    photo: torch.Tensor  # (1, 3, H, W), the photo in full colour (for faces, judge, Laplacian)
    colour_source: torch.Tensor | None  # full-colour content when only luminance is styled
    styles: list[torch.Tensor]  # each (1, 3, h, w) at the largest size any scale needs
    blend: list[float]
    content_map: torch.Tensor | None  # (1, 1, H, W) multiplier
    init_image: torch.Tensor | None
    metrics: dict[str, Any] = field(default_factory=dict)
    start: torch.Tensor | None = None  # the first scale's starting image (a probe's winner)
    probed: int = 0  # iterations the probe already spent on the first scale
    probe_budget: int = 0  # a probe's candidate: how many iterations it gets
    probe_history: list[dict[str, float]] = field(default_factory=list)
    # The first cover as given (not resized nor recoloured, at most COVER_SOURCE_SIDE px): what
    # the fast method trains a cover's network on, and keys it by.
    cover_source: torch.Tensor | None = None

    @classmethod
    def create(cls, job: StylizeJob) -> PreparedJob:
        p = job.params
        if not job.styles:
            raise ParameterError("style", "no style image given", "give at least one cover")
        blend = list(p.style_blend) or [1.0] * len(job.styles)
        if len(blend) != len(job.styles):
            raise ParameterError(
                "style_blend",
                f"has {len(blend)} weights for {len(job.styles)} style images",
                "give one weight per style image",
            )
        check_image_sizes(p, job.content.size, [style.size for style in job.styles])
        total = sum(blend)
        if total <= 0:
            raise ParameterError("style_blend", "weights sum to zero", "give a positive weight")
        blend = [b / total for b in blend]
        width, height = result_size(job.content.size, p)
        photo = imaging.pil_to_tensor(imaging.resized(job.content, (width, height)))
        content = photo
        style_long = max(8, round(p.size * p.style_scale))
        styles = [
            imaging.pil_to_tensor(imaging.resized(s, imaging.fit_long_side(*s.size, style_long)))
            for s in job.styles
        ]
        colour_source = None
        if p.preserve_color == "luminance":
            colour_source = photo
            styles = [imaging.match_luminance(s, photo) for s in styles]
            content = imaging.luminance(photo)
        elif p.preserve_color == "histogram":
            styles = [imaging.match_color_statistics(s, photo).clamp(0, 1) for s in styles]
        if p.init == "image" and job.init_image is None:
            raise ParameterError(
                "init",
                "init is 'image' but no init image was given",
                "pass an init image or choose content, style or noise",
            )
        init = None
        if job.init_image is not None:
            init = imaging.pil_to_tensor(imaging.resized(job.init_image, (width, height)))
            if colour_source is not None:
                init = imaging.luminance(init)
        source = None
        if p.method == "fast":
            if len(job.styles) > 1:
                raise ParameterError(
                    "method",
                    f"fast trains a network of one cover; {len(job.styles)} were given",
                    "blend covers with method gatys or arbitrary",
                )
            cover = job.styles[0]
            size = imaging.fit_long_side(*cover.size, min(max(cover.size), COVER_SOURCE_SIDE))
            source = imaging.pil_to_tensor(imaging.resized(cover, size))
        return cls(
            p,
            content,
            photo,
            colour_source,
            styles,
            blend,
            content_map_of(job.content_map, p, width, height),
            init,
            cover_source=source,
        )

    def with_weight(self, weight: float, probe: int = 0) -> PreparedJob:
        """This job with a fixed content weight: a probe's candidate (``probe``: its
        iterations, which its parameters keep so the batch's budgets can be read from them),
        or the weight chosen."""
        return dataclasses.replace(
            self,
            params=dataclasses.replace(self.params, content_weight=float(weight)),
            metrics=dict(self.metrics),
            probe_budget=probe,
        )

    def content_at(self, width: int, height: int) -> torch.Tensor:
        return imaging.resize(self.content, width, height)

    def photo_at(self, width: int, height: int) -> torch.Tensor:
        return imaging.resize(self.photo, width, height)

    def cover_at(self, width: int, height: int) -> torch.Tensor:
        """The (first) cover, sized to cover ``width``×``height`` as the judge compares."""
        return _at_long_side(self.styles[0], max(width, height))

    def styles_at(self, long_side: int) -> list[torch.Tensor]:
        return [_at_long_side(style, long_side) for style in self.styles]

    def weight_map(self, width: int, height: int) -> torch.Tensor | None:
        if self.content_map is None:
            return None
        return F.interpolate(self.content_map, size=(height, width), mode="area")

    def initial(self, width: int, height: int) -> torch.Tensor:
        init = self.params.init
        if init == "content":
            return self.content_at(width, height)
        if init == "style":
            return imaging.resize(self.styles[0], width, height)
        if init in ("image", "arbitrary") and self.init_image is not None:
            return imaging.resize(self.init_image, width, height)
        generator = torch.Generator().manual_seed(self.params.seed)
        noise = torch.rand(1, 3, height, width, generator=generator)
        if self.colour_source is not None:
            noise = noise[:, :1].expand(-1, 3, -1, -1).contiguous()
        return noise

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The result as an RGB tensor in 0..1: colours restored, smoothed when asked."""
        x = x.detach().to(torch.float32)
        height, width = x.shape[-2:]
        if self.colour_source is not None:
            x = imaging.with_chroma_of(x, imaging.resize(self.colour_source, width, height).to(x))
        if self.params.smooths():
            from .photoreal import local_affine_smooth

            photo = self.photo_at(width, height).to(x)
            x = local_affine_smooth(x, photo, radius=max(2, round(max(width, height) / 64)))
        return x.clamp(0, 1).cpu()


def _at_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    return imaging.resize(image, *imaging.fit_long_side(width, height, long_side))


def content_map_of(
    source: Image.Image | torch.Tensor | None, params: StyleParams, width: int, height: int
) -> torch.Tensor | None:
    """The job's content-weight multiplier at the final size: map image times regions."""
    weights = imaging.region_map(params.content_regions, height, width)
    if source is None:
        return weights
    if isinstance(source, Image.Image):
        if source.mode == "F":
            values = torch.from_numpy(np.asarray(source, dtype=np.float32).copy())
        else:
            values = imaging.pil_to_tensor(source.convert("L").convert("RGB"))[0, 0]
    else:
        values = source.float()
    if values.dim() != 2 or bool((values < 0).any()):
        raise ParameterError(
            "content_map",
            "must be one channel of non-negative values",
            "use a greyscale image: black keeps no content, white keeps all",
        )
    values = F.interpolate(values[None, None], size=(height, width), mode="area")
    return values if weights is None else values * weights
