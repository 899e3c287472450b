"""`render_site`: catalog + run log + results -> a static gallery in ``site/``.

The steps: find each pair's state (gallery), derive the images (images), render the pages
(theme), and write the whole site as one new version (staging). Pages link relatively, with
explicit ``index.html``, so the site works from disk, at a domain root and under a sub-path.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..catalog import Catalog, SiteSettings
from ..errors import CovergenError
from ..locks import site_lock
from ..pairstates import PairState, pair_states
from ..plaindata import plain
from ..runlog import RunLog
from ..safetext import counted
from ..store import digest as digest_of
from ..store.results import ResultStore
from ..stylevectors import StyleVectors
from .gallery import GalleryEntry, Picture, build_entries, image_sources
from .images import ImageDeriver
from .live import LiveFiles, default_runtime_dirs, prepare_live
from .staging import StagedSite, check_replaceable, unchanged_render
from .theme import Theme

# Bump when a change here changes the files rendered from the same inputs.
RENDER_VERSION = 1
# Files of an extra folder left out of the site: mkdocs' sitemaps carry the build date (and
# the gzip one a timestamp), so they would change every build and defeat byte-stable output.
EXTRA_SKIP = frozenset({"sitemap.xml", "sitemap.xml.gz"})


@dataclass(frozen=True)
class SiteReport:
    """What a render did."""

    out_dir: Path
    pages: int  # HTML pages written or kept
    written: int  # files new or changed
    unchanged: int  # files kept as they were (same inode and mtime)
    removed: int  # files that no longer belong to the site
    shown: int  # pairs on the index, pending ones included
    pending: tuple[str, ...]  # ids of pairs without a result to show (shown or left out)
    live: int = 0  # pages with the "Paint yourself" panel
    notes: tuple[str, ...] = ()  # what the build should say (why there is no live panel…)

    def describe(self) -> str:
        """One line for the build's summary."""
        pending = f", {len(self.pending)} pending" if self.pending else ""
        live = f", {self.live} with the live panel" if self.live else ""
        return (
            f"site: {counted(self.shown, 'pair')}{pending}, {counted(self.pages, 'page')}"
            f"{live}; {counted(self.written, 'file')} written, {self.unchanged} unchanged, "
            f"{self.removed} removed → {self.out_dir}"
        )


@dataclass(frozen=True)
class SiteView:
    """The site's settings as templates see them."""

    title: str
    description: str
    author: str
    base_url: str  # "" or an http(s) URL ending in "/"
    language: str = "en"

    @property
    def base_path(self) -> str:
        """The path part of base_url ("/gallery/"), or "" without one."""
        return (urlsplit(self.base_url).path or "/") if self.base_url else ""

    def absolute(self, path: str) -> str:
        """An absolute URL for a path from the site's root, or "" without a base URL."""
        return f"{self.base_url}{path}" if self.base_url else ""


@dataclass(frozen=True)
class PageView:
    kind: str  # index, pair, about, 404
    path: str  # from the site's root
    url: str  # canonical absolute URL, or ""


@dataclass(frozen=True)
class ShareImage:
    url: str
    width: int
    height: int
    alt: str


@dataclass(frozen=True)
class TagCount:
    name: str
    count: int


