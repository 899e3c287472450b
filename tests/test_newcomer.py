"""A newcomer's road: paths mean one thing from any folder, `add` takes paths as typed,
`check` finds missing images, and a catalog without profiles gets the draft on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import gradient_photo, stripe_cover

from covergen import cli
from covergen.catalog import BUILTIN_PROFILES, load_catalog
from covergen.errors import CovergenError


@pytest.fixture
def band(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder with a band's gallery in band/, and the shell in the user's folder."""
    folder = tmp_path / "band"
    (folder / "photos").mkdir(parents=True)
    gradient_photo(48, 40).save(folder / "photos" / "live.png")
    stripe_cover(40).save(tmp_path / "cover.png")  # outside the gallery's folder
    monkeypatch.chdir(tmp_path)
    return folder


def test_add_takes_paths_as_the_shell_completes_them(band: Path, capsys):
    catalog = band / "catalog.yaml"
    args = ["add", "--catalog", "band/catalog.yaml", "--band", "B", "--album", "A"]
    # The cover lies outside the catalog's folder: refused, with the way out.
    code = cli.main([*args, "--photo", "band/photos/live.png", "--cover", "cover.png"])
    assert code == 2 and "--copy" in capsys.readouterr().err and not catalog.exists()
    code = cli.main([*args, "--photo", "band/photos/live.png", "--cover", "cover.png", "--copy"])
    out = capsys.readouterr().out
    assert code == 0 and "note: no credit for the photo" in out
    pair = load_catalog(catalog).pairs[0]
    assert (pair.photo.src, pair.cover.src) == ("photos/live.png", "covers/cover.png")
    assert (band / "covers" / "cover.png").is_file()
    # A path that exists nowhere: refused, the catalog untouched, near names offered.
    before = catalog.read_bytes()
    again = ["add", "--catalog", str(catalog), "--band", "C", "--album", "D"]
    code = cli.main([*again, "--photo", "band/photos/Live.png", "--cover", "cover.png", "--copy"])
    assert code == 2 and catalog.read_bytes() == before
    assert "live.png" in capsys.readouterr().err


def test_check_finds_missing_images_and_suggests_near_names(band: Path, capsys):
    (band / "catalog.yaml").write_text(
        "pairs:\n  - {band: B, album: A, photo: photos/Live.PNG, cover: covers/none.png}\n"
    )
    assert cli.main(["check", "--catalog", "band/catalog.yaml"]) == 2
    err = capsys.readouterr().err
    assert "photo.src: no such file" in err and "did you mean 'photos/live.png'?" in err
    assert "cover.src: no such file" in err


