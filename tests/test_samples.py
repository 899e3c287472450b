"""The shipped samples: every image credited, both sample catalogs valid, hard photos remade."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from covergen.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def test_every_sample_image_is_credited_and_every_credit_names_a_file():
    credits = yaml.safe_load((SAMPLES / "credits.yaml").read_text())
    images = {
        path.relative_to(SAMPLES).as_posix()
        for path in SAMPLES.rglob("*")
        # cache/: what building samples/hard.yaml keeps beside it (ignored by git)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.relative_to(SAMPLES).parts[0] != "cache"
    }
    assert images == set(credits)
    for name, entry in credits.items():
        assert entry["credit"] and entry["license"], name


@pytest.mark.parametrize("catalog", [ROOT / "catalog.yaml", SAMPLES / "hard.yaml"])
def test_the_sample_catalogs_are_valid_and_name_only_shipped_images(catalog: Path):
    loaded = load_catalog(catalog)
    assert loaded.pairs
    for pair in loaded.pairs:
        for ref in (pair.photo, pair.cover):
            assert (catalog.parent / ref.src).is_file(), ref.src


def test_the_hard_photos_are_what_their_script_makes():
    spec = importlib.util.spec_from_file_location(
        "make_hard_photos", SAMPLES / "make_hard_photos.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, made in (
        ("portrait.jpg", module.portrait_photo()),
        ("group.jpg", module.group_photo()[0]),
    ):
        shipped = np.asarray(Image.open(SAMPLES / "photos-hard" / name).convert("RGB"), np.float32)
        # JPEG at quality 92: the same picture within a little compression noise.
        assert shipped.shape == np.asarray(made).shape
        assert np.abs(shipped - np.asarray(made, np.float32)).mean() < 2.0, name
