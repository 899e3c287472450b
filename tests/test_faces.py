"""Tests for covergen.nst.faces: the MTCNN cascade on real photos, NMS, weights, weight map.

The facenet-pytorch 2.6.0 package (its weight files, never its code) is required:
``pip install --no-deps facenet-pytorch==2.6.0``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gradient_photo
from PIL import Image

from covergen.nst import weightsources as W
from covergen.nst.errors import ParameterError, WeightsError
from covergen.nst.faces import (
    FACE_WEIGHTS,
    FaceBox,
    FaceDetector,
    face_weight_map,
    non_max_suppression,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PHOTOS = SAMPLES / "photos"

# The sample photos' faces drawn by hand, and the group photo the hard pairs use (six of those
# faces): one copy, in the script that makes samples/photos-hard/.
_spec = importlib.util.spec_from_file_location("make_hard_photos", SAMPLES / "make_hard_photos.py")
hard_photos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hard_photos)
KNOWN_FACES = hard_photos.KNOWN_FACES
group_photo = hard_photos.group_photo


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union


def in_pixels(face: FaceBox, size: tuple[int, int]) -> tuple[float, float, float, float]:
    width, height = size
    return face.left * width, face.top * height, face.right * width, face.bottom * height


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize("name", sorted(KNOWN_FACES))
def test_finds_the_face_in_each_sample_photo(detector: FaceDetector, name: str) -> None:
    image = Image.open(PHOTOS / name)  # camera.png is greyscale: converted on the way in
    found = detector.detect(image)
    assert len(found) == 1
    face = found[0]
    assert iou(in_pixels(face, image.size), KNOWN_FACES[name]) > 0.5
    assert 0.9 < face.score <= 1
    assert 0 <= face.left < face.right <= 1 and 0 <= face.top < face.bottom <= 1


def test_landmarks_sit_on_the_face(detector: FaceDetector) -> None:
    (face,) = detector.detect(Image.open(PHOTOS / "astronaut.jpg"))
    assert len(face.landmarks) == 5
    (eye_a, eye_b, nose, mouth_a, mouth_b) = face.landmarks
    for x, y in face.landmarks:
        assert face.left < x < face.right and face.top < y < face.bottom
    assert eye_a[0] < nose[0] < eye_b[0] and mouth_a[0] < mouth_b[0]
    assert max(eye_a[1], eye_b[1]) < nose[1] < min(mouth_a[1], mouth_b[1])


def test_finds_every_face_of_a_group_photo_and_nothing_else(detector: FaceDetector) -> None:
    image, known = group_photo()
    found = detector.detect(image)
    assert len(found) == len(known) == 6
    assert [f.score for f in found] == sorted((f.score for f in found), reverse=True)
    for box in known:
        overlaps = [iou(in_pixels(face, image.size), box) for face in found]
        assert max(overlaps) > 0.5, f"no face found at {box}: best IoU {max(overlaps):.2f}"
    # Each detection matches a different face.
    matches = {max(range(6), key=lambda i: iou(in_pixels(f, image.size), known[i])) for f in found}
    assert matches == set(range(6))


def test_boxes_are_fractions_that_do_not_depend_on_resolution(detector: FaceDetector) -> None:
    image = Image.open(PHOTOS / "grace_hopper.jpg")
    small = detector.detect(image)
    large = detector.detect(image.resize((1024, 1200), Image.Resampling.LANCZOS))
    assert len(small) == len(large) == 1
    assert iou(in_pixels(small[0], (1, 1)), in_pixels(large[0], (1, 1))) > 0.8


def test_detection_is_deterministic(detector: FaceDetector) -> None:
    image, _ = group_photo()
    assert detector.detect(image) == detector.detect(image)


def test_restores_torch_thread_count(detector: FaceDetector) -> None:
    before = torch.get_num_threads()
    detector.detect(gradient_photo(64, 48))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "name",
    ["gradient", "grey", "tiny", *sorted(p.name for p in (SAMPLES / "covers").glob("*.png"))],
)
def test_finds_no_face_where_there_is_none(detector: FaceDetector, name: str) -> None:
    if name == "gradient":
        image = gradient_photo(512, 384)
    elif name == "grey":
        image = Image.new("RGB", (300, 200), (128, 128, 128))
    elif name == "tiny":
        image = Image.new("RGB", (8, 8), (200, 160, 140))  # smaller than P-Net's window
    else:
        image = Image.open(SAMPLES / "covers" / name)
    assert detector.detect(image) == []


def test_rejects_unusable_settings() -> None:
    with pytest.raises(ParameterError, match="min_face"):
        FaceDetector(min_face=0)
    with pytest.raises(ParameterError, match="thresholds"):
        FaceDetector(thresholds=(0.6, 0.7, 1.2))
    with pytest.raises(ParameterError, match="factor"):
        FaceDetector(factor=1.0)


# ----------------------------------------------------------------------------- NMS


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # A
            [1, 1, 11, 11],  # B: IoU with A 81/119 = 0.68
            [20, 20, 30, 30],  # C: apart
            [2, 2, 8, 8],  # D: inside A, IoU 0.36, but all of it is inside A
        ],
        dtype=float,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert non_max_suppression(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert non_max_suppression(boxes, scores, 0.7).tolist() == [3, 0, 1, 2]
    # Over the smaller box, D covers A and B entirely: only D and C survive.
    assert non_max_suppression(boxes, scores, 0.5, mode="min").tolist() == [3, 2]


def test_nms_edge_cases() -> None:
    square = [0.0, 0.0, 10.0, 10.0]
    # An overlap equal to the threshold is not "more than" it: both stay.
    half = np.array([square, [0.0, 0.0, 10.0, 5.0]])
    assert non_max_suppression(half, [0.9, 0.8], 0.5).tolist() == [0, 1]
    # Equal scores keep their input order; identical boxes suppress each other.
    assert non_max_suppression(np.array([square, square]), [0.5, 0.5], 0.5).tolist() == [0]
    assert non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    # A degenerate box neither suppresses nor is suppressed.
    flat = np.array([square, [5.0, 5.0, 5.0, 9.0]])
    assert non_max_suppression(flat, [0.9, 0.8], 0.1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="mode"):
        non_max_suppression(half, [0.9, 0.8], 0.5, mode="max")


# ----------------------------------------------------------------------------- weights


def test_pinned_digests_match_the_installed_package() -> None:
    for file in FACE_WEIGHTS:
        path = W.locate_package_file(file.distribution, file.member)
        assert path is not None, f"{file.install} is needed to run these tests"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == file.sha256


def test_damaged_weights_are_refused_before_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_locate = W.locate_package_file
    target = FACE_WEIGHTS[1]  # R-Net: P-Net loads first and must not mask the failure
    original = real_locate(target.distribution, target.member)
    assert original is not None
    tampered = tmp_path / "rnet.pt"
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))

    def locate(distribution: str, member: str) -> Path | None:
        return tampered if member == target.member else real_locate(distribution, member)

    loaded: list[object] = []
    real_load = torch.load

    def recording_load(source: object, *args: object, **kwargs: object) -> object:
        loaded.append(source)
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(W, "locate_package_file", locate)
    monkeypatch.setattr(torch, "load", recording_load)
    with pytest.raises(WeightsError) as caught:
        FaceDetector()
    message = str(caught.value)
    assert "facenet-pytorch 2.6.0" in message and str(tampered) in message
    assert "pip install --force-reinstall --no-deps facenet-pytorch==2.6.0" in message
    assert len(loaded) == 1  # P-Net only: the tampered bytes were never unpickled


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "locate_package_file", lambda distribution, member: None)
    monkeypatch.setattr(W, "installed_version", lambda distribution: None)
    with pytest.raises(WeightsError) as caught:
        FaceDetector()
    message = str(caught.value)
    assert "facenet-pytorch" in message and "not installed" in message
    assert "pip install --no-deps facenet-pytorch==2.6.0" in message


# ----------------------------------------------------------------------------- weight map


def box(left: float, top: float, right: float, bottom: float) -> FaceBox:
    return FaceBox(left, top, right, bottom, score=0.99)


def at(weights: torch.Tensor, x: float, y: float) -> float:
    """The map's value at the pixel holding the point (x, y), in fractions of the image."""
    _, _, height, width = weights.shape
    return float(weights[0, 0, int(y * height), int(x * width)])


