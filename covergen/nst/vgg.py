"""VGG feature encoders with named layers, built only as deep as a job needs.

The module layout follows torchvision's ``features`` Sequential, so a torchvision
state dict (``features.{index}.weight``) loads unchanged whatever the weights' origin.
Input preprocessing lives inside the encoder: callers always pass RGB images in 0..1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import ParameterError
from .layers import PREPROCESSING, check_layers, layer_table

# Caffe VGG expects BGR in 0..255 with the ImageNet mean subtracted; torchvision's
# retrained weights expect RGB in 0..1 standardised with ImageNet mean and std.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocess(nn.Module):
    """Maps RGB 0..1 images to what the weights were trained on."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing {kind!r}")
        self.kind = kind
        if kind == "caffe":
            scale = torch.full((3,), 255.0)
            shift = torch.tensor(CAFFE_MEAN_BGR)
        else:
            scale = 1.0 / torch.tensor(IMAGENET_STD)
            shift = torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.kind == "caffe":
            image = image.flip(1)  # RGB -> BGR
        return image * self.scale - self.shift


class VGGEncoder(nn.Module):
    """A frozen VGG feature stack truncated at the deepest layer any caller asked for."""

    def __init__(self, network: str, deepest: str, preprocessing: str, pooling: str = "max"):
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ParameterError("pooling", f"unknown pooling {pooling!r}", "use max or avg")
        table = layer_table(network)
        check_layers(network, [deepest], "layers")
        depth = next(info.index for info in table if info.name == deepest) + 1
        self.network = network
        self.pooling = pooling
        self.table = table[:depth]
        self.preprocess = Preprocess(preprocessing)
        modules: list[nn.Module] = []
        in_channels = 3
        for info in self.table:
            if info.kind == "conv":
                modules.append(nn.Conv2d(in_channels, info.channels, kernel_size=3, padding=1))
                in_channels = info.channels
            elif info.kind == "relu":
                # Not in place: a caller may keep the conv output that precedes it.
                modules.append(nn.ReLU(inplace=False))
            else:
                pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
                modules.append(pool(kernel_size=2, stride=2))
        self.features = nn.Sequential(*modules)
        self._index = {info.name: info.index for info in self.table}
        self.requires_grad_(False)
        self.eval()

    @property
    def layer_names(self) -> list[str]:
        return [info.name for info in self.table]

    def load_vgg_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a torchvision-layout state dict, ignoring layers beyond this encoder's depth."""
        own = self.features.state_dict()
        missing = [key for key in own if f"features.{key}" not in state_dict]
        if missing:
            raise ValueError(f"weights lack {len(missing)} tensors, e.g. features.{missing[0]}")
        for key, tensor in own.items():
            source = state_dict[f"features.{key}"]
            if source.shape != tensor.shape:
                raise ValueError(
                    f"weights tensor features.{key} has shape {tuple(source.shape)}, "
                    f"expected {tuple(tensor.shape)}"
                )
        self.features.load_state_dict({k: state_dict[f"features.{k}"] for k in own})

    def forward(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Run the stack on RGB 0..1 images; return the requested layers' outputs by name."""
        wanted = set(layers)
        unknown = wanted - self._index.keys()
        if unknown:
            check_layers(self.network, unknown, "layers")
            raise ParameterError("layers", f"{sorted(unknown)} lie beyond this encoder's depth")
        last = max(self._index[name] for name in wanted)
        out: dict[str, torch.Tensor] = {}
        x = self.preprocess(image)
        for info, module in zip(self.table[: last + 1], self.features, strict=False):
            x = module(x)
            if info.name in wanted:
                out[info.name] = x
        return out
