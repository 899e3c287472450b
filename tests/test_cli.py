"""The `covergen` command line: options derived from the params, clear errors, files written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import gradient_photo, stripe_cover
from PIL import Image

from covergen import cli
from covergen.nst import StyleParams, from_mapping, param_specs
from covergen.nst.params import params_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_parameter_is_an_option_with_its_default_in_the_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["stylize", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for spec in param_specs():
        assert "--" + spec.name.replace("_", "-") in text
        assert f"(default: {spec.default_text or 'none'})" in text
    assert len(param_specs()) == len(StyleParams().to_dict())


def test_options_and_set_become_validated_params():
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "stylize",
            "a.png",
            "b.png",
            "-o",
            "c.png",
            "--content-weight",
            "5",
            "--set",
            "style_layers=relu1_1,relu2_1",
            "--set",
            "tv-weight=0",
        ]
    )
    params = from_mapping(cli.param_values(args))
    assert params.content_weight == 5
    assert params.style_layers == ("relu1_1", "relu2_1")
    assert params.tv_weight == 0


def test_stylize_writes_the_result(tmp_path: Path, engine, capsys):
    photo, cover, out = tmp_path / "photo.png", tmp_path / "cover.jpg", tmp_path / "out" / "r.png"
    gradient_photo(60, 40).save(photo)
    stripe_cover().save(cover)
    code = cli.main(
        [
            "stylize",
            str(photo),
            str(cover),
            "-o",
            str(out),
            "--size",
            "40",
            "--scales",
            "1",
            "--iterations",
            "3",
            "--device",
            "cpu",
            "--cache-dir",
            str(engine.cache_dir),
        ]
    )
    assert code == 0
    assert Image.open(out).size == (40, 27)
    assert "wrote" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["r.png"]  # nothing left aside


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--size", "100000"], "size: 100000 is above the maximum 4096"),
        (["--style-weight", "-2", "--pooling", "min"], "pooling"),
        (["--set", "content_wieght=3"], "did you mean 'content_weight'"),
        (["--content-layers", "relu4_9"], "content_layers"),
        (["--device", "cuda:3"], "device"),
    ],
)
def test_bad_options_exit_2_with_a_message_not_a_traceback(tmp_path, capsys, extra, words):
    photo = tmp_path / "p.png"
    gradient_photo().save(photo)
    code = cli.main(["stylize", str(photo), str(photo), "-o", str(tmp_path / "o.png"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_unreadable_inputs_name_the_field(tmp_path, capsys):
    bad = tmp_path / "cover.png"
    bad.write_bytes(b"<html>not an image</html>")
    photo = tmp_path / "p.png"
    gradient_photo().save(photo)
    assert cli.main(["stylize", str(photo), str(bad), "-o", str(tmp_path / "o.png")]) == 2
    assert "cover: cannot read" in capsys.readouterr().err
    assert cli.main(["stylize", str(tmp_path / "nope.png"), str(photo), "-o", "x.png"]) == 2
    assert "photo: no such file" in capsys.readouterr().err
    assert cli.main(["stylize", str(photo), str(photo), "-o", str(tmp_path / "o.gif")]) == 2
    assert "output" in capsys.readouterr().err


def test_the_docs_parameter_table_is_generated_from_the_dataclass():
    page = (DOCS / "parameters.md").read_text()
    assert params_markdown() in page, "run: covergen params --markdown, paste into docs"
