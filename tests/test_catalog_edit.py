"""`covergen add`: a pair appended as text, the rest of the catalog kept byte for byte."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from covergen.catalog import CatalogError, ImageRef, Pair, edit, load_catalog
from covergen.catalog.edit import NewPair, add_pair, render_pair
from covergen.errors import CovergenError

# Comments everywhere: header, inline, between pairs, inside the list after the last pair,
# and a `site:` section (with its own comments) after `pairs:`.
CATALOG = """\
# covergen catalog: the gallery's source of truth.
# Paths are relative to this file.

defaults:
  size: 512        # long side in pixels
  iterations: 200

profiles:
  draft: {size: 256, iterations: 50}   # a quick look on a laptop
  final:
    size: 1024

pairs:
  # --- the seventies ---
  - id: joy-division-unknown-pleasures
    band: Joy Division        # Manchester
    album: 'Unknown Pleasures'
    year: 1979
    tags: [post-punk, "1970s"]
    photo:
      src: photos/joy-division.jpg
      credit: "Kevin Cummins"   # ask before publishing
      license: CC-BY-4.0
      url: https://example.org/jd
    cover: {src: covers/pulsar.png, credit: generated}

  # Wire, not the cable
  - band: Wire
    album: Pink Flag
    photo: photos/wire.jpg
    cover: covers/redlines.png
    overrides:
      style_weight: 20   # more paint
      # content_weight: 2 was too literal
  # - band: Someone
  #   album: Commented out

# ------------------------------------------------------------------
# Site settings (kept after the pairs on purpose)
site:
  title: "Covers, painted"   # shown in the header
  show_pending: yes
# the end
"""

# Byte offset where the list ends: after the comments indented into it.
END_OF_LIST = len(CATALOG[: CATALOG.index("\n\n# ----") + 1].encode())

# The same catalog written with the `-` at column 0 and no blank lines between pairs.
FLUSH_CATALOG = """\
# flush-left list
pairs:
- band: Joy Division   # Manchester
  album: Unknown Pleasures
  photo: {src: photos/joy-division.jpg}
  cover: covers/pulsar.png
- band: Wire
  album: Pink Flag
  photo: photos/wire.jpg
  cover:
    src: covers/redlines.png   # generated
    credit: samples/make_covers.py
# site settings follow
site:
  title: Covers