def render_site(
    catalog: Catalog,
    runlog: RunLog,
    results: ResultStore,
    input_image: Callable[[str], Path | None],
    out_dir: Path,
    *,
    cache_dir: Path,
    templates_dir: Path | None = None,
    show_pending: bool | None = None,
    extra_dirs: Mapping[str, Path] | None = None,
    style_vectors: StyleVectors | None = None,
    runtime_dirs: Sequence[Path] | None = None,
) -> SiteReport:
    """Render the gallery into ``out_dir``, replacing the previous version in one step.

    ``input_image`` maps an input's SHA-256 to its stored file (None when unknown).
    ``templates_dir`` overrides the built-in theme file by file; by default the
    ``templates/`` folder beside the catalog, when there is one. ``show_pending`` (default:
    the catalog's ``site.show_pending``) shows pairs without a result as placeholders
    instead of leaving them out. ``extra_dirs`` maps a folder of the site (``docs``) to a
    built folder copied in as it is, e.g. the mkdocs user guide. Files whose bytes did not
    change are kept, not rewritten.

    ``style_vectors`` (the covers' vectors, computed by the build: ``covergen.stylevectors``)
    adds the "Paint yourself" panel to pair pages and a page offering every cover, with
    onnxruntime-web from ``runtime_dirs`` (default: ``node_modules/onnxruntime-web`` beside
    the catalog or in the covergen checkout). When the panel cannot be made the site is
    rendered without it and the report's ``notes`` say why.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir)  # before any work: a folder we may not replace
    settings = catalog.site
    show = settings.show_pending if show_pending is None else show_pending
    theme = Theme(_user_templates(catalog, templates_dir))
    states = [s for s in pair_states(catalog, runlog, results) if s.pair is not None]
    visible = [s for s in states if show or s.result is not None]
    sources = image_sources(visible, results, input_image)
    deriver = ImageDeriver(Path(cache_dir) / "derived")
    paintings = frozenset(s.result.sha256 for s in visible if s.result is not None)
    live, notes = _live(style_vectors, catalog, Path(cache_dir) / "derived", runtime_dirs)
    # (prefix, path in the folder, file): one walk for the render key and the copy
    extras = [
        (prefix, path.relative_to(folder), path)
        for prefix, folder in sorted((extra_dirs or {}).items())
        for path in _files_under(Path(folder))
    ]
    key = _render_key(settings, show, theme, states, sources, deriver.recipe, extras, live)
    with site_lock(out_dir):
        figures = unchanged_render(out_dir, key)
        if figures is not None:
            kept = figures.pop("files")
            return SiteReport(out_dir, **figures, written=0, unchanged=kept, removed=0, notes=notes)
        try:
            derived = deriver.derive_all(sources, enlarge=paintings)
        except OSError as exc:
            raise _cannot_write(exc, deriver.root) from None
        all_entries = build_entries(states, derived, (settings.show_photo, settings.show_cover))
        pending = tuple(e.pair.id for e in all_entries if not e.ready)
        shown = [(s, e) for s, e in zip(states, all_entries, strict=True) if show or e.ready]
        entries = [e for _, e in shown]

        site = _site_view(settings)
        assets = theme.assets()
        shown_live = live if live is not None and live.available else None
        common: dict[str, Any] = {
            "site": site,
            "assets": {name: asset.url for name, asset in assets.items()},
            "entries": entries,
            "base": "",
            "live": shown_live,
        }
        pages = _pages(theme, site, common, entries, shown_live)

        files = {f"img/{v.name}": v.path for d in derived.values() for v in d.variants}
        live_pages = sum(1 for data in pages.values() if b"data-live=" in data)
        figures = dict(pages=sum(1 for p in pages if p.endswith(".html")), shown=len(entries),
                       pending=pending, live=live_pages)  # fmt: skip
        try:
            with StagedSite(out_dir) as staged:
                for path, data in pages.items():
                    staged.write(path, data)
                for name, asset in assets.items():
                    staged.copy(f"assets/{name}", asset.source)
                shown_pictures = [p for e in entries for p in (e.result, e.photo, e.cover) if p]
                # A set: pairs that show the same picture share its files.
                for path in sorted({f.path for p in shown_pictures for f in (*p.webp, *p.jpeg)}):
                    staged.copy(path, files[path])
                originals = {
                    entry.original.path: state.result_path
                    for state, entry in shown
                    if entry.original is not None and state.result_path is not None
                }  # a dict: pairs with the same inputs and parameters share one result
                for path, source in sorted(originals.items()):
                    staged.copy(path, source)
                if live_pages and shown_live is not None:
                    for file in sorted(shown_live.files.values(), key=lambda f: f.path):
                        staged.copy(file.path, file.source)
                for prefix, relative, source in extras:
                    if relative.as_posix() not in EXTRA_SKIP:
                        staged.copy(f"{prefix}/{relative.as_posix()}", source)
                counts = staged.commit(render={"key": key, **figures})
        except OSError as exc:  # a full disk, say: the staged copy is gone, the site as it was
            raise _cannot_write(exc, out_dir) from None
    return SiteReport(out_dir, **figures, **asdict(counts), notes=notes)


def _live(
    vectors: StyleVectors | None,
    catalog: Catalog,
    derived: Path,
    runtime_dirs: Sequence[Path] | None,
) -> tuple[LiveFiles | None, tuple[str, ...]]:
    """The live panel's files, or None when the caller asked for no panel (no vectors), and
    what the build should say of them."""
    if vectors is None:
        return None, ()
    dirs = tuple(runtime_dirs) if runtime_dirs is not None else default_runtime_dirs(catalog.root)
    try:
        live = prepare_live(vectors, derived, dirs)
    except OSError as exc:  # the derived network could not be written: no panel this time
        live = LiveFiles(problem=f"cannot write {exc.filename or derived} ({exc.strerror})")
    if not live.available:
        return live, (f"the gallery has no live panel: {live.problem}",)
    return live, tuple(
        f"the live panel leaves out the cover {sha[:12]}: {reason}"
        for sha, reason in sorted(vectors.skipped.items())
    )


def _render_key(
    settings: SiteSettings,
    show: bool,
    theme: Theme,
    states: Sequence[PairState],
    sources: Mapping[str, Path],
    recipe: str,
    extras: Sequence[tuple[str, Path, Path]],
    live: LiveFiles | None,
) -> str:
    """The digest of everything the site is made from: when it equals the one the site was
    last rendered with, rendering again would write the very same files."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode() + b"\0")

    add([__version__, RENDER_VERSION, recipe, plain(settings), show])
    for folder in theme.folders:
        for path in _files_under(folder):
            add([str(path.relative_to(folder)), digest_of(path.read_bytes())])
    for state in states:
        shown = state.shown  # what the pages show of the run (not its build number or time)
        run = [shown.seconds, shown.device, shown.iterations] if shown else None
        pair, result = plain(state.pair), plain(state.result)
        add([pair, state.state, result, run, state.photo_sha256, state.cover_sha256])
    add(sorted(sources))
    for prefix, relative, path in extras:
        add([prefix, str(relative), digest_of(path.read_bytes())])
    add(live.key() if live is not None else None)
    return digest.hexdigest()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _cannot_write(exc: OSError, where: Path) -> CovergenError:
    return CovergenError(
        f"cannot write {exc.filename or where} ({exc.strerror or exc})",
        field="site",
        hint=f"free some space (or fix the permissions) under {where}, then build again; "
        "until then the site keeps its previous version",
    )


