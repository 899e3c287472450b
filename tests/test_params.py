import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from covergen.nst import ParameterError, ParameterErrors, StyleParams, from_mapping, param_specs
from covergen.nst.params import (
    check_image_sizes,
    coerce,
    fit_long_side,
    format_value,
    probe_long_side,
)


def test_defaults_are_valid_and_specs_cover_every_field():
    params = from_mapping({})
    assert params == StyleParams()
    names = [s.name for s in param_specs()]
    assert names == list(StyleParams().to_dict())
    for spec in param_specs():
        assert spec.help and spec.group


def test_values_from_the_command_line_are_coerced():
    params = from_mapping({
        "size": "256", "content_weight": "5", "style_layers": "relu1_1, relu3_1",
        "style_layer_weights": "1,0.5", "content_regions": "0.2,0.1,0.8,0.6,4;0,0,0.1,0.1,0",
    })  # fmt: skip
    assert params.size == 256
    assert params.content_weight == 5.0
    assert params.style_layers == ("relu1_1", "relu3_1")
    assert params.style_layer_weights == (1.0, 0.5)
    assert params.content_regions == ((0.2, 0.1, 0.8, 0.6, 4.0), (0.0, 0.0, 0.1, 0.1, 0.0))


def test_values_round_trip_through_their_text_form():
    params = StyleParams(content_regions=((0.1, 0.2, 0.5, 0.9, 3.0),), style_blend=(0.7, 0.3))
    for spec in param_specs():
        value = getattr(params, spec.name)
        assert coerce(spec.name, format_value(value)) == value


def test_every_problem_is_reported_at_once_with_its_field():
    with pytest.raises(ParameterErrors) as info:
        from_mapping({"size": 100000, "style_weight": -1, "iterations": 0, "netwrk": "vgg19"})
    fields = {e.field: e for e in info.value.errors}
    assert set(fields) == {"size", "style_weight", "iterations", "netwrk"}
    assert "4096" in fields["size"].hint
    assert "network" in fields["netwrk"].hint  # did you mean


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"style_layers": "relu1_1,relu9_9"}, "style_layers", "relu9_9"),
        ({"content_layers": "relu4_22"}, "content_layers", "did you mean"),
        ({"style_layer_weights": "1,2"}, "style_layer_weights", "one weight per layer"),
        ({"optimizer": "sgd"}, "optimizer", "lbfgs"),
        ({"size": 2.5}, "size", "whole number"),
        ({"size": True}, "size", "whole number"),
        ({"content_weight": "nan"}, "content_weight", "finite"),
        ({"content_regions": "0.5,0.5,0.4,0.9,2"}, "content_regions", "inside the image"),
        ({"content_regions": "0.1,0.2,3"}, "content_regions", "5 numbers"),
        ({"network": "vgg16", "weights": "caffe"}, "weights", "vgg16"),
        ({"min_size": "half"}, "min_size", "or auto"),
        ({"min_size": 2.5}, "min_size", "whole number"),
        ({"min_size": 8}, "min_size", "at least 16"),
    ],
)
def test_bad_values_name_the_field_and_what_to_do(values, field, words):
    with pytest.raises(ParameterError) as info:
        from_mapping(values)
    errors = getattr(info.value, "errors", [info.value])
    assert errors[0].field == field
    assert words in str(errors[0])


def test_scale_sizes_are_geometric_and_end_at_size():
    assert StyleParams(size=512, min_size=128, scales=3).scale_sizes() == [128, 256, 512]
    assert StyleParams(size=512, scales=1).scale_sizes() == [512]
    assert StyleParams(size=100, min_size=200, scales=3).scale_sizes() == [100]


def test_min_size_auto_is_half_the_size_between_64_and_256_px():
    # The defaults: two scales (docs/benchmarks.md: the race at 256, 512 and 1024 px).
    assert StyleParams(size=256).scale_sizes() == [128, 256]
    assert StyleParams(size=512).scale_sizes() == [256, 512]
    assert StyleParams(size=1024).scale_sizes() == [256, 1024]
    assert StyleParams(size=1024, scales=3).scale_sizes() == [256, 512, 1024]
    assert StyleParams(size=100).scale_sizes() == [64, 100]
    assert StyleParams(size=64).scale_sizes() == [64]  # a coarse scale would be under 64 px
    assert from_mapping({"min_size": " Auto "}).min_size == "auto"
    assert from_mapping({"min_size": "200"}).min_size == 200


def test_layer_weights_default_to_halving_and_sum_to_one():
    weights = StyleParams().resolved_style_layer_weights()
    assert weights == pytest.approx([16 / 31, 8 / 31, 4 / 31, 2 / 31, 1 / 31])
    assert StyleParams(style_layer_weights=(2, 2, 0, 0, 0)).resolved_style_layer_weights()[:2] == [
        0.5,
        0.5,
    ]


def test_replace_validates():
    with pytest.raises(ParameterError):
        StyleParams().replace(pooling="min")
    assert StyleParams().replace(pooling="avg").pooling == "avg"


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(16, 400),
    height=st.integers(16, 400),
    size=st.integers(16, 160),
    scales=st.integers(1, 3),
    style_scale=st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]),
    deepest=st.sampled_from(["relu2_1", "relu3_1", "relu4_2", "relu5_1"]),
    auto=st.booleans(),
)
def test_sizes_check_accepts_exactly_what_the_network_can_pool(
    width, height, size, scales, style_scale, deepest, auto
):
    """What check_image_sizes accepts, VGG's poolings can run on: every scale of the photo
    and of the cover reaches the deepest layer with at least one pixel."""
    import torch

    from covergen.nst.layers import layer_table

    assume(max(width, height) / min(width, height) <= 8)
    params = StyleParams().replace(
        size=size, scales=scales, style_scale=style_scale, style_layers=[deepest],
        content_layers=["relu2_1"], min_size=max(16, size // 2),
        content_weight="auto" if auto else 1,
    )  # fmt: skip
    table = layer_table("vgg19")
    depth = next(info.index for info in table if info.name == deepest)
    pools = sum(1 for info in table if info.kind == "pool" and info.index < depth)

    def reaches(w: int, h: int) -> bool:
        x = torch.zeros(1, 1, h, w)
        try:
            for _ in range(pools):
                x = torch.nn.functional.max_pool2d(x, 2)
        except RuntimeError:
            return False
        return min(x.shape[-2:]) >= 1

    cover = (height, width)  # a cover of the transposed shape
    fits = True
    probe = probe_long_side(params)  # auto's candidates are painted there too
    for long_side in [*params.scale_sizes(), *([probe] if probe else [])]:
        w, h = fit_long_side(width, height, long_side)
        sw, sh = fit_long_side(*cover, max(8, round(max(w, h) * style_scale)))
        fits = fits and reaches(w, h) and reaches(sw, sh)
    try:
        check_image_sizes(params, (width, height), [cover])
        accepted = True
    except ParameterError as exc:
        accepted = False
        assert exc.field in ("size", "min_size", "style_scale", "content_weight")
        assert "or more" in exc.hint
    assert accepted == fits
