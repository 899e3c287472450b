"""What ``precision: auto`` means on a device, and the measurement that decides it on a CPU;
the torch flags a run sets for its precision."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F


def effective_precision(precision: str, device: torch.device) -> str:
    """What ``auto`` means on a device: tf32 on CUDA; on a CPU bf16 where it measurably pays
    (``cpu_bf16_pays``), else fp32; fp32 elsewhere (see Runtime)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "tf32"
    return "bf16" if device.type == "cpu" and cpu_bf16_pays() else "fp32"


# `precision: auto` on a CPU. Where oneDNN has fast bf16 kernels (AMX), the network runs about
# 2.6 times as fast under bf16 autocast, with the same judged quality; on another machine
# whose CPU reported the same flags, bf16 ran many times slower than fp32
# (docs/benchmarks.md). The flags do not tell, so it is measured.
CPU_BF16_GAIN = 1.5

_cpu_bf16: bool | None = None  # the measurement's answer, once per process

_cpu_bf16_lock = threading.Lock()


def cpu_bf16_pays() -> bool:
    """Whether bf16 autocast runs a convolution like VGG's at least CPU_BF16_GAIN times as
    fast as fp32 on this CPU, forward and backward (measured once per process; a CPU or
    build where the measurement fails gets fp32)."""
    global _cpu_bf16
    with _cpu_bf16_lock:
        if _cpu_bf16 is None:
            try:
                _cpu_bf16 = cpu_bf16_speedup() >= CPU_BF16_GAIN
            except Exception:  # no bf16 kernels, out of memory, an exotic build: fp32
                _cpu_bf16 = False
        return _cpu_bf16


def cpu_bf16_speedup(repeats: int = 3) -> float:
    """fp32's seconds over bf16's for one 256-channel 3x3 convolution and ReLU at 48x48
    (VGG's third block), forward and backward to the input, each laid out as the engine
    lays it out (fp32 contiguous, bf16 channels-last); the best of ``repeats`` after one
    warm-up. About 0.1 s; 3.3 where the whole network ran 2.6 times as fast."""
    if not torch.backends.mkldnn.is_available():
        return 0.0

    def seconds(bf16: bool, weight: torch.Tensor, image: torch.Tensor) -> float:
        x = image.contiguous(memory_format=torch.channels_last) if bf16 else image
        best = float("inf")
        for attempt in range(repeats + 1):
            start = time.perf_counter()
            x_ = x.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = F.relu(F.conv2d(x_, weight, padding=1))
            out.float().sum().backward()
            if attempt:  # the first builds the kernels
                best = min(best, time.perf_counter() - start)
        return best

    # Tensors made inside: ones made under a caller's inference mode could not be saved
    # for the backward pass.
    with torch.inference_mode(False), torch.enable_grad():
        generator = torch.Generator().manual_seed(0)  # torch's global generator untouched
        weight = torch.randn(256, 256, 3, 3, generator=generator) / 48
        image = torch.randn(1, 256, 48, 48, generator=generator)
        return seconds(False, weight, image) / seconds(True, weight, image)


@contextlib.contextmanager
def precision_flags(device: torch.device, precision: str) -> Iterator[None]:
    """Apply TF32 / bf16 settings for the duration of a run, restoring torch's flags after."""
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision in ("auto", "tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
