"""What `precision: auto` means on this machine: decided once, kept, and part of the key.

On a CPU, ``auto`` is bf16 where bf16 autocast runs VGG's convolutions at least
``CPU_BF16_GAIN`` times as fast as fp32 (CPUs with AMX), else fp32 — and the flags a CPU
reports do not tell which, so it is measured (``nst.precision.cpu_bf16_speedup``). Measured in every
process, a CPU near the cut-off (1.73-1.78 on one EPYC against 1.5) flips with the load, and
the same job paints other bytes. So the measurement is made once per machine and kept in
the user's cache folder (``machine.json``, one entry per CPU, torch and oneDNN build); every
build, worker and `stylize` on the machine uses that answer; `covergen status` shows it; and
the precision a result was painted in is part of its key, so a bf16 painting never stands in
for an fp32 one.

Torch-free unless a measurement is needed (the first build on a machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .atomic import write_bytes
from .nst.runtime import torch_version
from .store import decode

CACHE_HOME_ENV = "COVERGEN_CACHE_HOME"
MACHINE_FILE = "machine.json"
CPU_BF16_GAIN = 1.5  # the engine's own threshold (nst.precision.CPU_BF16_GAIN; a test compares)


@dataclass(frozen=True)
class CpuPrecision:
    """What was measured on this machine's CPU, and the choice it gives."""

    choice: Literal["bf16", "fp32"]
    speedup: float  # fp32's time over bf16's, for one VGG-like convolution
    cpu: str  # the CPU and build it was measured on (cpu_identity)
    measured_at: float  # seconds since the epoch

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d", time.localtime(self.measured_at))
        return (
            f"{self.choice} (bf16 measured {self.speedup:.2f}x as fast as fp32 on this CPU on "
            f"{when}; bf16 from {CPU_BF16_GAIN}x)"
        )


def user_cache_dir() -> Path:
    """covergen's folder in the user's cache: $COVERGEN_CACHE_HOME, else
    $XDG_CACHE_HOME/covergen, else ~/.cache/covergen (~/Library/Caches on macOS)."""
    explicit = os.environ.get(CACHE_HOME_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return Path(xdg).expanduser() / "covergen"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "covergen"
    return Path.home() / ".cache" / "covergen"


def cpu_identity() -> str:
    """The CPU model and the torch build: what the bf16 measurement depends on."""
    model = platform.processor() or platform.machine()
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info,
    ):
        names = (line.partition(":")[2].strip() for line in info if line.startswith("model name"))
        model = next(names, model)
    torch_build = torch_version() or "none"
    return f"{model} | {platform.machine()} | {os.cpu_count()} cpus | torch {torch_build}"


def recorded_cpu_precision(home: Path | None = None) -> CpuPrecision | None:
    """This machine's recorded answer, or None (none yet, another CPU, or unreadable)."""
    path = (home or user_cache_dir()) / MACHINE_FILE
    try:
        data = json.loads(path.read_bytes())
        entry = data.get("cpu_precision") if isinstance(data, dict) else None
        if isinstance(entry, dict):  # fields a newer covergen adds are not ours to judge
            entry = {k: v for k, v in entry.items() if k in CpuPrecision.__dataclass_fields__}
        record = decode(CpuPrecision, entry, "cpu_precision.")
    except (OSError, ValueError):  # RecordError and a file that is not JSON are ValueErrors
        return None
    return record if record.cpu == cpu_identity() else None


def cpu_precision(home: Path | None = None, *, measure: bool = True) -> CpuPrecision | None:
    """This machine's answer: recorded, else measured now and recorded (``measure``);
    None when there is none and ``measure`` is False."""
    record = recorded_cpu_precision(home)
    if record is not None or not measure:
        return record
    from .nst.precision import cpu_bf16_speedup

    try:
        # The best of several rounds: the answer is kept, so it is worth a steady reading.
        speedup = cpu_bf16_speedup(repeats=5)
    except Exception:  # no bf16 kernels, an exotic build: fp32, as the engine decides
        speedup = 0.0
    record = CpuPrecision(
        choice="bf16" if speedup >= CPU_BF16_GAIN else "fp32",
        speedup=round(speedup, 3),
        cpu=cpu_identity(),
        measured_at=time.time(),
    )
    _keep(record, home or user_cache_dir())
    return record


def _keep(record: CpuPrecision, home: Path) -> None:
    path = home / MACHINE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data["cpu_precision"] = asdict(record)
    # An unwritable cache folder: measured again next time, nothing else lost.
    with contextlib.suppress(OSError):
        write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")


def resolve_precision(
    requested: str, device_kind: str, *, measure: bool = True, home: Path | None = None
) -> str:
    """The precision jobs run in: the one asked for, or what ``auto`` means here (tf32 on
    CUDA, fp32 on Apple's GPUs, this machine's recorded CPU answer on a CPU). Without a
    recorded answer and with ``measure`` False (a dry run), fp32."""
    if requested != "auto":
        return requested
    if device_kind == "gpu":
        return "fp32" if sys.platform == "darwin" else "tf32"
    record = cpu_precision(home, measure=measure)
    return record.choice if record is not None else "fp32"