def test_weight_map_is_one_away_from_faces_and_factor_inside() -> None:
    face = box(0.4, 0.3, 0.6, 0.6)
    weights = face_weight_map([face], 200, 100, 5.0)
    assert weights.shape == (1, 1, 100, 200) and weights.dtype == torch.float32
    assert at(weights, 0.5, 0.45) == pytest.approx(5.0)  # the box centre
    assert at(weights, 0.02, 0.02) == 1.0 and at(weights, 0.95, 0.9) == 1.0
    assert float(weights.min()) == 1.0 and float(weights.max()) == pytest.approx(5.0)
    # Slightly larger than the box: hair above it, ears beside it, the chin's edge below.
    assert at(weights, 0.5, 0.27) > 1.0 and at(weights, 0.41, 0.45) > 1.0
    assert at(weights, 0.5, 0.6) > 1.0
    # Smooth: no step between neighbouring pixels larger than a fraction of the range.
    steps = weights.diff(dim=3).abs().max()
    assert float(steps) < 0.5 * (5.0 - 1.0)


def test_weight_map_of_overlapping_faces_takes_the_max() -> None:
    a, b = box(0.2, 0.2, 0.5, 0.6), box(0.4, 0.3, 0.7, 0.7)
    both = face_weight_map([a, b], 120, 90, 3.0)
    alone = torch.maximum(face_weight_map([a], 120, 90, 3.0), face_weight_map([b], 120, 90, 3.0))
    assert torch.equal(both, alone)
    assert float(both.max()) == pytest.approx(3.0)


