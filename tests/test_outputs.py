"""Where a command writes its result: never over one of its inputs, never into a folder, and
refused before any painting (`stylize -o`, `rerun -o`, `sweep -o`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from covergen import cli
from covergen.catalog import load_catalog
from covergen.errors import CovergenError
from covergen.outputs import catalog_inputs, check_output


def _painting_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to paint fails the test: a refusal must come before the engine runs."""

    def no_painting(*args: object, **kwargs: object) -> None:
        raise AssertionError("painted although the output was refused")

    monkeypatch.setattr("covergen.nst.engine.Engine.stylize", no_painting)
    monkeypatch.setattr("covergen.executors.painter.Painter.run_batch", no_painting)


def _spellings(project: Path, target: Path) -> list[str]:
    """Ways to name ``target`` (a file of the project) other than its plain relative path."""
    link = project / "link.png"
    hard = project / "hard.png"
    link.symlink_to(target)
    os.link(target, hard)
    relative = target.relative_to(project)
    return [
        str(relative),
        str(target),
        f"./{relative}",
        f"photos/../{relative}",
        str(link),
        str(hard),
    ]


def test_stylize_never_writes_over_its_own_inputs(project: Path, monkeypatch, capsys):
    _painting_forbidden(monkeypatch)
    monkeypatch.chdir(project)
    photo = project / "photos" / "a.png"
    before = photo.read_bytes()
    for spelling in _spellings(project, photo):
        code = cli.main(["stylize", "photos/a.png", "covers/x.png", "-o", spelling])
        err = capsys.readouterr().err
        assert code == 2, (spelling, err)
        assert "would replace it" in err and "output" in err and "Traceback" not in err
    # the cover and the content map are inputs too
    for args in (
        ["photos/a.png", "covers/x.png", "-o", "covers/x.png"],
        ["photos/a.png", "covers/x.png", "--content-map", "photos/b.png", "-o", "photos/b.png"],
    ):
        assert cli.main(["stylize", *args]) == 2
        assert "would replace it" in capsys.readouterr().err
    assert photo.read_bytes() == before


def test_rerun_and_sweep_never_write_over_a_file_the_catalog_refers_to(
    project: Path, monkeypatch, capsys
):
    _painting_forbidden(monkeypatch)
    monkeypatch.chdir(project)
    cover = project / "covers" / "y.png"  # pair gamma-three's, not the rerun pair's own
    before = cover.read_bytes(), (project / "catalog.yaml").read_bytes()
    for command in (
        ["rerun", "alpha-one", "-o", "covers/y.png"],
        ["rerun", "alpha-one", "-o", "catalog.yaml"],
        ["sweep", "alpha-one", "--set", "content_weight=1,2", "-o", str(cover)],
    ):
        code = cli.main(command)
        err = capsys.readouterr().err
        assert code == 2, (command, err)
        assert "would replace it" in err and "Traceback" not in err
    assert (cover.read_bytes(), (project / "catalog.yaml").read_bytes()) == before
    assert not (project / "cache" / "results").exists()  # nothing was painted or stored


def test_an_output_that_is_a_folder_is_refused_before_painting(project: Path, monkeypatch, capsys):
    _painting_forbidden(monkeypatch)
    monkeypatch.chdir(project)
    (project / "d.png").mkdir()
    (project / "file").write_text("not a folder")
    for output, words in (("d.png", "is a folder"), ("file/out.png", "is a file, not a folder")):
        code = cli.main(["stylize", "photos/a.png", "covers/x.png", "-o", output])
        err = capsys.readouterr().err
        assert code == 2 and words in err and ".tmp" not in err, err
    # rerun takes a folder as where to put PAIR.png; under a file, it is refused too.
    assert cli.main(["rerun", "alpha-one", "-o", "file/out.png"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_new_file_in_a_new_folder_is_a_fine_output(project: Path):
    catalog = load_catalog(project / "catalog.yaml")
    assert check_output(project / "new" / "deeper" / "out.webp", catalog_inputs(catalog)) == "WEBP"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    hops=st.lists(st.sampled_from(["photos", "covers", "."]), max_size=3),
    role=st.sampled_from(["photos/a.png", "photos/b.png", "covers/x.png", "catalog.yaml"]),
    absolute=st.booleans(),
)
def test_any_spelling_of_a_catalog_file_is_refused_as_output(
    project: Path, hops: list[str], role: str, absolute: bool
):
    # photos/../covers/./../photos/a.png and the like all name the same file.
    spelling = Path(*[f"{hop}/.." if hop != "." else "." for hop in hops], role)
    if absolute:
        spelling = project / spelling
    else:
        spelling = Path(os.path.relpath(project, Path.cwd())) / spelling
    inputs = catalog_inputs(load_catalog(project / "catalog.yaml"))
    with pytest.raises(CovergenError, match="would replace it"):
        check_output(spelling, inputs)


def test_a_file_of_a_pair_the_catalog_cannot_read_is_still_an_input(
    project: Path, monkeypatch, capsys
):
    _painting_forbidden(monkeypatch)
    monkeypatch.chdir(project)
    catalog = project / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("- band: Alpha", "- bnd: Alpha"))
    before = (project / "photos" / "a.png").read_bytes()
    for command in (["rerun", "beta-two", "-o", "photos/a.png"],
                    ["sweep", "beta-two", "-o", "photos/a.png"]):  # fmt: skip
        assert cli.main(command) == 2
        assert "would replace it" in capsys.readouterr().err
    assert (project / "photos" / "a.png").read_bytes() == before


def test_no_result_is_written_into_the_cache_or_the_site(project: Path, monkeypatch, capsys):
    _painting_forbidden(monkeypatch)
    monkeypatch.chdir(project)
    for where in ("cache/images/sha256/ab/stored.png", "cache/results/ab/x.png", "site/x.png"):
        for command in (["rerun", "alpha-one", "-o", where], ["sweep", "alpha-one", "-o", where]):
            assert cli.main(command) == 2, command
            assert "which covergen manages" in capsys.readouterr().err
    code = cli.main(["stylize", "photos/a.png", "covers/x.png", "--cache-dir", "cache",
                     "-o", "cache/features/x.png"])  # fmt: skip
    assert code == 2 and "which covergen manages" in capsys.readouterr().err


def test_a_path_that_leads_to_an_input_once_painting_is_done_is_refused(
    project: Path, monkeypatch, capsys
):
    from covergen.nst.engine import Engine

    monkeypatch.chdir(project)
    painting = Engine.stylize

    def meanwhile(self, *args, **kwargs):
        (project / "newdir").symlink_to(project / "photos")  # while it paints
        return painting(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "stylize", meanwhile)
    before = (project / "photos" / "a.png").read_bytes()
    code = cli.main(["stylize", "photos/a.png", "covers/x.png", "-o", "newdir/a.png",
                     "--set", "size=32", "--set", "iterations=1", "--set", "scales=1",
                     "--set", "content_weight=1", "--set", "protect_faces=false"])  # fmt: skip
    assert code == 2 and "would replace it" in capsys.readouterr().err
    assert (project / "photos" / "a.png").read_bytes() == before
