"""Image <-> tensor conversion, resizing and colour handling for the engine."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .linalg import symmetric_power
from .params import Region
from .params import fit_long_side as fit_long_side  # re-exported for callers

# NTSC YIQ, the space Gatys et al. (2016) use for luminance-only transfer.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB (alpha composited on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        return Image.fromarray((array / peak * 255).round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) float32 in 0..1."""
    array = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in 0..1 -> 8-bit RGB PIL image."""
    if tensor.dim() == 4:
        tensor = tensor[0]
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy(), "RGB")


def resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """High-quality resize to (width, height)."""
    image = to_rgb(image)
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def resize(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """NCHW ``image`` (0..1) at ``width`` x ``height``: bicubic, antialiased when it shrinks,
    clamped to 0..1; the same tensor when it already has that size."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    smaller = height * width < image.shape[-2] * image.shape[-1]
    out = torch.nn.functional.interpolate(
        image, size=(height, width), mode="bicubic", align_corners=False, antialias=smaller
    )
    return out.clamp(0, 1)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> YIQ."""
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(image), image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) grey image of its luminance."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and spread (Gatys 2016)."""
    y_style = rgb_to_yiq(style)[:, :1]
    y_content = rgb_to_yiq(content)[:, :1]
    s_mean, s_std = y_style.mean(), y_style.std().clamp_min(1e-6)
    c_mean, c_std = y_content.mean(), y_content.std()
    matched = (y_style - s_mean) / s_std * c_std + c_mean
    return matched.expand(-1, 3, -1, -1).contiguous()


def with_chroma_of(luma_image: torch.Tensor, colour_source: torch.Tensor) -> torch.Tensor:
    """The luminance of ``luma_image`` combined with the I and Q channels of ``colour_source``."""
    yiq = torch.cat([rgb_to_yiq(luma_image)[:, :1], rgb_to_yiq(colour_source)[:, 1:]], dim=1)
    return torch.einsum("ij,bjhw->bihw", _YIQ_TO_RGB.to(yiq), yiq)


def match_color_statistics(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Recolour ``source`` so its RGB mean and covariance equal the reference's.

    The linear map x -> A (x - μs) + μr with A = Σr^½ Σs^-½ (symmetric roots), the
    "colour histogram matching" of Gatys et al. (2016). Values may leave 0..1 slightly;
    the caller clamps.
    """
    src = source.double().reshape(3, -1)
    ref = reference.double().reshape(3, -1)
    mu_s, mu_r = src.mean(1, keepdim=True), ref.mean(1, keepdim=True)
    cov_s, cov_r = torch.cov(src), torch.cov(ref)
    # A flat-coloured cover has a singular covariance; a ridge tiny next to the images'
    # own variance keeps the inverse root finite without visibly changing the result.
    ridge = torch.eye(3, dtype=torch.float64) * (
        1e-6 * float(cov_s.trace() + cov_r.trace()) + 1e-10
    )
    out = symmetric_power(cov_r + ridge, 0.5) @ symmetric_power(cov_s + ridge, -0.5) @ (src - mu_s)
    return (out + mu_r).reshape(source.shape).to(source.dtype)


def region_map(regions: tuple[Region, ...], height: int, width: int) -> torch.Tensor | None:
    """A (1, 1, H, W) content-weight map from rectangles; None when there are none."""
    if not regions:
        return None
    weights = torch.ones(1, 1, height, width)
    for left, top, right, bottom, weight in regions:
        x0, x1 = round(left * width), max(round(right * width), round(left * width) + 1)
        y0, y1 = round(top * height), max(round(bottom * height), round(top * height) + 1)
        weights[..., y0:y1, x0:x1] = weight
    return weights
