"""Where and how jobs run, and which devices there are. Torch-free until asked about devices.

None of it changes what a job means, only how fast it runs; the one device resolver lives
here, so "auto" means the same thing to the engine, the scheduler and every executor.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ParameterError

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp64")


@dataclass(frozen=True)
class Runtime:
    """How one engine runs its jobs.

    ``precision``: fp32 everywhere; tf32 lets CUDA matmuls and convolutions use TF32;
    bf16 runs the network under bfloat16 autocast (losses stay in float32); fp64 computes
    everything in double precision — slow, for exact comparisons such as the tests' proof
    that a batch equals its jobs run alone. ``auto`` is tf32 on CUDA; on a CPU, bf16 where
    a short measurement finds it pays (precision.cpu_bf16_pays: CPUs with fast bf16 kernels,
    such as AMX), else fp32; fp32 elsewhere.
    ``channels_last`` (None: on CUDA only) stores activations NHWC, the layout tensor cores
    prefer.
    """

    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ParameterError(
                "precision",
                f"unknown precision {self.precision!r}",
                f"use one of {', '.join(PRECISIONS)}",
            )


def resolve_devices(name: str = "auto") -> list[str]:
    """The devices a name stands for, each checked: ``auto`` is every GPU, else mps, else
    the CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps``, or a comma-separated list of them.

    Raises ParameterError (field ``device``) for a device this machine does not have, so a
    build can refuse it before any pair is tried. ``cpu`` alone needs no torch.
    """
    text, parts = name.strip(), _parts(name)
    if text and all(part == "cpu" for part in parts):
        return ["cpu"]
    import torch

    if text == "auto":
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["mps"] if _mps_available(torch) else ["cpu"]
    if not parts:
        raise _refused("no device named", "use auto, cpu, cuda, cuda:N or mps")
    devices = []
    for part in parts:
        try:
            device = torch.device(part)
        except (RuntimeError, ValueError):
            raise _refused(
                f"unknown device {part!r}", "use auto, cpu, cuda, cuda:N or mps"
            ) from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise _refused("CUDA is not available on this machine", "use --device cpu or auto")
            index = device.index or 0
            if index >= torch.cuda.device_count():
                raise _refused(
                    f"there is no GPU {index}", f"this machine has {torch.cuda.device_count()}"
                )
            devices.append(f"cuda:{index}")
        elif device.type == "mps":
            if not _mps_available(torch):
                raise _refused("MPS is not available on this machine", "use cpu")
            devices.append("mps")
        elif device.type == "cpu":
            devices.append("cpu")
        else:
            raise _refused(f"covergen does not run on {part!r}", "use auto, cpu, cuda:N or mps")
    return list(dict.fromkeys(devices))


def device_kind(name: str = "auto") -> str:
    """cpu or gpu: what ``resolve_devices(name)`` will give, told without importing torch.

    Used to choose the catalog's profile (draft on a CPU, final on a GPU) in builds that
    may paint nothing. For ``auto`` it looks for a GPU driver (NVIDIA's under /proc, Apple
    silicon's Metal) and a torch build that can use it (not a ``+cpu`` wheel).
    """
    if name.strip() != "auto":
        return "cpu" if all(part == "cpu" for part in _parts(name)) else "gpu"
    if sys.platform == "darwin":
        if platform.machine() != "arm64":
            return "cpu"
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() in ("", "-1"):
            return "cpu"
        gpus = Path("/proc/driver/nvidia/gpus")
        if not (gpus.is_dir() and any(gpus.iterdir())):
            return "cpu"
    # A GPU is there; the torch build decides.
    version = torch_version()
    return "cpu" if version is None or "+cpu" in version else "gpu"


def device_family(name: str = "auto") -> str:
    """cpu, cuda or mps: ``device_kind``, with Apple's GPU told apart from NVIDIA's (it runs
    the draft profile by default: a fraction of a CUDA GPU's speed). Torch-free."""
    if device_kind(name) == "cpu":
        return "cpu"
    if name.strip() == "auto":
        return "mps" if sys.platform == "darwin" else "cuda"
    parts = _parts(name)
    return "mps" if parts and all(part == "mps" for part in parts) else "cuda"


def torch_version() -> str | None:
    """The installed torch's version, None without one; read from its metadata, not by
    importing it (importlib.metadata only now: it is slow to load)."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def _parts(name: str) -> list[str]:
    """The device names of a comma-separated list, blanks left out."""
    return [part.strip() for part in name.split(",") if part.strip()]


def _refused(problem: str, hint: str) -> ParameterError:
    return ParameterError("device", problem, hint)


def _mps_available(torch) -> bool:  # type: ignore[no-untyped-def]
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
