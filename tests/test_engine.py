"""The engine on real VGG weights and tiny images (32-64 px, few iterations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gradient_photo, stripe_cover
from PIL import Image

from covergen.nst import (
    Cancelled,
    Engine,
    ParameterError,
    Runtime,
    StyleParams,
    StylizeJob,
    StylizeResult,
    batch_signature,
    imaging,
)

# Fixed weight, no face detection: what these tests look at is the optimisation itself.
TINY = StyleParams(
    size=48, scales=1, iterations=12, tolerance=0, content_weight=1, protect_faces=False
)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


def test_optimisation_lowers_the_loss_and_keeps_the_size(engine: Engine):
    photo = gradient_photo(80, 60)
    result = engine.stylize(photo, stripe_cover(), TINY)
    assert result.image.size == (48, 36)
    assert result.iterations == 12
    totals = [h["total"] for h in result.history]
    assert totals[-1] < 0.7 * totals[0]
    assert result.history[0]["content"] == pytest.approx(0.0, abs=1e-6)  # starts at the photo
    assert result.history[-1]["style"] < result.history[0]["style"]


def test_same_seed_gives_identical_images_on_cpu(engine: Engine):
    params = TINY.replace(init="noise", seed=7, iterations=6)
    first = engine.stylize(gradient_photo(), stripe_cover(), params)
    second = engine.stylize(gradient_photo(), stripe_cover(), params)
    other = engine.stylize(gradient_photo(), stripe_cover(), params.replace(seed=8))
    assert np.array_equal(pixels(first.image), pixels(second.image))
    assert not np.array_equal(pixels(first.image), pixels(other.image))


@pytest.fixture(scope="module")
def exact_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """Double precision: batched and single convolutions then agree to ~1e-15, so the
    comparison below tests the optimisation's independence, not float32 rounding (which
    L-BFGS can amplify over many iterations)."""
    return Engine(
        Runtime(device="cpu", precision="fp64"), cache_dir=tmp_path_factory.mktemp("cache")
    )


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_batch_gives_the_images_of_running_each_job_alone(exact_engine: Engine, optimizer):
    base = TINY.replace(optimizer=optimizer, iterations=10, learning_rate=0.05)
    jobs = [
        StylizeJob(gradient_photo(seed=1), [stripe_cover()], base),
        StylizeJob(
            gradient_photo(seed=2),
            [stripe_cover(colour=(30, 60, 220))],
            base.replace(content_weight=4, style_layer_weights=(1, 1, 1, 0, 0)),
        ),
        # a different budget: this job is frozen while the others go on
        StylizeJob(gradient_photo(seed=3), [stripe_cover()], base.replace(iterations=5)),
    ]
    assert len({batch_signature(job) for job in jobs}) == 1
    together = exact_engine.stylize_batch(jobs)
    for job, batched in zip(jobs, together, strict=True):
        alone = exact_engine.stylize_batch([job])[0]
        assert batched.iterations == alone.iterations == job.params.iterations
        assert np.array_equal(pixels(batched.image), pixels(alone.image))
        for ours, theirs in zip(batched.history, alone.history, strict=True):
            assert ours["total"] == pytest.approx(theirs["total"], rel=1e-9)
    # The jobs really differ, so equality is not a matter of identical inputs.
    assert not np.array_equal(pixels(together[0].image), pixels(together[1].image))


def test_jobs_of_different_shapes_are_refused_in_one_batch(engine: Engine):
    jobs = [
        StylizeJob(gradient_photo(64, 48), [stripe_cover()], TINY),
        StylizeJob(gradient_photo(48, 64), [stripe_cover()], TINY),
    ]
    with pytest.raises(ParameterError, match="batch_signature"):
        engine.stylize_batch(jobs)


def test_multi_scale_runs_every_scale_and_reports_progress(engine: Engine):
    params = TINY.replace(size=64, scales=2, min_size=32, iterations=4, coarse_iterations=3)
    events = []
    result = engine.stylize(gradient_photo(), stripe_cover(), params, progress=events.append)
    assert [(e.scale, e.size) for e in events] == [(0, (32, 24))] * 3 + [(1, (64, 48))] * 4
    assert events[-1].iteration == events[-1].iterations == 4
    assert result.iterations == 7
    assert result.image.size == (64, 48)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_the_observer_sees_every_step_and_its_images(engine: Engine, optimizer: str):
    # What benchmarks use to watch quality over time: after every step, the step's event
    # and the images as they stand (Adam: the averaged iterate, which is what it returns).
    params = TINY.replace(size=64, scales=2, min_size=32, iterations=4, coarse_iterations=3)
    params = params.replace(optimizer=optimizer, learning_rate=0.05)
    seen = []
    engine.observer = lambda event, images: seen.append((event, images.clone()))
    try:
        result = engine.stylize(gradient_photo(), stripe_cover(), params)
    finally:
        engine.observer = None
    assert [(e.scale, e.size) for e, _ in seen] == [(0, (32, 24))] * 3 + [(1, (64, 48))] * 4
    for event, images in seen:
        assert images.shape == (1, 3, event.size[1], event.size[0])
        assert not images.requires_grad
    assert not torch.equal(seen[-2][1], seen[-1][1])  # each step's own images
    final = imaging.pil_to_tensor(result.image)
    assert (seen[-1][1].clamp(0, 1) - final).abs().max() < 2 / 255 + 1e-6  # what it returns


def test_early_stop_ends_a_scale_when_the_loss_stops_improving(engine: Engine):
    params = TINY.replace(iterations=400, tolerance=0.5, patience=3)
    result = engine.stylize(gradient_photo(), stripe_cover(), params)
    assert 3 < result.iterations < 400


def test_cancellation_raises_and_returns_nothing(engine: Engine):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        engine.stylize(gradient_photo(), stripe_cover(), TINY, cancel=cancel)


def test_luminance_transfer_keeps_the_photos_chrominance(engine: Engine):
    photo = gradient_photo(64, 48)
    params = TINY.replace(preserve_color="luminance", size=64)
    result = engine.stylize(photo, stripe_cover(colour=(20, 220, 40)), params)
    got = imaging.rgb_to_yiq(imaging.pil_to_tensor(result.image))
    want = imaging.rgb_to_yiq(imaging.pil_to_tensor(photo))
    # Same I and Q (up to 8-bit rounding and the odd clipped pixel) although Y changed.
    assert float((got[:, 1:] - want[:, 1:]).abs().mean()) < 0.01
    assert float((got[:, :1] - want[:, :1]).abs().mean()) > 0.01
    plain = engine.stylize(photo, stripe_cover(colour=(20, 220, 40)), TINY.replace(size=64))
    plain_iq = imaging.rgb_to_yiq(imaging.pil_to_tensor(plain.image))[:, 1:]
    assert float((plain_iq - want[:, 1:]).abs().mean()) > 0.02  # without it, colour moves


def test_histogram_matching_gives_the_cover_the_photos_palette():
    torch.manual_seed(0)
    cover = torch.rand(1, 3, 20, 20) * torch.tensor([1.0, 0.2, 0.1]).view(1, 3, 1, 1)
    photo = torch.rand(1, 3, 16, 24) * 0.5 + torch.tensor([0.1, 0.3, 0.4]).view(1, 3, 1, 1)
    matched = imaging.match_color_statistics(cover, photo)
    flat, ref = matched.reshape(3, -1).double(), photo.reshape(3, -1).double()
    torch.testing.assert_close(flat.mean(1), ref.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cov(flat), torch.cov(ref), rtol=1e-3, atol=1e-5)


def test_style_scale_blend_meancov_and_avg_pooling_run(engine: Engine):
    params = TINY.replace(
        style_loss="meancov", pooling="avg", style_scale=0.5, style_blend=(3, 1), iterations=5
    )
    covers = [stripe_cover(), stripe_cover(colour=(30, 60, 220))]
    result = engine.stylize(gradient_photo(), covers, params)
    assert result.history[-1]["total"] < result.history[0]["total"]
    with pytest.raises(ParameterError, match="style_blend"):
        engine.stylize(gradient_photo(), covers, TINY.replace(style_blend=(1, 1, 1)))


def test_blending_a_cover_with_itself_changes_nothing(engine: Engine):
    one = engine.stylize(gradient_photo(), stripe_cover(), TINY)
    two = engine.stylize(gradient_photo(), [stripe_cover(), stripe_cover()], TINY)
    np.testing.assert_allclose(pixels(one.image), pixels(two.image), atol=2 / 255)


def test_content_regions_keep_their_area_closer_to_the_photo(engine: Engine):
    photo = gradient_photo(64, 64)
    params = TINY.replace(size=64, style_weight=50, iterations=15)
    protected = params.replace(content_regions=((0.0, 0.0, 0.5, 1.0, 20.0),))
    base = pixels(engine.stylize(photo, stripe_cover(), params).image)
    kept = pixels(engine.stylize(photo, stripe_cover(), protected).image)
    original = pixels(photo)
    left = np.s_[:, 4:28]
    assert (
        np.abs(kept[left] - original[left]).mean()
        < 0.85 * np.abs(base[left] - original[left]).mean()
    )


def test_a_content_map_image_weights_pixels(engine: Engine):
    photo = gradient_photo(64, 64)
    black = Image.new("L", (64, 64), 0)
    params = TINY.replace(size=64, iterations=3)
    result = engine.stylize(photo, stripe_cover(), params, content_map=black)
    assert all(h["content"] == 0 for h in result.history)


def test_init_from_a_given_image_and_from_style(engine: Engine):
    start = Image.new("RGB", (64, 48), (200, 10, 10))
    params = TINY.replace(init="image", iterations=1)
    result = engine.stylize(gradient_photo(), stripe_cover(), params, init_image=start)
    assert result.history[0]["content"] > 0  # it did not start from the photo
    with pytest.raises(ParameterError, match="init"):
        engine.stylize(gradient_photo(), stripe_cover(), params)
    assert engine.stylize(gradient_photo(), stripe_cover(), TINY.replace(init="style")).iterations


def test_targets_are_computed_once_per_image_through_the_cache(tmp_path):
    class CountingCache(dict):
        puts = 0

        def put(self, key, value):
            self.puts += 1
            self[key] = value

    cache = CountingCache()
    engine = Engine(cache_dir=tmp_path, target_cache=cache)
    engine.stylize(gradient_photo(), stripe_cover(), TINY.replace(iterations=2))
    assert cache.puts == 2  # one content, one style target
    engine.stylize(gradient_photo(), stripe_cover(), TINY.replace(iterations=2, content_weight=9))
    assert cache.puts == 2  # new weights, same targets: nothing recomputed
    engine.stylize(gradient_photo(seed=5), stripe_cover(), TINY.replace(iterations=2))
    assert cache.puts == 3  # a new photo with the same cover: only the content target


def test_unknown_layers_and_devices_are_clear_errors(engine: Engine):
    with pytest.raises(ParameterError) as info:
        StyleParams(style_layers=("relu1_1", "relu6_1")).replace()
    assert info.value.errors[0].field == "style_layers"
    with pytest.raises(ParameterError, match="device"):
        Engine(Runtime(device="cuda:7"))


# ------------------------------------------------------------------ faces, auto, photo mode

SAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "samples"


def sample(name: str) -> Image.Image:
    return Image.open(SAMPLES / name).convert("RGB")


def test_faces_are_detected_protected_and_counted(engine: Engine):
    photo, cover = sample("photos/astronaut.jpg"), sample("covers/pulsar.png")
    params = TINY.replace(size=128, iterations=20, style_weight=30)
    plain = engine.stylize(photo, cover, params)
    protected = engine.stylize(photo, cover, params.replace(protect_faces=True, face_weight=8))
    assert "faces" not in plain.metrics and protected.metrics["faces"] == 1
    # The face's structure: its luminance correlated with the photo's (colour is the
    # cover's to change). The face's box at 128 px is from the detector's test.
    face = np.s_[16:44, 45:67]
    original = pixels(photo.convert("L").resize((128, 128)))[face].ravel()

    def likeness(result: StylizeResult) -> float:
        return float(np.corrcoef(pixels(result.image.convert("L"))[face].ravel(), original)[0, 1])

    # Measured: 0.28 plain, 0.44 with face_weight 8 (0.58 with 30).
    assert likeness(protected) > likeness(plain) + 0.08, (likeness(plain), likeness(protected))
    none = engine.stylize(sample("covers/knit.png"), cover, params.replace(protect_faces=True))
    assert none.metrics["faces"] == 0  # no face: painted all the same


def test_every_result_is_scored_and_auto_says_what_it_chose(engine: Engine):
    photo, cover = sample("photos/grace_hopper.jpg"), sample("covers/greenhaze.png")
    params = TINY.replace(size=64, iterations=6, content_weight="auto")
    result = engine.stylize(photo, cover, params)
    metrics = result.metrics
    assert 0 <= metrics["content_kept"] <= 1 and 0 <= metrics["style_taken"] <= 1
    assert metrics["content_weight"] in (1.0, 2.0, 4.0, 8.0)
    # the candidates tried (on a CPU: from the lowest up to the winner), each with its scores
    assert format(metrics["content_weight"], "g") in metrics["candidates"]
    assert set(metrics["candidates"]) <= {"1", "2", "4", "8"}
    assert result.history[0]["scale"] == -1  # the probe's iterations come first


def test_auto_picks_a_higher_weight_for_a_dark_sparse_cover_than_for_a_soft_one(engine: Engine):
    photo = sample("photos/grace_hopper.jpg")
    params = StyleParams(size=128, scales=2, min_size=64, coarse_iterations=30, iterations=10,
                         protect_faces=False)  # fmt: skip
    dark = engine.stylize(photo, sample("covers-hard/darkfield.png"), params)
    soft = engine.stylize(photo, sample("covers/colourfields.png"), params)
    assert dark.metrics["content_weight"] > soft.metrics["content_weight"], (
        dark.metrics["candidates"],
        soft.metrics["candidates"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("cover", ["covers/colourfields.png", "covers-hard/darkfield.png"])
def test_the_probe_in_rounds_chooses_what_the_batch_chooses_with_less_work(
    exact_engine: Engine, cover: str
):
    """On a CPU the candidates go one weight at a time, lowest first, until one passes: the
    same weight, the same winning image, and only the candidates up to the winner painted."""
    photo, style = sample("photos/grace_hopper.jpg"), sample(cover)
    params = StyleParams(size=96, scales=2, min_size=64, coarse_iterations=25, iterations=2,
                         protect_faces=False)  # fmt: skip
    assert exact_engine.probe_in_rounds  # a CPU engine's default
    runs = {}
    for in_rounds in (False, True):
        exact_engine.probe_in_rounds = in_rounds
        events: list = []
        try:
            result = exact_engine.stylize(photo, style, params, progress=events.append)
            runs[in_rounds] = (result, events)
        finally:
            exact_engine.probe_in_rounds = True
    (batched, batch_events), (rounds, round_events) = runs[False], runs[True]
    chosen = rounds.metrics["content_weight"]
    assert chosen == batched.metrics["content_weight"]
    names = ["1", "2", "4", "8"]
    tried = rounds.metrics["candidates"]
    assert list(tried) == names[: names.index(format(chosen, "g")) + 1]
    for name, scores in tried.items():
        assert scores == pytest.approx(batched.metrics["candidates"][name], abs=1e-6)
    assert np.abs(pixels(rounds.image) - pixels(batched.image)).max() <= 1 / 255
    # 25 probe iterations a round; the progress total counted every round, never passed.
    probes = [e for e in round_events if e.stage == "probe"]
    assert len(probes) == 25 * len(tried)
    assert len([e for e in batch_events if e.stage == "probe"]) == 25
    assert all(e.done <= e.total for e in round_events)
    assert round_events[0].total == batch_events[0].total + 3 * 25
    # the rounds not needed left the total
    assert round_events[-1].total == batch_events[-1].total + 25 * (len(tried) - 1)


def blocks_photo(size: int = 64) -> Image.Image:
    """Flat rectangles with straight edges: what a photograph's buildings look like."""
    image = np.zeros((size, size, 3), np.float32)
    image[:, :] = (0.85, 0.8, 0.7)
    image[size // 4 : size * 3 // 4, size // 8 : size // 2] = (0.2, 0.3, 0.6)
    image[size // 8 : size // 2, size // 2 : size * 7 // 8] = (0.7, 0.2, 0.15)
    return Image.fromarray((image * 255).astype(np.uint8))


def luminance_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two luminance images in 0..1 (7×7 windows)."""
    from scipy.ndimage import uniform_filter

    def y(x: np.ndarray) -> np.ndarray:
        return x @ np.array([0.299, 0.587, 0.114], np.float32)

    a, b = y(a), y(b)
    mu_a, mu_b = uniform_filter(a, 7), uniform_filter(b, 7)
    var_a = uniform_filter(a * a, 7) - mu_a**2
    var_b = uniform_filter(b * b, 7) - mu_b**2
    cov = uniform_filter(a * b, 7) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim.mean())


def test_photo_mode_keeps_edges_and_flat_regions_while_the_colours_move(engine: Engine):
    photo = blocks_photo(96)
    cover = stripe_cover(64, colour=(30, 160, 60))  # green bands: texture and a colour cast
    params = TINY.replace(size=96, iterations=40, style_weight=20)
    artistic = pixels(engine.stylize(photo, cover, params).image)
    painted = engine.stylize(photo, cover, params.replace(mode="photo"))
    photographic = pixels(painted.image)
    original = pixels(photo)
    ssim_photo, ssim_art = (
        luminance_ssim(photographic, original),
        luminance_ssim(artistic, original),
    )
    # Measured: 0.89 against 0.21.
    assert ssim_photo > 0.8 and ssim_photo > ssim_art + 0.4, (ssim_photo, ssim_art)
    # Flat regions stay flat: little texture inside the blue block.
    inside = np.s_[30:66, 18:42]
    assert (
        photographic[inside].std(axis=(0, 1)).mean()
        < 0.5 * artistic[inside].std(axis=(0, 1)).mean()
    )
    # Edges where they were: the horizontal gradient peaks on the blue block's left edge.
    edges = np.abs(np.diff(photographic.mean(axis=2), axis=1))[30:66].mean(axis=0)
    assert abs(int(edges.argmax()) - 11) <= 1
    # And the colours moved toward the cover's (its mean is green).
    cover_mean = pixels(cover).reshape(-1, 3).mean(axis=0)
    before = np.abs(original.reshape(-1, 3).mean(axis=0) - cover_mean).sum()
    after = np.abs(photographic.reshape(-1, 3).mean(axis=0) - cover_mean).sum()
    assert after < 0.9 * before
    assert painted.history[-1]["photo"] > 0  # the regulariser was on


def test_auto_precision_on_a_cpu_is_bf16_only_where_it_measurably_pays(
    monkeypatch: pytest.MonkeyPatch,
):
    from covergen.nst import precision as engine_module

    calls = []

    def speedup(value: float):
        def measure() -> float:
            calls.append(value)
            return value

        return measure

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for measured, expected in ((0.2, "fp32"), (1.2, "fp32"), (3.3, "bf16")):
        monkeypatch.setattr(engine_module, "_cpu_bf16", None)
        monkeypatch.setattr(engine_module, "cpu_bf16_speedup", speedup(measured))
        assert engine_module.effective_precision("auto", cpu) == expected
        assert engine_module.effective_precision("auto", cpu) == expected  # measured once
    assert calls == [0.2, 1.2, 3.3]
    assert engine_module.effective_precision("fp32", cpu) == "fp32"  # a choice is kept
    assert engine_module.effective_precision("auto", cuda) == "tf32"


def test_the_bf16_measurement_is_a_ratio_and_leaves_torch_seeded_as_it_was():
    from covergen.nst.precision import cpu_bf16_speedup

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    # a ratio of two timings, or 0 where torch has no oneDNN (then fp32 without measuring)
    assert (cpu_bf16_speedup(repeats=1) > 0) == torch.backends.mkldnn.is_available()
    assert torch.equal(torch.rand(3), expected)
