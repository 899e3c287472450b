"""A local Ray instance for a test module: 2 CPUs and 2 fake GPUs (this machine has none: the
actors see CUDA_VISIBLE_DEVICES but torch sees no CUDA, so they paint on the CPU)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]


@contextlib.contextmanager
def local_ray_instance() -> Iterator[None]:
    from covergen.executors.raycluster import start_local_ray

    with pytest.MonkeyPatch.context() as patch:
        # Workers unpickle the stand-in engine from support.engines, as a cluster's workers
        # import covergen: from their own path.
        path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        patch.setenv("PYTHONPATH", path)
        local = start_local_ray(num_cpus=2, num_gpus=2)
        try:
            yield
        finally:
            local.stop()