def test_weight_map_mean_cap_lowers_the_factor_only_when_faces_fill_the_frame() -> None:
    small, filling = box(0.45, 0.4, 0.55, 0.5), box(0.05, 0.05, 0.95, 0.95)
    assert torch.equal(
        face_weight_map([small], 100, 100, 10.0, mean_at_most=2.0),
        face_weight_map([small], 100, 100, 10.0),
    )
    capped = face_weight_map([filling], 100, 100, 10.0, mean_at_most=2.0)
    assert float(face_weight_map([filling], 100, 100, 10.0).mean()) > 5
    assert float(capped.mean()) == pytest.approx(2.0, abs=1e-4)
    assert 1 < float(capped.max()) < 10 and float(capped.min()) == 1.0


def test_weight_map_without_faces_and_bad_factor() -> None:
    assert torch.equal(face_weight_map([], 16, 9, 4.0), torch.ones(1, 1, 9, 16))
    with pytest.raises(ParameterError):
        face_weight_map([], 16, 9, float("nan"))
    with pytest.raises(ParameterError):
        face_weight_map([], 0, 9, 2.0)


def test_weight_map_of_detected_faces_covers_them(detector: FaceDetector) -> None:
    image = Image.open(PHOTOS / "astronaut.jpg")
    found = detector.detect(image)
    weights = face_weight_map(found, 128, 128, 4.0)
    left, top, right, bottom = (round(v / 4) for v in KNOWN_FACES["astronaut.jpg"])
    assert float(weights[0, 0, (top + bottom) // 2, (left + right) // 2]) == pytest.approx(4.0)
    assert float(weights[0, 0, 120, 10]) == 1.0  # the flag, far from the face


@pytest.mark.parametrize(("name", "count"), [("portrait.jpg", 1), ("group.jpg", 6)])
def test_finds_the_faces_of_the_hard_sample_photos(
    detector: FaceDetector, name: str, count: int
) -> None:
    assert len(detector.detect(Image.open(SAMPLES / "photos-hard" / name))) == count