def _user_templates(catalog: Catalog, templates_dir: Path | None) -> Path | None:
    if templates_dir is not None:
        return Path(templates_dir)
    candidate = catalog.root / "templates"
    return candidate if candidate.is_dir() else None


def _site_view(settings: SiteSettings) -> SiteView:
    base_url = settings.base_url.strip()
    if base_url and not base_url.endswith("/"):
        base_url += "/"
    return SiteView(
        title=settings.title,
        description=settings.description,
        author=settings.author,
        base_url=base_url,
    )


def _pages(
    theme: Theme,
    site: SiteView,
    common: Mapping[str, Any],
    entries: Sequence[GalleryEntry],
    live: LiveFiles | None,
) -> dict[str, bytes]:
    """Every rendered page, by its path from the site's root."""
    ready = [e for e in entries if e.ready]
    tags = Counter(tag for e in entries for tag in e.pair.tags)
    pages: dict[str, bytes] = {}

    def page(path: str, template: str = "", root: str = "", **extra: Any) -> None:
        template = template or path  # whose name without the extension is the page's kind
        url = site.absolute("" if path == "index.html" else path)
        view = PageView(template.partition(".")[0], path, url)
        pages[path] = theme.render(template, {**common, "page": view, "root": root, **extra})

    page(
        "index.html",
        tags=[TagCount(t, tags[t]) for t in sorted(tags, key=lambda t: (t.casefold(), t))],
        counts={"ready": len(ready), "pending": len(entries) - len(ready)},
        share=_share(site, ready[0].result, ready[0].alt.result) if ready else None,
    )
    for entry in ready:
        assert entry.page is not None and entry.result is not None
        page(
            entry.page,
            "pair.html",
            root="../",
            entry=entry,
            share=_share(site, entry.result, entry.alt.result),
            structured_data=structured_data(entry, site, root="../"),
        )
    covers = live.covers(entries) if live is not None else []
    if covers:
        page("live.html", covers=covers)
    page("about.html")
    # Hosts serve 404.html for a missing path at any depth: with a base URL its links are
    # made to resolve from the base path (<base href>), wherever it is served.
    page("404.html", base=site.base_path)
    page("robots.txt", sitemap_url=site.absolute("sitemap.xml"))
    if site.base_url:
        urls = [site.absolute(""), site.absolute("about.html")]
        urls += [site.absolute("live.html")] if covers else []
        urls += [site.absolute(e.page or "") for e in ready]
        page("sitemap.xml", urls=urls)
    return pages


