"""`covergen list`, `status` (pairstates) and `clean` (clean) on a tiny built project."""

from __future__ import annotations

from pathlib import Path

from covergen import cli
from covergen.build import BuildOptions, build, cache_paths
from covergen.catalog import load_catalog
from covergen.clean import clean
from covergen.pairstates import load_states, pair_states
from covergen.runlog import RunLog
from covergen.store.results import ResultStore


def built(project: Path, **options):
    return build(
        BuildOptions(
            catalog=project / "catalog.yaml",
            cache_dir=project / "cache",
            device="cpu",
            **{"render_site": False, **options},
        )
    )


def test_states_follow_the_run_log_and_the_results(project: Path):
    catalog = load_catalog(project / "catalog.yaml")
    paths = cache_paths(project / "cache")
    runlog, results = RunLog(paths["runlog"]), ResultStore(paths["results"])
    assert {s.state for s in pair_states(catalog, runlog, results)} == {"new"}
    summary = built(project, only=("alpha-one",))
    states = {s.id: s for s in pair_states(catalog, runlog, results)}
    assert states["alpha-one"].state == "built" and states["alpha-one"].result_path.is_file()
    assert states["beta-two"].state == "new" and states["beta-two"].overrides == ("content_weight",)
    results.remove(summary.outcomes[0].key)
    assert {s.id: s.state for s in pair_states(catalog, runlog, results)}["alpha-one"] == "missing"


def test_clean_removes_only_results_no_pair_refers_to(project: Path):
    first = {o.pair: o.key for o in built(project).outcomes}
    text = (project / "catalog.yaml").read_text().replace("content_weight: 2", "content_weight: 3")
    (project / "catalog.yaml").write_text(text)
    second = {o.pair: o.key for o in built(project).outcomes}
    rerun = built(project, only=("beta-two",), extra={"content_weight": "7"}, kind="rerun")
    rerun_key = rerun.outcomes[0].key
    catalog = load_catalog(project / "catalog.yaml")
    results = ResultStore(cache_paths(project / "cache")["results"])
    assert set(results.keys()) == {*first.values(), *second.values(), rerun_key}

    dry = clean(catalog, project / "cache", dry_run=True)
    assert dry.results_removed == 1 and len(set(results.keys())) == 5  # nothing removed
    report = clean(catalog, project / "cache", downloads=True, features=True)
    assert report.results_removed == 1  # beta-two's old result; the newest rerun stays
    assert set(results.keys()) == {*second.values(), rerun_key}
    assert report.images_removed == 0  # every download is still used
    assert not any(cache_paths(project / "cache")["features"].iterdir())  # every shard went
    assert report.bytes_freed > 0
    built(project)  # a build after the rerun: the experiment is no longer referred to
    assert clean(catalog, project / "cache").results_removed == 1
    assert set(results.keys()) == set(second.values())


def test_clean_removes_the_site_images_of_the_results_it_removes(project: Path):
    from covergen.site.images import ImageDeriver

    built(project, render_site=True, site_dir=project / "site")
    text = (project / "catalog.yaml").read_text().replace("content_weight: 2", "content_weight: 3")
    (project / "catalog.yaml").write_text(text)
    built(project, render_site=True, site_dir=project / "site")  # beta-two painted anew
    derived = ImageDeriver(cache_paths(project / "cache")["derived"])
    before = set(derived.store.keys())

    report = clean(load_catalog(project / "catalog.yaml"), project / "cache")
    assert report.results_removed == 1 and report.derived_removed == 1  # the old painting's
    assert len(set(derived.store.keys())) == len(before) - 1
    shown = [p for p in (project / "site" / "img").iterdir() if "-" in p.name]  # the variants
    assert shown and all(derived.store.path(p.name).is_file() for p in shown)


def test_list_and_status_commands(project: Path, capsys, monkeypatch):
    monkeypatch.chdir(project)
    built(project, only=("alpha-one",))
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "alpha-one" in out and "built" in out and "beta-two" in out and "new" in out
    assert "overrides: content_weight" in out
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "alpha-one" in out and "cpu" in out and "last build: finished" in out
    assert cli.main(["clean", "--dry-run"]) == 0
    assert "would remove 0 results" in capsys.readouterr().out


def test_clean_keeps_what_a_pair_the_catalog_cannot_read_has_built(project: Path):
    keys = {o.pair: o.key for o in built(project).outcomes}
    store = cache_paths(project / "cache")["images"] / "sha256"
    downloads = sorted(store.glob("*/*"))
    # A typo in beta-two's overrides: the pair is broken, not gone.
    text = (project / "catalog.yaml").read_text().replace("content_weight: 2", "sise: 64")
    (project / "catalog.yaml").write_text(text)
    catalog = load_catalog(project / "catalog.yaml", strict=False)
    assert [p.pair for p in catalog.problems] == ["beta-two"]
    report = clean(catalog, project / "cache", downloads=True)
    assert report.results_removed == 0 and report.images_removed == 0
    results = ResultStore(cache_paths(project / "cache")["results"])
    assert keys["beta-two"] in set(results.keys())
    assert sorted(store.glob("*/*")) == downloads


def test_clean_keeps_the_last_good_result_while_a_later_attempt_failed(project: Path):
    keys = {o.pair: o.key for o in built(project).outcomes}
    (project / "photos" / "a.png").rename(project / "photos" / "a-moved.png")
    failed = {o.pair: o.status for o in built(project).outcomes}
    assert failed["alpha-one"] == "failed"
    catalog = load_catalog(project / "catalog.yaml")
    assert clean(catalog, project / "cache").results_removed == 0
    assert keys["alpha-one"] in set(ResultStore(cache_paths(project / "cache")["results"]).keys())


