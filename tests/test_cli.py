"""The `covergen` command line: options derived from the params, clear errors, files written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import gradient_photo, stripe_cover
from PIL import Image

from covergen import cli
from covergen.nst import StyleParams, from_mapping, param_specs
from covergen.nst.params import format_value, params_markdown

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


def _squashed(text: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", text.lower())


def test_the_engine_pages_defaults_table_says_what_the_dataclass_says():
    """docs/engine.md explains the defaults in prose; every value it names must be the
    dataclass's (a sequence: its first and last items), so a changed default fails here."""
    page = (DOCS / "engine.md").read_text()
    table = page.split("## Defaults, and why", 1)[1].split("\n\n", 2)[1]
    defaults = StyleParams()
    checked = 0
    for row in table.splitlines()[2:]:
        names_cell, default_cell = row.split(" | ")[:2]
        names = re.findall(r"`([a-z_]+)`", names_cell)
        assert names, row
        shown = _squashed(default_cell)
        for name in names:
            value = getattr(defaults, name)
            items = [value[0], value[-1]] if isinstance(value, tuple) else [value]
            for item in items:
                want = _squashed(format_value(item))
                if name == "weights" and item == "auto":
                    want = "caffe"  # auto means caffe for the default network (the row says)
                assert want in shown, f"docs/engine.md says {default_cell!r} for {name}"
                checked += 1
    assert checked >= 12


# ----------------------------------------------------------------------------- every command


def covergen(project: Path, *args: str, env: dict[str, str] | None = None):
    """Run the real command in a child process, in the project; (code, out, err)."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "covergen", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    return done.returncode, done.stdout, done.stderr


LIGHT = """
import atexit, sys
HEAVY = ("torch", "requests", "jinja2")
atexit.register(lambda: print("loaded:", *[m for m in HEAVY if m in sys.modules], file=sys.stderr))
from covergen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def heavy_modules_loaded(stderr: str) -> set[str]:
    """What LIGHT says was loaded of torch, requests (HTTP) and jinja2 (page templates)."""
    line = next(line for line in stderr.splitlines() if line.startswith("loaded:"))
    return set(line.split()[1:])


def test_commands_that_paint_nothing_never_load_torch(project: Path, tmp_path: Path):
    import subprocess
    import sys

    from covergen.build import BuildOptions, build

    build(BuildOptions(catalog=project / "catalog.yaml", cache_dir=project / "cache",
                       site_dir=project / "site", device="cpu"))  # fmt: skip
    site = project / "site"
    commands = [
        ["--help"],
        ["params"],
        ["check"],
        ["list"],
        ["status"],
        ["build", "--device", "cpu"],  # nothing changed: nothing to paint
        ["build", "--dry-run"],
        ["add", "--band", "New", "--album", "One", "--photo", "photos/a.png",
         "--cover", "covers/x.png"],
        ["publish", f"dir:{tmp_path / 'out'}", "--dry-run", "--site-dir", str(site)],
        ["serve", "--site-dir", str(tmp_path / "nowhere")],  # refused: still no torch
        ["clean", "--dry-run"],
    ]  # fmt: skip
    # Nor do these load HTTP (all images are local) or Jinja (nothing to render).
    no_http_nor_pages = (["check"], ["list"], ["status"], ["build", "--device", "cpu"])
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-c", LIGHT, *args], cwd=project, capture_output=True, text=True
        )
        assert "Traceback" not in done.stderr, (args, done.stderr)
        loaded = heavy_modules_loaded(done.stderr)
        assert "torch" not in loaded, (args, done.stderr)
        if args in no_http_nor_pages:
            assert not loaded, (args, done.stderr)


