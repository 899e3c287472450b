"""Catalog parsing and validation: every problem at once, with pair, field, line and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from covergen.catalog import BuildSettings, CatalogError, load_catalog, parse_catalog, slugify
from covergen.errors import CovergenError
from covergen.nst import StyleParams
from covergen.safetext import is_web_url

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
site:
  title: Test gallery
defaults:
  size: 64
profiles:
  draft: {size: 32, iterations: 5}
  final: {size: 128}
pairs:
  - band: Motörhead
    album: Ace of Spades
    year: 1980
    tags: [metal]
    photo: {src: photos/a.jpg, credit: Someone, license: CC0-1.0, url: https://example.org/a}
    cover: covers/b.png
    overrides:
      content_weight: 5
  - id: second
    band: B
    album: C
    photo: {src: "https://example.org/p.jpg"}
    cover: {src: c.png}
"""


def parse(text: str, strict: bool = True):
    return parse_catalog(text, Path("/tmp/catalog.yaml"), strict=strict)


def problems_of(text: str):
    with pytest.raises(CatalogError) as info:
        parse(text)
    return info.value.problems


def test_a_good_catalog_resolves_defaults_profiles_and_overrides():
    catalog = parse(GOOD)
    first, second = catalog.pairs
    assert first.id == "motorhead-ace-of-spades"
    assert first.photo.credit == "Someone" and first.cover.src == "covers/b.png"
    assert is_web_url(second.photo.src)
    assert catalog.params_for(first) == StyleParams(size=64, content_weight=5)
    assert catalog.params_for(first, "draft") == StyleParams(
        size=32, iterations=5, content_weight=5
    )
    assert catalog.params_for(second, "final", {"tv_weight": "0"}).tv_weight == 0
    assert catalog.choose_profile(None, "cpu") == "draft"
    assert catalog.choose_profile(None, "cuda") == "final"
    with pytest.raises(CovergenError, match="no profile"):
        catalog.choose_profile("fast", "cpu")


def test_the_shipped_sample_catalog_is_valid():
    catalog = load_catalog(ROOT / "catalog.yaml")
    assert len(catalog.pairs) >= 6
    assert any(pair.overrides for pair in catalog.pairs)
    for pair in catalog.pairs:
        for ref in (pair.photo, pair.cover):
            assert (catalog.root / ref.src).is_file(), ref.src
            assert ref.credit and ref.license
    assert "# Bold red strokes" in (ROOT / "catalog.yaml").read_text()  # the override says why


def test_every_problem_is_reported_at_once():
    text = (
        GOOD.replace("year: 1980", "year: eighty")
        .replace("content_weight: 5", "content_wieght: 5\n      size: 100000")
        .replace("  - id: second", "  - id: Second Pair!\n    colour: red")
    )
    problems = problems_of(text)
    described = "\n".join(p.describe() for p in problems)
    assert "year" in described and "four digits" in described
    assert "did you mean 'content_weight'" in described
    assert "size" in described and "4096" in described
    assert "not a slug" in described
    assert "unknown key 'colour'" in described
    assert all(p.line for p in problems)
    assert [p.line for p in problems] == sorted(p.line for p in problems)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("pairs: [1, 2", "malformed YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("pairs:\n  - band: A\n    band: B\n", "duplicate key 'band'"),
        ("site: {title: x}\n", "no `pairs:` list"),
        ("pairs:\n  - band: A\n    album: B\n    photo: p.jpg\n", "cover: is missing"),
        (
            "pairs:\n  - band: A\n    album: B\n    photo: ftp://x/p.jpg\n    cover: c.png\n",
            "ftp:// sources are not supported",
        ),
        ("pairs:\n  - album: B\n    photo: p.jpg\n    cover: c.png\n", "band: is missing"),
        ("site: {base_url: example.org}\npairs: []\n", "not an http(s) address"),
        ("build: {executor: dask}\npairs: []\n", "no executor called 'dask'"),
        ("build: {executer: ray}\npairs: []\n", "did you mean 'executor'"),
        ("build: {executor: [ray]}\npairs: []\n", "build.executor"),
        ("pairz: []\n", "did you mean 'pairs'"),
        (
            "defaults: {content_layers: relu4_9}\n"
            "pairs:\n  - {band: A, album: B, photo: p, cover: c}\n",
            "relu4_9",
        ),
    ],
)
def test_bad_catalogs_say_what_is_wrong(text, words):
    described = "\n".join(p.describe() for p in problems_of(text))
    assert words in described