def test_cache_and_site_belong_to_the_catalogs_folder_from_anywhere(
    project: Path, tmp_path: Path, monkeypatch, capsys
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    catalog = str(project / "catalog.yaml")
    assert cli.main(["build", "--catalog", catalog, "--device", "cpu", "--only", "alpha-one",
                     "--no-site", "-q"]) == 0  # fmt: skip
    assert (project / "cache" / "runs.sqlite").is_file() and not (elsewhere / "cache").exists()
    capsys.readouterr()
    assert cli.main(["list", "--catalog", catalog]) == 0
    assert "alpha-one" in capsys.readouterr().out.split("built")[0]


def test_a_catalog_without_profiles_paints_the_draft_on_a_cpu_under_its_defaults(project: Path):
    catalog = load_catalog(project / "catalog.yaml")
    assert not catalog.profiles
    assert catalog.choose_profile(None, "cpu") == "draft"
    assert catalog.choose_profile(None, "mps") == "draft"
    assert catalog.choose_profile(None, "cuda") == "final"
    params = catalog.params_for(catalog.pairs[0], "draft")
    assert params.size == 32  # the catalog's own default wins over the built-in draft
    assert params.min_size == BUILTIN_PROFILES["draft"]["min_size"]
    with pytest.raises(CovergenError, match="did you mean 'draft'"):
        catalog.choose_profile("draftt", "cpu")


def test_init_makes_a_gallery_that_checks_and_never_overwrites(tmp_path: Path, capsys):
    folder = tmp_path / "my gallery"
    assert cli.main(["init", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"cd {folder}" in out and "covergen build" in out
    assert cli.main(["check", "--catalog", str(folder / "catalog.yaml")]) == 0
    assert "draft (built in)" in capsys.readouterr().out
    (folder / "catalog.yaml").write_text("# mine\n")
    assert cli.main(["init", str(folder)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert (folder / "catalog.yaml").read_text() == "# mine\n"
    # `add` into a catalog that does not exist yet starts it with the same explanations.
    new = tmp_path / "other" / "catalog.yaml"
    new.parent.mkdir()
    photo = folder / "photos" / "example-photo.jpg"
    assert cli.main(["add", "--catalog", str(new), "--band", "B", "--album", "A",
                     "--photo", str(photo), "--cover", str(photo), "--copy"]) == 0  # fmt: skip
    assert "Every catalog has three profiles built in" in new.read_text()


def test_a_build_says_what_painting_will_cost_before_it_paints(project: Path, capsys):
    from types import SimpleNamespace

    from covergen.estimate import estimate, work_units
    from covergen.nst import StyleParams

    code = cli.main(["build", "--catalog", str(project / "catalog.yaml"), "--dry-run",
                     "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and "profile draft (32 px, 3 iterations" in err
    assert "3 pairs to paint, about" in err
    draft = StyleParams(size=256, scales=2, min_size=128, coarse_iterations=60, iterations=60)
    assert work_units(draft) == (60 + 50) * 128 * 128 + 60 * 256 * 256
    prior = estimate([draft] * 9, "cpu", "fp32")
    assert not prior.basis.startswith("from") and 60 < prior.seconds < 600
    # This machine's own paintings, when there are some, decide the rate.
    slow = SimpleNamespace(status="built", seconds=300.0, device="cpu",
                           params=draft.to_dict())  # fmt: skip
    own = estimate([draft] * 9, "cpu", "fp32", [slow, slow])
    assert own.basis == "from 2 earlier paintings here" and own.seconds == pytest.approx(2700)
    assert "45 min" in own.describe()
    assert estimate([draft] * 9, "cuda", "tf32").basis.endswith("not measured")
    # A feed-forward painting costs about the same whatever the pair; a cover's own network
    # its training, once per cover to train.
    fast = StyleParams(method="fast", size=768)
    painted = estimate([fast] * 6, "cpu", "fp32")
    trained = estimate([fast] * 6, "cpu", "fp32", covers_to_train=2)
    one_training = trained.seconds - painted.seconds
    assert painted.seconds < 10 and 60 < one_training / 2 < 180  # the measured 2-3 min
    longer = estimate([fast.replace(fast_iterations=600)] * 6, "cpu", "fp32", covers_to_train=2)
    assert longer.seconds - painted.seconds == pytest.approx(2 * one_training)


def test_rerun_keeps_its_values_in_the_catalog_when_asked(project: Path, capsys):
    catalog = project / "catalog.yaml"
    before = catalog.read_text()
    args = ["rerun", "gamma-three", "--catalog", str(catalog), "--device", "cpu", "-q"]
    # A bad value is a usage error before anything runs; nothing is recorded.
    assert cli.main([*args, "--set", "content_weight=-1"]) == 2
    assert "content_weight" in capsys.readouterr().err
    assert not (project / "cache" / "runs.sqlite").exists()
    assert cli.main([*args, "--set", "content_weight=3", "--keep", "-o", str(project)]) == 0
    out = capsys.readouterr().out
    assert "gamma-three: built" in out and (project / "gamma-three.png").is_file()
    assert "kept content_weight=3 in gamma-three's overrides" in out
    after = catalog.read_text()
    assert load_catalog(catalog).pair("gamma-three").overrides == {"content_weight": 3.0}
    # Every other byte stays: the only change is the new overrides block.
    assert after.replace("    overrides:\n      content_weight: 3.0\n", "") == before
    # A pair that overrides already gets the value replaced in place.
    assert cli.main(["rerun", "beta-two", "--catalog", str(catalog), "--device", "cpu", "-q",
                     "--set", "content_weight=5", "--keep"]) == 0  # fmt: skip
    assert load_catalog(catalog).pair("beta-two").overrides == {"content_weight": 5.0}
    assert catalog.read_text().count("content_weight: 5") == 1


def test_status_shows_the_latest_run_of_a_pair_a_rerun_included(project: Path, capsys):
    catalog = str(project / "catalog.yaml")
    assert cli.main(["build", "--catalog", catalog, "--device", "cpu", "--no-site", "-q"]) == 0
    assert cli.main(["rerun", "alpha-one", "--catalog", catalog, "--device", "cpu", "-q",
                     "--set", "content_weight=7"]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main(["status", "--catalog", catalog]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "rerun: built" in rows["alpha-one"] and " 7 " in rows["alpha-one"] + " "
    assert "rerun" not in rows["beta-two"]


def test_a_dry_run_says_it_would_download_and_a_mistyped_command_gets_a_suggestion(
    project: Path, capsys
):
    catalog = project / "catalog.yaml"
    catalog.write_text(
        catalog.read_text().replace("photo: photos/b.png", "photo: https://example.org/b.png")
    )
    assert cli.main(["build", "--catalog", str(catalog), "--dry-run", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "would download and paint beta-two" in out and "would paint alpha-one" in out
    assert cli.main(["biuld"]) == 2
    assert "did you mean 'build'?" in capsys.readouterr().err