def test_check_add_list_and_status(project: Path):
    code, out, err = covergen(project, "check")
    assert code == 0 and "3 pairs" in out and "OK" in out
    code, out, err = covergen(
        project, "add", "--band", "Delta", "--album", "Four", "--photo", "photos/a.png",
        "--cover", "covers/y.png", "--set", "content_weight=3", "--tags", "a, b",
    )  # fmt: skip
    assert code == 0 and "added delta-four" in out
    code, out, _ = covergen(project, "list")
    assert code == 0 and "delta-four" in out and "new" in out
    assert "overrides: content_weight" in out
    code, out, _ = covergen(project, "status")
    assert code == 0 and "delta-four" in out
    # A bad --set names the parameter, changes nothing.
    before = (project / "catalog.yaml").read_bytes()
    code, _, err = covergen(
        project, "add", "--band", "E", "--album", "F", "--photo", "p", "--cover", "c",
        "--set", "content_weight=lots",
    )  # fmt: skip
    assert code == 2 and "content_weight" in err and "Traceback" not in err
    assert (project / "catalog.yaml").read_bytes() == before
    (project / "catalog.yaml").write_text("pairs: [")
    code, _, err = covergen(project, "check")
    assert code == 2 and "malformed YAML" in err


def test_build_dry_run_writes_nothing(project: Path):
    code, out, err = covergen(project, "build", "--dry-run")
    assert code == 0, err
    assert out.count("would paint") == 3
    assert not (project / "cache").exists() and not (project / "site").exists()


