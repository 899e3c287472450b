"""Shared fixtures: one engine per session (weights converted once), tiny test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covergen.nst import Engine, Runtime


@pytest.fixture(scope="session")
def _machine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("covergen-home")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, _machine_cache: Path) -> None:
    # Tests never touch the network: commands run offline (their --offline default).
    monkeypatch.setenv("COVERGEN_OFFLINE", "1")
    # One user cache folder for the session (this machine's precision answer, measured
    # once, as on a real machine), never the user's own.
    monkeypatch.setenv("COVERGEN_CACHE_HOME", str(_machine_cache))


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    # fp32: what `auto` picks on a CPU depends on the CPU (bf16 where it pays), and the
    # tests' measured thresholds should not.
    return Engine(
        Runtime(device="cpu", precision="fp32"),
        cache_dir=tmp_path_factory.mktemp("cache"),
        offline=True,
    )


def gradient_photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth colourful 'photo' with a bright blob, deterministic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = x / width
    g = y / height
    b = np.exp(
        -(((x - width * 0.6) / (width * 0.2)) ** 2 + ((y - height * 0.4) / (height * 0.2)) ** 2)
    )
    image = np.stack([r, g, 0.3 + 0.6 * b], axis=2) + rng.normal(0, 0.02, (height, width, 3))
    return Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8))


def stripe_cover(size: int = 64, colour=(220, 30, 30)) -> Image.Image:
    """A bold striped 'cover'."""
    image = np.full((size, size, 3), 240, np.uint8)
    for i in range(0, size, 8):
        image[i : i + 3, :] = colour
        image[:, (i * 2) % size : (i * 2) % size + 2] = (20, 20, 20)
    return Image.fromarray(image)


CATALOG = """\
# a tiny catalog for tests
defaults:
  size: 32
  scales: 1
  iterations: 3
  tolerance: 0
  content_weight: 1       # fixed: these tests are about the pipeline, not the judge
  protect_faces: false
pairs:
  - band: Alpha
    album: One
    photo: {src: photos/a.png, credit: A. Person}
    cover: covers/x.png
  - band: Beta
    album: Two
    photo: photos/b.png
    cover: covers/x.png
    overrides:
      content_weight: 2
  - band: Gamma
    album: Three
    photo: photos/c.png
    cover: covers/y.png
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny catalog (three pairs, 32 px, 3 iterations) with its photos and covers."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "covers").mkdir()
    for i, name in enumerate("abc"):
        gradient_photo(48, 40, seed=i).save(tmp_path / "photos" / f"{name}.png")
    stripe_cover(40).save(tmp_path / "covers" / "x.png")
    stripe_cover(40, colour=(20, 40, 200)).save(tmp_path / "covers" / "y.png")
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    return tmp_path


@pytest.fixture(scope="session")
def converted_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default network's weights, converted once; a test's cache links to them."""
    from support.builds import convert_weights

    return convert_weights(tmp_path_factory.mktemp("weights"))