def test_clean_keeps_a_painting_whose_pair_a_typo_gave_another_id(project: Path, capsys):
    keys = {o.pair: o.key for o in built(project).outcomes}
    catalog_file = project / "catalog.yaml"
    good = catalog_file.read_text()
    # `bnd:` for `band:`: the pair is broken and, with no band, goes by another id.
    catalog_file.write_text(good.replace("- band: Alpha", "- bnd: Alpha"))
    catalog = load_catalog(catalog_file, strict=False)
    assert [p.pair for p in catalog.problems] != ["alpha-one"]
    report = clean(catalog, project / "cache")
    assert report.results_removed == 0 and report.kept_unlisted == 1
    assert keys["alpha-one"] in set(ResultStore(cache_paths(project / "cache")["results"]).keys())
    assert (
        cli.main(["clean", "--catalog", str(catalog_file), "--cache-dir", str(project / "cache")])
        == 0
    )
    assert "kept everything of 1 pair the catalog does not list" in capsys.readouterr().out
    # The typo fixed, the pair shows its painting again without painting anything.
    catalog_file.write_text(good)
    states = {s.id: s for s in load_states(load_catalog(catalog_file), project / "cache")[1]}
    assert states["alpha-one"].state == "built"
    # With nothing broken, what no pair refers to goes.
    catalog_file.write_text(good.replace("content_weight: 2", "content_weight: 3"))
    built(project)
    assert clean(load_catalog(catalog_file), project / "cache").results_removed == 1


def test_two_catalogs_sharing_a_cache_keep_their_own_pairs_of_one_id(project: Path):
    # b.yaml's pair alpha-one has another photo than catalog.yaml's alpha-one.
    first = project / "catalog.yaml"
    second = project / "b.yaml"
    second.write_text(first.read_text().replace("photos/a.png", "photos/c.png"))
    cache = project / "cache"

    def build_site(catalog: Path, site: str):
        return build(
            BuildOptions(catalog=catalog, cache_dir=cache, site_dir=project / site, device="cpu")
        )

    keys_a = {o.pair: o for o in build_site(first, "site-a").outcomes}
    page_a = project / "site-a" / "pairs" / "alpha-one.html"
    shown_a = page_a.read_text()
    keys_b = {o.pair: o for o in build_site(second, "site-b").outcomes}
    assert keys_a["alpha-one"].photo != keys_b["alpha-one"].photo
    for catalog, mine in ((first, keys_a), (second, keys_b)):
        states = {s.id: s for s in load_states(load_catalog(catalog), cache)[1]}
        assert states["alpha-one"].record.key == mine["alpha-one"].key
        assert states["alpha-one"].photo_sha256 == mine["alpha-one"].photo
    # A's page shows A's photo even after B's build; a rebuild of A paints nothing.
    again = build_site(first, "site-a")
    assert {o.status for o in again.outcomes} == {"reused"}
    assert page_a.read_text() == shown_a
    assert (project / "site-b" / "pairs" / "alpha-one.html").read_text() != shown_a
    # Cleaning either catalog keeps the other's paintings.
    results = ResultStore(cache_paths(cache)["results"])
    assert clean(load_catalog(first), cache).results_removed == 0
    assert clean(load_catalog(second), cache).results_removed == 0
    assert {keys_a["alpha-one"].key, keys_b["alpha-one"].key} <= set(results.keys())


def test_clean_keeps_what_the_catalog_would_reuse_whatever_the_run_log_says(project: Path):
    catalog_file = project / "catalog.yaml"
    good = catalog_file.read_text()
    # alpha-one built under another id, then the id goes back: the log knows my-alpha only.
    catalog_file.write_text(good.replace("  - band: Alpha", "  - id: my-alpha\n    band: Alpha"))
    keys = {o.pair: o.key for o in built(project).outcomes}
    catalog_file.write_text(good)
    report = clean(load_catalog(catalog_file), project / "cache", downloads=True)
    assert report.results_removed == 0 and report.images_removed == 0
    assert keys["my-alpha"] in set(ResultStore(cache_paths(project / "cache")["results"]).keys())
    assert {o.status for o in built(project).outcomes} == {"reused"}


def test_clean_waits_for_a_journaled_run_log_and_refuses_without_one(project: Path):
    import pytest

    from covergen.errors import CovergenError

    built(project)
    paths = cache_paths(project / "cache")
    journal = paths["runlog"].with_name("runs.journal")
    journal.write_bytes(b'{"op": "start", "build": -1, "kind": "build", "started": 1}\n')
    # The disk has room again: the journal is added first, then clean goes on.
    clean(load_catalog(project / "catalog.yaml"), project / "cache")
    assert not journal.exists()
    paths["runlog"].unlink()
    with pytest.raises(CovergenError, match="no run log"):
        clean(load_catalog(project / "catalog.yaml"), project / "cache", downloads=True)
    assert any(paths["results"].rglob("*.png"))


def test_a_catalog_moved_with_its_folder_keeps_its_history(project: Path, tmp_path_factory):
    import shutil

    keys = {o.pair: o.key for o in built(project).outcomes}
    moved = tmp_path_factory.mktemp("moved") / "gallery"
    shutil.move(str(project), moved)
    catalog = load_catalog(moved / "catalog.yaml")
    states = {s.id: s for s in load_states(catalog, moved / "cache")[1]}
    assert {s.state for s in states.values()} == {"built"}
    assert states["alpha-one"].record.key == keys["alpha-one"]
    assert clean(catalog, moved / "cache").results_removed == 0