def test_build_rerun_export_and_clean(project: Path, tmp_path: Path):
    code, _, err = covergen(project, "build", "--device", "cpu")
    assert code == 0, err
    assert (project / "site" / "index.html").is_file()
    out_file = tmp_path / "try.jpg"
    code, out, err = covergen(
        project, "rerun", "beta-two", "--set", "content_weight=7", "-o", str(out_file),
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert Image.open(out_file).format == "JPEG" and str(out_file) in out
    code, out, err = covergen(project, "clean", "--dry-run")
    assert code == 0 and "would remove 0 results" in out
    code, out, err = covergen(project, "status")
    assert "beta-two" in out and "built" in out


def test_build_with_a_device_this_machine_lacks_stops_before_any_pair(project: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = covergen(project, "build", "--device", "cuda:0")
    assert code == 2 and "CUDA is not available" in err and "Traceback" not in err
    code, out, _ = covergen(project, "list")
    assert out.count(" new ") == 3  # no pair was tried


def test_publish_to_a_folder_and_serve(project: Path, tmp_path: Path):
    import signal
    import subprocess
    import sys
    import urllib.request

    code, _, err = covergen(project, "build", "--device", "cpu")
    assert code == 0, err
    target = tmp_path / "public"
    code, out, err = covergen(project, "publish", f"dir:{target}", "--dry-run")
    assert code == 0 and "would publish" in out and not target.exists()
    code, out, err = covergen(project, "publish", f"dir:{target}")
    assert code == 0 and "published" in out, err
    assert (target / "index.html").is_file() and not (target / ".covergen-site").exists()

    server = subprocess.Popen(
        [sys.executable, "-m", "covergen", "serve", "--port", "0"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("serving http://"), line
        url = line.split()[1]
        with urllib.request.urlopen(url + "index.html", timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read()
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    assert "Traceback" not in server.stderr.read()


def test_bad_port_and_unknown_command_are_usage_errors(project: Path):
    code, _, err = covergen(project, "serve", "--port", "99999")
    assert code == 2 and "not a port number" in err and "Traceback" not in err
    code, _, err = covergen(project, "paint")
    assert code == 2 and "no command 'paint'" in err and "did you mean 'build'?" in err


def test_sweep_paints_every_combination_once_and_writes_one_sheet(project: Path):
    code, out, err = covergen(
        project, "sweep", "beta-two", "--set", "content_weight=1,4", "--set", "tv_weight=0,0.01",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    sheet = project / "cache" / "sweeps" / "beta-two.jpg"
    assert f"wrote {Path('cache') / 'sweeps' / 'beta-two.jpg'}: 4 images (4 painted now" in out
    one_row = Image.open(sheet)
    # A second sweep with a value more finds the four in the cache and paints one.
    code, out, err = covergen(
        project, "sweep", "beta-two", "--set", "content_weight=1,4,2.0",
        "--set", "tv_weight=0,0.01", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "6 images (2 painted now, 4 from the cache, 0 failed)" in out
    # photo, cover and six variants on one row: wider than the four's sheet, as tall.
    assert Image.open(sheet).height == one_row.height
    assert Image.open(sheet).width > one_row.width
    # Sweeps are not builds: the pair's own result and the site are untouched.
    assert not (project / "site").exists()
    code, out, _ = covergen(project, "list")
    assert out.count(" new ") == 3


def test_sweep_of_every_pair_as_the_catalog_says_has_a_row_per_pair(project: Path):
    code, out, err = covergen(project, "sweep", "--device", "cpu")
    assert code == 0, err
    sheet = Image.open(project / "cache" / "sweeps" / "pairs.jpg")
    code, out, err = covergen(project, "sweep", "gamma-three", "--device", "cpu")
    assert code == 0 and "(0 painted now, 1 from the cache" in out, err
    single = Image.open(project / "cache" / "sweeps" / "gamma-three.jpg")
    assert sheet.width == single.width and sheet.height > 2.5 * single.height


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["beta-two", "--set", "content_weight=1,banana"], "content_weight"),
        (["beta-two", "--set", "no_such=1,2"], "no_such"),
        (["beta-two", "--set", "size=8,64"], "size"),
        (["no-such-pair", "--set", "content_weight=1,2"], "id"),
    ],
)
def test_sweep_refuses_bad_values_before_painting(project: Path, args: list[str], field: str):
    code, _, err = covergen(project, "sweep", *args, "--device", "cpu")
    assert code != 0 and field in err and "Traceback" not in err
    assert not (project / "cache" / "results").exists()


def test_score_judges_any_image_against_its_photo_and_cover(project: Path):
    photo, cover = project / "photos" / "b.png", project / "covers" / "x.png"
    code, out, err = covergen(project, "score", str(photo), str(cover), str(photo), str(cover))
    assert code == 0, err
    photo_row, cover_row = (line.split() for line in out.splitlines()[-2:])
    # The photo keeps all of itself and takes nothing of the cover; the cover the reverse.
    assert photo_row[1:3] == ["1.000", "0.000"] and cover_row[1:3] == ["0.000", "1.000"]
    code, _, err = covergen(project, "score", str(photo), str(cover), "missing.png")
    assert code != 0 and "missing.png" in err and "Traceback" not in err


def test_quality_numbers_and_the_chosen_weight_show_in_status_list_and_the_pair_page(
    project: Path,
):
    catalog = project / "catalog.yaml"
    catalog.write_text(
        catalog.read_text().replace(
            "    overrides:\n      content_weight: 2\n",
            "    overrides:\n      content_weight: auto\n      protect_faces: true\n",
        )
    )
    code, _, err = covergen(project, "build", "--device", "cpu")
    assert code == 0, err
    code, out, _ = covergen(project, "status")
    beta = next(line for line in out.splitlines() if line.startswith("beta-two"))
    weight, content, style = re.search(r"(auto → \d+) +(\d\.\d\d) +(\d\.\d\d)", beta).groups()
    alpha = next(line for line in out.splitlines() if line.startswith("alpha-one"))
    assert re.search(r" 1 +\d\.\d\d +\d\.\d\d ", alpha)  # a fixed weight, still scored
    code, out, _ = covergen(project, "list")
    assert f"(content {content} · style {style}, weight {weight})" in out
    page = (project / "site" / "pairs" / "beta-two.html").read_text()
    assert weight in page and f"<dd>{content}</dd>" in page and f"<dd>{style}</dd>" in page
    assert "<dt>Faces protected</dt><dd>0</dd>" in page and "<dd>Painted</dd>" in page
