"""VGG layer tables by name: which layers exist, in what order, how deep. Torch-free.

The names follow the usual convention (conv3_1, relu3_1, pool3) and the indices
torchvision's ``features`` Sequential, so parameters can be checked, and the deepest layer a
job needs found, without loading any network.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from .errors import ParameterError

# Channel counts per conv layer, "M" for a pooling layer (torchvision's configurations D and E).
# fmt: off
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
# fmt: on

# The input conventions weights can be trained with (see vgg.Preprocess).
PREPROCESSING = ("caffe", "torchvision")


@dataclass(frozen=True)
class LayerInfo:
    """One named module of the feature stack."""

    name: str  # conv3_1, relu3_1, pool3
    index: int  # position in torchvision's ``features`` Sequential
    kind: str  # conv, relu or pool
    channels: int  # output channels
    stride: int  # total downsampling factor at this layer's output


@cache
def layer_table(network: str) -> tuple[LayerInfo, ...]:
    """All named layers of a VGG network in forward order (made once per network: every
    pair's parameters are checked against it)."""
    if network not in VGG_CONFIGS:
        raise ParameterError(
            "network", f"unknown network {network!r}", f"use one of {', '.join(VGG_CONFIGS)}"
        )
    table: list[LayerInfo] = []
    block, conv_in_block, channels, stride = 1, 0, 3, 1
    for item in VGG_CONFIGS[network]:
        if item == "M":
            stride *= 2
            table.append(LayerInfo(f"pool{block}", len(table), "pool", channels, stride))
            block, conv_in_block = block + 1, 0
            continue
        conv_in_block += 1
        channels = int(item)
        suffix = f"{block}_{conv_in_block}"
        table.append(LayerInfo(f"conv{suffix}", len(table), "conv", channels, stride))
        table.append(LayerInfo(f"relu{suffix}", len(table), "relu", channels, stride))
    return tuple(table)


@cache
def _layer_index(network: str) -> dict[str, int]:
    return {info.name: info.index for info in layer_table(network)}


def check_layers(network: str, layers: Iterable[str], field: str) -> None:
    """Raise a ParameterError naming the field when a layer does not exist in the network."""
    known = _layer_index(network)
    for name in layers:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "names look like relu3_1 or conv4_2"
            raise ParameterError(field, f"{network} has no layer {name!r}", hint)


def deepest_layer(network: str, layers: Iterable[str]) -> str:
    """The deepest of the named layers, in forward order."""
    names = list(layers)
    check_layers(network, names, "layers")
    return max(names, key=_layer_index(network).__getitem__)


def smallest_side(network: str, layers: Iterable[str]) -> int:
    """The fewest pixels an image may have on its shorter side for the network to reach the
    deepest of ``layers``: each pooling halves it, and a pooling of one pixel has no output."""
    deepest = deepest_layer(network, layers)
    return layer_table(network)[_layer_index(network)[deepest]].stride
