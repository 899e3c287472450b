"""The style-transfer engine: Gatys et al. neural style transfer on VGG features.

It imports torch and, of covergen outside this package, only three torch-free modules
that import nothing else of ours (the atomic file writer, ``Problem`` of
``covergen.errors``, and the content-addressed store that keeps converted weights); it
never reads catalogs or writes the site, and reports through callbacks.

The package imports lazily: parameters, their specs, layer tables, runtimes and errors are
plain Python, so commands that paint nothing (and job planning) never load torch. The
engine itself (``Engine`` and friends) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import Cancelled, EngineError, ParameterError, WeightsError
from .params import (
    ENGINE_VERSION,
    ParameterErrors,
    ParamSpec,
    StyleParams,
    from_mapping,
    param_specs,
    result_size,
    shape_signature,
)
from .runtime import PRECISIONS, Runtime, device_kind, resolve_devices

if TYPE_CHECKING:
    from .engine import (
        Engine,
        LossValues,
        Progress,
        StylizeResult,
        TargetCache,
        batch_signature,
        select_device,
    )
    from .prepared import StylizeJob

_LAZY = {
    "Engine": "engine",
    "LossValues": "engine",
    "Progress": "engine",
    "StylizeResult": "engine",
    "TargetCache": "engine",
    "batch_signature": "engine",
    "select_device": "engine",
    "StylizeJob": "prepared",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "ENGINE_VERSION",
    "PRECISIONS",
    "Cancelled",
    "Engine",
    "EngineError",
    "LossValues",
    "ParamSpec",
    "ParameterError",
    "ParameterErrors",
    "Progress",
    "Runtime",
    "StyleParams",
    "StylizeJob",
    "StylizeResult",
    "TargetCache",
    "WeightsError",
    "batch_signature",
    "device_kind",
    "from_mapping",
    "param_specs",
    "resolve_devices",
    "result_size",
    "select_device",
    "shape_signature",
]