def _share(site: SiteView, image: Picture | None, alt: str) -> ShareImage | None:
    """The Open Graph image: needs an absolute URL, so only with a base URL."""
    if image is None or not site.base_url:
        return None
    chosen = image.share
    return ShareImage(site.absolute(chosen.path), chosen.width, chosen.height, alt)


def structured_data(entry: GalleryEntry, site: SiteView, root: str) -> dict[str, Any]:
    """schema.org ImageObjects for the painting and the two images it is made from."""

    def url(path: str) -> str:
        return site.absolute(path) or f"{root}{path}"

    page_url = site.absolute(entry.page or "")
    node_id = {name: f"{page_url}#{name}" for name in ("painting", "photo", "cover")}

    def source(role: str, picture: Picture | None, name: str) -> dict[str, Any]:
        credit = entry.credits[role]
        node: dict[str, Any] = {"@type": "ImageObject", "@id": node_id[role], "name": name}
        if picture is not None:
            widest = picture.jpeg[-1]
            node |= {"contentUrl": url(widest.path), "width": widest.width, "height": widest.height}
        optional = {
            "creditText": credit.text,
            "copyrightNotice": ", ".join(t for t in (credit.text, credit.license_label) if t),
            # Both are URLs to schema.org's readers: a licence without a known URL stays text.
            "license": credit.license_url,
            "acquireLicensePage": credit.source_url,
        }
        return node | {k: v for k, v in optional.items() if v}

    assert entry.result is not None
    painting: dict[str, Any] = {
        "@type": "ImageObject",
        "@id": node_id["painting"],
        "name": entry.title,
        "description": entry.summary,
        "caption": entry.alt.result,
        "width": entry.result.width,
        "height": entry.result.height,
        "thumbnailUrl": url(entry.result.share.path),
        "creditText": site.author or site.title,
        "isBasedOn": [{"@id": node_id["photo"]}, {"@id": node_id["cover"]}],
    }
    if entry.original is not None:
        painting |= {"contentUrl": url(entry.original.path), "encodingFormat": "image/png"}
    if site.author:
        painting["creator"] = {"@type": "Person", "name": site.author}
    return {
        "@context": "https://schema.org",
        "@graph": [
            painting,
            source("photo", entry.photo, entry.alt.photo),
            source("cover", entry.cover, entry.alt.cover),
        ],
    }


__all__ = ["SiteReport", "render_site"]
