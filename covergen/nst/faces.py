"""Face detection for face protection: a self-contained MTCNN cascade (Zhang et al., 2016).

The engine raises the content weight inside faces (``face_weight_map``) so that band members
stay recognisable under a heavy style. Faces come from the three-stage MTCNN cascade:

1. P-Net, fully convolutional, scores every 12×12 window of an image pyramid and proposes
   boxes;
2. R-Net rejects most proposals from 24×24 crops and refines the rest;
3. O-Net scores 48×48 crops, refines the boxes once more and places five landmarks.

Written here rather than taken from a library because the field's packages pin old torch,
numpy and Pillow releases and pull in torchvision; we need only the arithmetic. The trained
weights are the three state dicts shipped inside the facenet-pytorch 2.6.0 wheel, located
through its installed metadata, checked against pinned SHA-256 digests and decoded with
torch's weights-only loader; the package's code is never imported.

Detection runs on a copy whose long side is at most ``max_side`` pixels, so its cost is
bounded whatever the photo's size; boxes come back as fractions of the image, which hold at
any resolution. With the default settings the boxes are a function of the image's pixels (up to
floating-point differences between machines), versioned by
``params.FACE_DETECTOR_VERSION``, so they may be cached by the image's content hash.
"""

from __future__ import annotations

import contextlib
import io
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .errors import ParameterError, WeightsError
from .imaging import fit_long_side, resized, to_rgb
from .weightsources import PackagedFile


@dataclass(frozen=True)
class FaceWeightsFile(PackagedFile):
    """One MTCNN stage's state dict in a pinned PyPI distribution."""

    stage: str  # pnet | rnet | onet


