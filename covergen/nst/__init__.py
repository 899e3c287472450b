"""The style-transfer engine: Gatys et al. neural style transfer on VGG features.

It imports torch and nothing of covergen outside this package, never reads catalogs or
writes the site, and reports through callbacks.
"""

from .engine import (
    ENGINE_VERSION,
    Engine,
    LossValues,
    Progress,
    Runtime,
    StylizeJob,
    StylizeResult,
    TargetCache,
    batch_signature,
    result_size,
    select_device,
    shape_signature,
)
from .errors import Cancelled, EngineError, ParameterError, WeightsError
from .params import ParameterErrors, ParamSpec, StyleParams, from_mapping, param_specs

__all__ = [
    "ENGINE_VERSION",
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
    "from_mapping",
    "param_specs",
    "result_size",
    "select_device",
    "shape_signature",
]