def test_build_settings_are_read_and_default_to_the_local_executor():
    assert parse("pairs: []\n").build == BuildSettings()
    settings = parse("build:\n  executor: ray\n  ray_address: head:6379\npairs: []\n").build
    assert settings == BuildSettings(executor="ray", ray_address="head:6379")


def test_duplicate_ids_are_refused_with_both_lines():
    text = GOOD + "  - band: Motörhead\n    album: Ace of Spades\n    photo: x\n    cover: y\n"
    (problem,) = problems_of(text)
    assert problem.field == "id" and "line 9" in problem.hint


def test_an_alias_bomb_is_stopped():
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("pairs: *a8")
    described = "\n".join(p.describe() for p in problems_of("\n".join(lines)))
    assert "alias bomb" in described


def test_lenient_loading_leaves_out_bad_pairs_only():
    text = GOOD.replace("  - id: second\n    band: B\n", "  - id: second\n    band: [B]\n")
    catalog = parse(text, strict=False)
    assert [p.id for p in catalog.pairs] == ["motorhead-ace-of-spades"]
    assert catalog.problems[0].pair == "second"
    with pytest.raises(CatalogError):  # a file-level problem still stops everything
        parse("defaults: {size: huge}\n" + GOOD.split("\n", 4)[4], strict=False)


def test_slugs():
    assert slugify("Motörhead — Ace of Spades!") == "motorhead-ace-of-spades"
    assert slugify("AC/DC") == "ac-dc"


def test_missing_catalog_file(tmp_path):
    with pytest.raises(CovergenError, match="no catalog"):
        load_catalog(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe pairs")
    with pytest.raises(CatalogError, match="UTF-8"):
        load_catalog(tmp_path / "bad.yaml")


MALFORMED = ["http://[::1/credit", "https://" + "a" * 64 + ".example/", "http://h:99999/"]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_addresses_fail_their_pair_or_the_site_block_never_a_crash(
    project: Path, bad: str, capsys
):
    from covergen import cli

    catalog = project / "catalog.yaml"
    text = catalog.read_text()
    catalog.write_text(
        text.replace("photo: {src: photos/a.png, credit: A. Person}",
                     f"photo: {{src: photos/a.png, credit: A. Person, url: '{bad}'}}")
        .replace("photo: photos/c.png", f"photo: '{bad}x.png'")
    )  # fmt: skip
    for command in (["check"], ["list"], ["status"]):
        code = cli.main([*command, "--catalog", str(catalog)])
        out = capsys.readouterr()
        assert code in (0, 2) and "internal error" not in out.err, (command, out.err)
    code = cli.main(["check", "--catalog", str(catalog)])
    err = capsys.readouterr().err
    assert code == 2 and "pair 'alpha-one': photo.url" in err and "gamma-three" in err
    assert "photo.src" in err and "redirected" not in err
    # In the site block, the whole catalog is refused with the field named.
    catalog.write_text(f"site: {{base_url: '{bad}'}}\n" + text)
    for command in (["check"], ["list"], ["status"], ["build", "--dry-run"]):
        code = cli.main([*command, "--catalog", str(catalog)])
        err = capsys.readouterr().err
        assert code == 2 and "site.base_url" in err, (command, err)


def test_a_base_url_with_a_password_is_refused_and_never_echoed(project: Path):
    catalog = project / "catalog.yaml"
    catalog.write_text("site: {base_url: 'https://me:s3cret@example.org/'}\n" + catalog.read_text())
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog)
    assert "site.base_url" in caught.value.describe() and "password" in caught.value.describe()
    assert "s3cret" not in caught.value.describe()