# facenet-pytorch is MIT-licensed; its MTCNN parameters were ported from David Sandberg's
# TensorFlow facenet, itself a port of the paper authors' Caffe models. The digests equal the
# wheel's RECORD entries (urlsafe base64) converted to hex.
FACE_WEIGHTS = tuple(
    FaceWeightsFile(
        stage=stage,
        distribution="facenet-pytorch",
        version="2.6.0",
        member=f"facenet_pytorch/data/{stage}.pt",
        sha256=sha256,
    )
    for stage, sha256 in (
        ("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
        ("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
        ("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
    )
)

# The soft ellipse of face_weight_map, in units of the box: MTCNN boxes run from the brows to
# the chin and between the cheeks, so the protected area grows past them to take in hair, ears
# and the jaw line, and its centre moves up because there is more hair above than chin below.
_ELLIPSE_GROW_X = 1.3  # ellipse width / box width
_ELLIPSE_GROW_Y = 1.45  # ellipse height / box height
_ELLIPSE_LIFT = 0.1  # upward shift of the centre, in box heights
_ELLIPSE_CORE = 0.6  # normalised radius inside which the full factor applies

_PNET_CELL = 12  # P-Net's window, in pixels of a pyramid level
_PNET_STRIDE = 2  # P-Net's output step, in pixels of a pyramid level
_BATCH = 256  # crops per R-Net/O-Net forward pass: bounds memory on crowded images


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box edges as fractions (0..1) of the image's width and height.

    ``score`` is O-Net's face probability. ``landmarks`` are five (x, y) fractions: the eye
    on the image's left, the other eye, the nose tip, the mouth corner on the image's left,
    the other mouth corner.
    """

    left: float
    top: float
    right: float
    bottom: float
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()


# ----------------------------------------------------------------------------- networks


class _Stage(nn.Module):
    """One MTCNN network: conv blocks (conv, PReLU, max-pool), an optional dense block, heads.

    Modules carry the names of the trained state dicts (conv1, prelu1, pool1, ..., dense5,
    prelu5, dense6_1): block n holds layer n, the heads are layer n+1's _1, _2, _3. Without a
    dense block the heads are 1×1 convolutions, so the network is fully convolutional.
    """

    def __init__(
        self, convs: Sequence[tuple[int, int, int]], dense: int, heads: Sequence[int]
    ) -> None:
        """``convs``: (out channels, kernel, pool kernel or 0) per conv block; ``dense``: the
        dense block's width (0: none); ``heads``: each head's outputs, the face logits first."""
        super().__init__()
        self._trunk: list[str] = []
        channels = 3
        for n, (out, kernel, pool) in enumerate(convs, start=1):
            self._add(f"conv{n}", nn.Conv2d(channels, out, kernel_size=kernel))
            self._add(f"prelu{n}", nn.PReLU(out))
            if pool:
                self._add(f"pool{n}", nn.MaxPool2d(pool, 2, ceil_mode=True))
            channels = out
        n = len(convs) + 1
        if dense:
            # The crops reach the dense block as 3×3 maps.
            self._add(f"dense{n}", nn.Linear(3 * 3 * channels, dense))
            self._add(f"prelu{n}", nn.PReLU(dense))
            channels, n = dense, n + 1
        head = nn.Linear if dense else partial(nn.Conv2d, kernel_size=1)
        self._heads = [f"{'dense' if dense else 'conv'}{n}_{k}" for k in range(1, len(heads) + 1)]
        for name, outputs in zip(self._heads, heads, strict=True):
            self.add_module(name, head(channels, outputs))

    def _add(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self._trunk.append(name)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalised images -> face probabilities, box offsets (and landmarks)."""
        for name in self._trunk:
            if name.startswith("dense"):
                # The dense layers were trained on features flattened as (width, height,
                # channel): the original Caffe models saw transposed images.
                x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
            x = getattr(self, name)(x)
        logits, *rest = (getattr(self, name)(x) for name in self._heads)
        return logits.softmax(dim=1)[:, 1], *rest


class PNet(_Stage):
    """Proposal network: face probability and box offsets for every 12×12 window, stride 2:
    (N, 3, H, W) images -> probabilities (N, H', W'), offsets (N, 4, H', W')."""

    def __init__(self) -> None:
        super().__init__(((10, 3, 2), (16, 3, 0), (32, 3, 0)), 0, (2, 4))


class RNet(_Stage):
    """Refinement network: (N, 3, 24, 24) crops -> probabilities (N,), box offsets (N, 4)."""

    def __init__(self) -> None:
        super().__init__(((28, 3, 3), (48, 3, 3), (64, 2, 0)), 128, (2, 4))


class ONet(_Stage):
    """Output network: (N, 3, 48, 48) crops -> probabilities (N,), box offsets (N, 4) and
    landmarks (N, 10: five x then five y, as fractions of the crop)."""

    def __init__(self) -> None:
        super().__init__(((32, 3, 3), (64, 3, 3), (64, 3, 2), (128, 2, 0)), 256, (2, 4, 10))


# ----------------------------------------------------------------------------- weights


def load_face_weights(file: FaceWeightsFile) -> dict[str, torch.Tensor]:
    """One stage's state dict from the pinned package, verified by SHA-256 before decoding.

    Raises WeightsError naming the package and the pip command that fixes it when the package
    or file is missing, unreadable, altered or not a torch file.
    """
    path, data = file.installed("the face detector")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"{path} from the {file.label} is not a loadable torch file: {exc}; "
            f"run: {file.reinstall}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path} from the {file.label} is not a state dict; run: {file.reinstall}"
        )
    return state


# ----------------------------------------------------------------------------- box arithmetic


def non_max_suppression(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, *, mode: str = "union"
) -> np.ndarray:
    """Indices of the boxes to keep, best score first, greedily dropping overlapping ones.

    ``boxes`` is (N, 4) as x1, y1, x2, y2. A box is dropped when its overlap with a kept,
    higher-scoring box exceeds ``threshold``; overlap is intersection over union (``"union"``)
    or over the smaller box's area (``"min"``, which also drops a box nested in another).
    Equal scores keep their input order, so the result is deterministic.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"unknown overlap mode {mode!r}: use union or min")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    # The loop runs once per kept box, over the boxes still in play: a textured photo sends
    # thousands of P-Net windows through here, so it avoids np.clip and divisions (slow on
    # small arrays) and compares overlap with threshold × denominator instead of a ratio.
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        height = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        overlap = width * height
        if mode == "union":
            denominator = areas[best] + areas[rest] - overlap
        else:
            denominator = np.minimum(areas[best], areas[rest])
        order = rest[overlap <= threshold * denominator]
    return np.asarray(keep, dtype=np.intp)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each edge by its offset, in units of the box's width or height."""
    width = (boxes[:, 2] - boxes[:, 0])[:, None]
    height = (boxes[:, 3] - boxes[:, 1])[:, None]
    scale = np.concatenate([width, height, width, height], axis=1)
    return boxes[:, :4] + offsets * scale


def _squared(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres, on whole pixels: the next stage's crops."""
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    x1 = np.round(centre_x - side / 2)
    y1 = np.round(centre_y - side / 2)
    side = np.maximum(np.round(side), 1)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _crops(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """(N, 3, size, size) crops of whole-pixel square boxes; parts outside the image are black.

    Black padding is what the networks were trained with on faces cut by the image edge.
    Crops shrink by area averaging, as in the original training (OpenCV's INTER_AREA), and
    grow bilinearly; both are far cheaper per call than antialiased interpolation, and a
    textured image can send over a thousand boxes through here.
    """
    _, _, height, width = image.shape
    crops = []
    for x1, y1, x2, y2 in boxes.astype(np.int64).tolist():
        left, top, right, bottom = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if (left, top, right, bottom) == (x1, y1, x2, y2):
            patch = image[:, :, y1:y2, x1:x2]
        else:
            patch = image.new_zeros((1, 3, y2 - y1, x2 - x1))
            if right > left and bottom > top:
                patch[:, :, top - y1 : bottom - y1, left - x1 : right - x1] = image[
                    :, :, top:bottom, left:right
                ]
        if min(patch.shape[2:]) >= size:
            crops.append(F.adaptive_avg_pool2d(patch, size))
        else:
            crops.append(F.interpolate(patch, size=(size, size), mode="bilinear"))
    return torch.cat(crops)


def _network_input(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 pixels to the -1..1 range the networks were trained on, stored channels-last.

    Channels-last because torch's CPU max-pooling and convolutions run these small layers
    about three times faster in that layout (measured: R-Net on 256 crops 46 -> 15 ms).
    """
    return ((pixels - 127.5) * (1 / 128)).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- detector


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch's CPU kernels on one thread for the duration, restoring the count after.

    The networks are tiny: their convolutions last microseconds, so worker threads only add
    synchronisation, and on a busy machine (another job, another worker) OpenMP's waiting
    threads make detection ten times slower (measured: 0.08 s on one thread, over 1 s on two
    with the second core busy). torch's thread count is process-wide: do not detect while
    another thread of the process runs torch on the CPU.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FaceDetector:
    """The MTCNN cascade with its weights loaded once; ``detect`` finds faces in PIL images.

    ``min_face``: the smallest face looked for, as a fraction of the image's short side (never
    below 12 pixels of the detection copy). ``thresholds``: the face probability each stage
    (P-Net, R-Net, O-Net) requires. ``factor``: the ratio between pyramid levels.
    ``max_side``: the long side of the copy detection runs on. Raises WeightsError when the
    weights are missing or damaged, ParameterError for unusable settings.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        min_face: float = 0.04,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_side: int = 640,
    ):
        if not 0 < min_face <= 1:
            raise ParameterError("min_face", f"{min_face} is not in (0, 1]", "try 0.04")
        if len(thresholds) != 3 or not all(0 <= t < 1 for t in thresholds):
            raise ParameterError(
                "thresholds",
                f"{thresholds} are not three probabilities below 1",
                "try 0.6, 0.7, 0.7",
            )
        if not 0.1 <= factor < 0.95:
            raise ParameterError("factor", f"{factor} is not in [0.1, 0.95)", "try 0.709")
        if max_side < _PNET_CELL:
            raise ParameterError("max_side", f"{max_side} is below {_PNET_CELL}", "try 640")
        self.device = torch.device(device)
        self.min_face = min_face
        self.thresholds = tuple(thresholds)
        self.factor = factor
        self.max_side = max_side
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for file in FACE_WEIGHTS:
            state = load_face_weights(file)
            try:
                getattr(self, file.stage).load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise WeightsError(
                    f"{file.member} from the {file.label} does not fit MTCNN's "
                    f"{file.stage}: {str(exc).splitlines()[0]}; run: {file.reinstall}"
                ) from exc
        for network in (self.pnet, self.rnet, self.onet):
            network.requires_grad_(False).eval().to(self.device)

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """The faces in an image, highest score first; an empty list when there are none."""
        with _one_cpu_thread(self.device), torch.inference_mode():
            return self._detect(image)

    def _detect(self, image: Image.Image) -> list[FaceBox]:
        rgb = to_rgb(image)
        if max(rgb.size) > self.max_side:
            rgb = resized(rgb, fit_long_side(*rgb.size, self.max_side))
        width, height = rgb.size
        if min(width, height) < _PNET_CELL:
            return []
        array = np.asarray(rgb, dtype=np.float32)
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).to(self.device)

        boxes = self._propose(pixels)
        if len(boxes):
            boxes = self._refine(pixels, boxes)
        if not len(boxes):
            return []
        boxes, scores, landmarks = self._finish(pixels, boxes)

        faces = []
        for box, score, points in zip(boxes, scores, landmarks, strict=True):
            left, right = np.clip(box[[0, 2]] / width, 0, 1)
            top, bottom = np.clip(box[[1, 3]] / height, 0, 1)
            if right <= left or bottom <= top:
                continue
            marks = tuple(
                (float(np.clip(x / width, 0, 1)), float(np.clip(y / height, 0, 1)))
                for x, y in zip(points[:5], points[5:], strict=True)
            )
            faces.append(
                FaceBox(float(left), float(top), float(right), float(bottom), float(score), marks)
            )
        return sorted(faces, key=lambda face: -face.score)

    def _scales(self, width: int, height: int) -> list[float]:
        """Pyramid scales: the smallest face to find maps to P-Net's 12-pixel window first."""
        smallest = max(float(_PNET_CELL), self.min_face * min(width, height))
        scale = _PNET_CELL / smallest
        scales = []
        while min(width, height) * scale >= _PNET_CELL:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _propose(self, pixels: torch.Tensor) -> np.ndarray:
        """Stage 1: (N, 4) squared candidate boxes from P-Net over the image pyramid."""
        _, _, height, width = pixels.shape
        found = []
        for scale in self._scales(width, height):
            size = tuple(max(_PNET_CELL, math.ceil(side * scale)) for side in (height, width))
            level = F.interpolate(pixels, size=size, mode="bilinear", antialias=True)
            probability, offsets = self.pnet(_network_input(level))
            probability, offsets = probability[0].cpu().numpy(), offsets[0].cpu().numpy()
            rows, cols = np.nonzero(probability >= self.thresholds[0])
            if not len(rows):
                continue
            # The level's true scale per axis: its size was rounded up to whole pixels.
            level_scale = np.array([size[1] / width, size[0] / height] * 2)
            left, top = cols * _PNET_STRIDE, rows * _PNET_STRIDE
            windows = (
                np.stack([left, top, left + _PNET_CELL, top + _PNET_CELL], axis=1) / level_scale
            )
            scores = probability[rows, cols]
            keep = non_max_suppression(windows, scores, 0.5)
            found.append(
                np.concatenate(
                    [windows[keep], scores[keep, None], offsets[:, rows[keep], cols[keep]].T],
                    axis=1,
                )
            )
        if not found:
            return np.zeros((0, 4))
        candidates = np.concatenate(found)
        candidates = candidates[non_max_suppression(candidates[:, :4], candidates[:, 4], 0.7)]
        return _squared(_regress(candidates[:, :4], candidates[:, 5:9]))

    def _refine(self, pixels: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net keeps and refines the candidates it believes; (M, 4) squared boxes."""
        probability, offsets = self._run(self.rnet, pixels, boxes, 24)
        keep = probability >= self.thresholds[1]
        boxes, probability, offsets = boxes[keep], probability[keep], offsets[keep]
        if not len(boxes):
            return np.zeros((0, 4))
        keep = non_max_suppression(boxes, probability, 0.7)
        return _squared(_regress(boxes[keep], offsets[keep]))

    def _finish(
        self, pixels: torch.Tensor, boxes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: O-Net's final boxes (K, 4), scores (K,) and landmarks (K, 10), in pixels."""
        probability, offsets, marks = self._run(self.onet, pixels, boxes, 48)
        keep = probability >= self.thresholds[2]
        boxes, probability, offsets, marks = (a[keep] for a in (boxes, probability, offsets, marks))
        width, height = boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]
        landmarks = np.concatenate(
            [boxes[:, 0:1] + marks[:, :5] * width, boxes[:, 1:2] + marks[:, 5:] * height], axis=1
        )
        boxes = _regress(boxes, offsets)
        # "min": a box inside a bigger one (a face's half, found at another scale) is dropped too.
        keep = non_max_suppression(boxes, probability, 0.7, mode="min")
        return boxes[keep], probability[keep], landmarks[keep]

    def _run(
        self, network: nn.Module, pixels: torch.Tensor, boxes: np.ndarray, size: int
    ) -> tuple[np.ndarray, ...]:
        """Run R-Net or O-Net on the boxes' crops in bounded batches; outputs as numpy arrays."""
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(boxes), _BATCH):
            crops = _crops(pixels, boxes[start : start + _BATCH], size)
            parts.append([out.cpu().numpy() for out in network(_network_input(crops))])
        return tuple(np.concatenate(outputs) for outputs in zip(*parts, strict=True))


# ----------------------------------------------------------------------------- weight map


def face_weight_map(
    boxes: Sequence[FaceBox],
    width: int,
    height: int,
    factor: float,
    mean_at_most: float | None = None,
) -> torch.Tensor:
    """A (1, 1, height, width) float32 multiplier: 1 away from faces, ``factor`` inside them.

    Each face contributes a soft ellipse a little larger than its box (hair, ears and chin
    included): ``factor`` in its core, easing smoothly to 1 at its rim. Where faces overlap,
    the strongest effect wins. Boxes are fractions, so any resolution of the image works.

    ``mean_at_most`` caps the map's mean: when faces fill much of the frame (a close portrait)
    the factor is lowered until the mean is the cap. Protection weighs faces against the rest
    of the picture; a map that is high nearly everywhere would only scale the content weight
    as a whole, which is the content weight's job.
    """
    if width < 1 or height < 1:
        raise ParameterError("size", f"{width}×{height} is not an image size", "use at least 1×1")
    if not (math.isfinite(factor) and factor > 0):
        raise ParameterError("face_factor", f"{factor} is not a positive number", "try 4")
    strength = np.zeros((height, width))
    for box in boxes:
        box_width, box_height = box.right - box.left, box.bottom - box.top
        # Half a pixel at least, so a sliver of a box still marks its pixels.
        radius_x = max(box_width * _ELLIPSE_GROW_X / 2, 0.5 / width)
        radius_y = max(box_height * _ELLIPSE_GROW_Y / 2, 0.5 / height)
        centre_x = (box.left + box.right) / 2
        centre_y = (box.top + box.bottom) / 2 - _ELLIPSE_LIFT * box_height
        # Only the ellipse's bounding rectangle changes: faces are a small part of a photo.
        left = max(0, math.floor((centre_x - radius_x) * width))
        right = min(width, math.ceil((centre_x + radius_x) * width))
        top = max(0, math.floor((centre_y - radius_y) * height))
        bottom = min(height, math.ceil((centre_y + radius_y) * height))
        if right <= left or bottom <= top:
            continue
        xs = ((np.arange(left, right) + 0.5) / width - centre_x) / radius_x
        ys = ((np.arange(top, bottom) + 0.5) / height - centre_y) / radius_y
        distance = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
        ramp = np.clip((1 - distance) / (1 - _ELLIPSE_CORE), 0, 1)
        window = strength[top:bottom, left:right]
        np.maximum(window, ramp * ramp * (3 - 2 * ramp), out=window)  # smoothstep
    raised = factor - 1
    if mean_at_most is not None and 1 + raised * strength.mean() > mean_at_most:
        raised = max(0.0, mean_at_most - 1) / strength.mean()
    weight = 1 + raised * strength
    return torch.from_numpy(weight.astype(np.float32)).view(1, 1, height, width)