"""

HOSTILE = [
    "Motörhead",
    "AC/DC",
    '"quoted"',
    "it's",
    "#hash",
    "a # not a comment",
    ": colon",
    "key: value",
    "- dash",
    "yes",
    "no",
    "null",
    "~",
    "1979",
    "0x1F",
    "1e3",
    "true",
    "two\nlines",
    "tab\there",
    "back\\slash",
    "{flow: map}",
    "[flow, list]",
    "&anchor *alias !tag",
    "%percent @at `tick`",
    "|literal",
    ">folded",
    "<script>alert(1)</script>",
    "emoji 🎸 and \u2028 separator",
]


def full_pair(**changes: object) -> NewPair:
    """A pair with every field given."""
    values: dict[str, object] = {
        "band": "Motörhead",
        "album": "Ace of Spades",
        "photo": "photos/motorhead.jpg",
        "cover": "https://example.org/covers/ace.png",
        "year": 1980,
        "tags": ("heavy metal", "1980s"),
        "notes": "Lemmy's bass: loud.",
        "photo_credit": "Jane Doe",
        "photo_license": "CC-BY-SA-4.0",
        "photo_url": "https://example.org/photo",
        "cover_credit": "Joe Petagno",
        "cover_license": "all rights reserved",
        "cover_url": "https://example.org/cover",
    }
    values.update(changes)
    return NewPair(**values)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str | bytes, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def inserted_block(old: bytes, new: bytes, at: int | None = None) -> bytes:
    """The run of bytes inserted into ``old`` (at ``at``, else wherever it fits) to give ``new``.

    Fails unless removing that one run from ``new`` gives back ``old`` byte for byte.
    """
    if at is None:
        at = 0
        while at < len(old) and old[at] == new[at]:
            at += 1
    size = len(new) - len(old)
    assert size > 0
    assert new[:at] + new[at + size :] == old, "the edit changed more than one inserted block"
    return new[at : at + size]


def assert_added(pair: Pair, new: NewPair, overrides: dict[str, object] | None = None) -> None:
    """The parsed pair carries exactly what was given."""
    assert pair.id == new.pair_id
    assert pair.band == new.band
    assert pair.album == new.album
    assert pair.year == new.year
    assert pair.tags == new.tags
    assert pair.notes == new.notes
    assert pair.photo == ImageRef(new.photo, new.photo_credit, new.photo_license, new.photo_url)
    assert pair.cover == ImageRef(new.cover, new.cover_credit, new.cover_license, new.cover_url)
    assert dict(pair.overrides) == (overrides or {})


def test_adds_last_and_keeps_every_other_byte(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    new = full_pair(overrides={"content_weight": 0.5})

    assert add_pair(path, new) == "motorhead-ace-of-spades"

    catalog = load_catalog(path)
    assert [p.id for p in catalog.pairs] == [
        "joy-division-unknown-pleasures",
        "wire-pink-flag",
        "motorhead-ace-of-spades",
    ]
    assert_added(catalog.pairs[-1], new, {"content_weight": 0.5})
    assert catalog.site.title == "Covers, painted"

    # After the comments that still belong to the list, before the site section's own.
    block = inserted_block(CATALOG.encode(), path.read_bytes(), END_OF_LIST)
    # The pairs are separated by blank lines, so the new one is too; same indentation.
    text = block.decode()
    assert text.startswith('\n  - band: "Motörhead"\n    album: ')
    assert text.endswith("\n")
    # Nested blocks follow the file's two-space step.
    assert '    photo:\n      src: "photos/motorhead.jpg"\n' in text


def test_flush_left_list(tmp_path: Path) -> None:
    path = write(tmp_path, FLUSH_CATALOG)
    new = full_pair()

    add_pair(path, new)

    catalog = load_catalog(path)
    assert_added(catalog.pairs[-1], new)
    # A column-0 comment after a column-0 list opens the next section: insert before it.
    at = FLUSH_CATALOG.index("# site settings")
    block = inserted_block(FLUSH_CATALOG.encode(), path.read_bytes(), at)
    assert block.decode().startswith('- band: "Motörhead"\n  album: ')


def test_matches_wider_indentation(tmp_path: Path) -> None:
    text = (
        "pairs:\n"
        "    -   band: Wire\n"
        "        album: Pink Flag\n"
        "        photo:\n"
        "            src: photos/wire.jpg\n"
        "        cover: covers/redlines.png\n"
    )
    path = write(tmp_path, text)

    add_pair(path, full_pair())

    block = inserted_block(text.encode(), path.read_bytes(), len(text))
    lines = block.decode().splitlines()
    assert lines[0] == '    -   band: "Motörhead"'
    assert lines[1].startswith('        album: "Ace of Spades"')
    assert '        photo:\n            src: "photos/motorhead.jpg"\n' in block.decode()
    assert_added(load_catalog(path).pairs[-1], full_pair())


def test_last_pair_ending_in_a_block_scalar(tmp_path: Path) -> None:
    text = (
        "pairs:\n"
        "  - band: Wire\n"
        "    album: Pink Flag\n"
        "    photo: photos/wire.jpg\n"
        "    cover: covers/redlines.png\n"
        "    notes: |\n"
        "      Twenty-one songs.\n"
        "      Thirty-five minutes.\n"
        "\n"
        "site:\n"
        "  title: Covers\n"
    )
    path = write(tmp_path, text)

    add_pair(path, full_pair())

    catalog = load_catalog(path)
    assert catalog.pairs[0].notes == "Twenty-one songs.\nThirty-five minutes."
    assert_added(catalog.pairs[-1], full_pair())
    # Before the blank line that follows the scalar, which is not part of it.
    inserted_block(text.encode(), path.read_bytes(), text.index("\n\nsite:") + 1)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("pairs: []   # none yet\n", "pairs:   # none yet\n"),
        ("pairs:   # none yet\n", "pairs:   # none yet\n"),
        ("pairs: ~\n", "pairs:\n"),
        ("pairs: null\n", "pairs:\n"),
    ],
)
def test_empty_pairs_become_a_block_list(tmp_path: Path, before: str, after: str) -> None:
    head = "# header\ndefaults:\n  size: 256\n"
    tail = "\n# site settings\nsite:\n  title: Covers\n"
    path = write(tmp_path, head + before + tail)
    new = full_pair()

    add_pair(path, new)

    catalog = load_catalog(path)
    assert len(catalog.pairs) == 1
    assert_added(catalog.pairs[0], new)
    # Only the empty value went; the pair is inserted under the key.
    block = inserted_block((head + after + tail).encode(), path.read_bytes(), len(head + after))
    assert block.decode().startswith('  - band: "Motörhead"\n')


def test_second_pair_after_the_first(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs: []\nsite:\n  title: Covers\n")
    first, second = full_pair(), full_pair(album="Overkill", year=1979)

    add_pair(path, first)
    add_pair(path, second)

    pairs = load_catalog(path).pairs
    assert [p.id for p in pairs] == ["motorhead-ace-of-spades", "motorhead-overkill"]
    assert_added(pairs[1], second)


def test_no_pairs_key_appends_one(tmp_path: Path) -> None:
    text = "# no pairs yet\nsite:\n  title: Covers   # inline\n# trailing comment\n"
    path = write(tmp_path, text)

    add_pair(path, full_pair())

    assert_added(load_catalog(path).pairs[-1], full_pair())
    block = inserted_block(text.encode(), path.read_bytes(), len(text.encode()))
    assert block.decode().startswith('\npairs:\n  - band: "Motörhead"\n')


def test_no_trailing_newline(tmp_path: Path) -> None:
    text = CATALOG.rstrip("\n")
    path = write(tmp_path, text)

    add_pair(path, full_pair())

    assert_added(load_catalog(path).pairs[-1], full_pair())
    inserted_block(text.encode(), path.read_bytes(), END_OF_LIST)


def test_last_line_of_the_list_without_newline(tmp_path: Path) -> None:
    text = "pairs:\n  - band: Wire\n    album: Pink Flag\n    photo: a.jpg\n    cover: b.png"
    path = write(tmp_path, text)

    add_pair(path, full_pair())

    new_text = path.read_bytes()
    assert new_text.endswith(b"\n")
    block = inserted_block(text.encode(), new_text, len(text))
    assert block.startswith(b'\n  - band: "Mot')
    assert_added(load_catalog(path).pairs[-1], full_pair())


def test_crlf_line_endings_are_kept(tmp_path: Path) -> None:
    text = CATALOG.replace("\n", "\r\n")
    path = write(tmp_path, text)
    new = full_pair(notes="two\nlines\r\nhere")

    add_pair(path, new)

    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")
    at = END_OF_LIST + CATALOG[: CATALOG.index("\n\n# ----") + 1].count("\n")
    block = inserted_block(text.encode(), data, at)
    assert block.startswith(b"\r\n  - band:")
    assert_added(load_catalog(path).pairs[-1], new)


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    add_pair(path, full_pair())

    assert path.read_text().startswith('pairs:\n  - band: "Motörhead"\n')
    assert_added(load_catalog(path).pairs[-1], full_pair())


def test_creates_a_missing_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"

    add_pair(path, full_pair())

    text = path.read_text()
    assert text.startswith("# covergen catalog")
    assert "\npairs:\n  - band:" in text
    assert_added(load_catalog(path).pairs[-1], full_pair())


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_strings_round_trip(tmp_path: Path, hostile: str) -> None:
    path = write(tmp_path, CATALOG)
    new = full_pair(
        id="hostile",
        band=hostile,
        album=hostile,
        notes=hostile,
        tags=(hostile, "plain"),
        photo=f"photos/{hostile}.jpg",
        photo_credit=hostile,
        cover_license=hostile,
    )

    add_pair(path, new)

    catalog = load_catalog(path)
    assert_added(catalog.pairs[-1], new)
    assert catalog.site.title == "Covers, painted"
    inserted_block(CATALOG.encode(), path.read_bytes())


def test_overrides_numbers_and_lists(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    new = full_pair(
        overrides={
            "content_weight": 0.35,
            "tv_weight": 1e-5,
            "iterations": 300,
            "style_layers": ["relu1_1", "relu3_1", "relu5_1"],
            "preserve_color": "luminance",
        }
    )

    add_pair(path, new)

    catalog = load_catalog(path)
    pair = catalog.pairs[-1]
    assert_added(
        pair,
        new,
        {
            "content_weight": 0.35,
            "tv_weight": 1e-5,
            "iterations": 300,
            "style_layers": ("relu1_1", "relu3_1", "relu5_1"),
            "preserve_color": "luminance",
        },
    )
    params = catalog.params_for(pair, "final")
    assert (params.size, params.iterations, params.content_weight) == (1024, 300, 0.35)
    text = path.read_text()
    assert "      iterations: 300\n" in text
    assert '      style_layers: ["relu1_1", "relu3_1", "relu5_1"]\n' in text


def test_default_and_explicit_ids(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)

    assert add_pair(path, full_pair(band="AC/DC", album="Highway to Hell")) == (
        "ac-dc-highway-to-hell"
    )
    assert add_pair(path, full_pair(id="lemmy", album="Overkill")) == "lemmy"
    assert [p.id for p in load_catalog(path).pairs][-2:] == ["ac-dc-highway-to-hell", "lemmy"]


def test_text_is_stripped_as_the_catalog_reads_it(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)

    add_pair(path, full_pair(band="  Motörhead ", tags=(" loud", "loud ", "fast"), id=""))

    pair = load_catalog(path).pairs[-1]
    assert (pair.id, pair.band, pair.tags) == (
        "motorhead-ace-of-spades",
        "Motörhead",
        ("loud", "fast"),
    )


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


def test_duplicate_id_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    before = snapshot(path)

    with pytest.raises(CovergenError) as caught:
        add_pair(path, full_pair(band="Wire", album="Pink Flag", year=1977))
    assert caught.value.pair == "wire-pink-flag"
    assert caught.value.field == "id"
    assert "--id wire-pink-flag-1977" in caught.value.hint
    with pytest.raises(CovergenError) as caught:
        add_pair(path, full_pair(id="joy-division-unknown-pleasures"))
    assert caught.value.field == "id"
    assert snapshot(path) == before


def test_underivable_id_asks_for_one(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)

    with pytest.raises(CovergenError) as caught:
        add_pair(path, full_pair(band="東京事変", album="教育"))
    assert caught.value.field == "id"
    assert "--id" in caught.value.hint
    add_pair(path, full_pair(band="東京事変", album="教育", id="tokyo-jihen-kyoiku"))
    assert load_catalog(path).pairs[-1].band == "東京事変"


def test_invalid_override_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    before = snapshot(path)

    with pytest.raises(CatalogError) as caught:
        add_pair(path, full_pair(overrides={"content_wieght": 5}))
    fields = [problem.field for problem in caught.value.problems]
    assert fields == ["overrides.content_wieght"]
    assert "content_weight" in caught.value.problems[0].hint  # did you mean…
    assert snapshot(path) == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"year": 79}, "year"),
        ({"overrides": {"size": 5}}, "overrides.size"),
        ({"photo_url": "ftp://example.org/x"}, "photo.url"),
        ({"band": "  "}, "band"),
        ({"id": "Not A Slug"}, "id"),
    ],
)
def test_invalid_values_are_refused(tmp_path: Path, changes: dict[str, object], field: str) -> None:
    path = write(tmp_path, CATALOG)
    before = snapshot(path)

    with pytest.raises(CatalogError) as caught:
        add_pair(path, full_pair(**changes))
    assert field in [problem.field for problem in caught.value.problems]
    assert snapshot(path) == before


def test_broken_catalog_is_reported_not_edited(tmp_path: Path) -> None:
    text = "pairs:\n  - band: [unclosed\n"
    path = write(tmp_path, text)

    with pytest.raises(CatalogError, match="malformed YAML"):
        add_pair(path, full_pair())
    assert path.read_text() == text


def test_crash_during_write_leaves_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, CATALOG)
    before = snapshot(path)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(edit.os, "replace", crash)
    with pytest.raises(CovergenError, match="disk on fire") as caught:
        add_pair(path, full_pair())
    assert caught.value.field == "catalog" and "was not changed" in caught.value.hint
    assert snapshot(path) == before  # same bytes, and no temporary file left behind


def test_permission_bits_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    path.chmod(0o640)

    add_pair(path, full_pair())

    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["catalog.yaml"]


def test_symlinked_catalog_stays_a_link(tmp_path: Path) -> None:
    real = write(tmp_path, CATALOG, name="real.yaml")
    link = tmp_path / "catalog.yaml"
    link.symlink_to(real.name)

    add_pair(link, full_pair())

    assert link.is_symlink()
    assert load_catalog(real).pairs[-1].band == "Motörhead"


def test_render_pair_is_one_list_item() -> None:
    new = full_pair(band="yes", album="1979", overrides={"style_layers": ["relu1_1"]})

    text = render_pair(new, "  ")

    assert text.startswith('  - band: "yes"\n    album: "1979"\n')
    assert yaml.safe_load("pairs:\n" + text) == {
        "pairs": [
            {
                "band": "yes",
                "album": "1979",
                "year": 1980,
                "tags": ["heavy metal", "1980s"],
                "notes": "Lemmy's bass: loud.",
                "photo": {
                    "src": "photos/motorhead.jpg",
                    "credit": "Jane Doe",
                    "license": "CC-BY-SA-4.0",
                    "url": "https://example.org/photo",
                },
                "cover": {
                    "src": "https://example.org/covers/ace.png",
                    "credit": "Joe Petagno",
                    "license": "all rights reserved",
                    "url": "https://example.org/cover",
                },
                "overrides": {"style_layers": ["relu1_1"]},
            }
        ]
    }


def test_render_pair_quotes_unknown_override_names() -> None:
    text = render_pair(full_pair(overrides={"x: 1\n  y": 2}), "")

    assert yaml.safe_load(text)[0]["overrides"] == {"x: 1\n  y": 2}


def _add_one(catalog: str, number: int, start) -> None:
    start.wait()
    add_pair(Path(catalog), NewPair(f"Band {number}", "Album", "p.jpg", "c.jpg"))


def test_concurrent_adds_keep_every_pair(tmp_path: Path):
    import multiprocessing

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    before = len(load_catalog(catalog).pairs)
    context = multiprocessing.get_context("fork")
    start = context.Barrier(12)
    workers = [context.Process(target=_add_one, args=(str(catalog), n, start)) for n in range(12)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 12
    ids = {pair.id for pair in load_catalog(catalog).pairs}
    assert len(ids) == before + 12
    assert {f"band-{n}-album" for n in range(12)} <= ids


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("\x7fdel", "U+007F"),
        ("\x1b[31mred", "U+001B"),
        ("a\u202eb", "U+202E"),
        ("\udcff", "surrogate"),
    ],
)
def test_control_characters_are_refused_and_nothing_is_written(
    tmp_path: Path, text: str, words: str
) -> None:
    path = write(tmp_path, CATALOG)
    with pytest.raises(CovergenError, match=re.escape(words)) as caught:
        add_pair(path, full_pair(band=text))
    assert caught.value.field == "band" and "--band" in caught.value.hint
    assert path.read_text() == CATALOG
