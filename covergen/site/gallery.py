"""What the site shows: one entry per catalog pair, from the pairs' states (``pairstates``).

A pair is *ready* when it has a painting to show: the latest result of it that verifies
(even if a later attempt failed); otherwise it is *pending*, and says why in the vocabulary
of ``pairstates.STATES``. Entries are plain frozen data for the templates; nothing here
writes files or knows HTML.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..catalog import ImageRef, Pair
from ..nst.params import param_specs, resolved_value
from ..outcome import Metrics
from ..pairstates import PairState
from ..safetext import is_web_url
from ..store.results import ResultStore
from .images import DerivedImage

IMAGE_DIR = "img"
PAIR_DIR = "pairs"
# The JPEG that stands for a picture without srcset support, and the one for share cards.
FALLBACK_WIDTH = 640
SHARE_WIDTH = 1280


@dataclass(frozen=True)
class ImageFile:
    """One file of a picture, by its path from the site's root."""

    path: str
    width: int
    height: int


@dataclass(frozen=True)
class Picture:
    """One image in every width and format the site has for it."""

    width: int
    height: int
    webp: tuple[ImageFile, ...]
    jpeg: tuple[ImageFile, ...]

    @property
    def fallback(self) -> ImageFile:
        """The JPEG for browsers that ignore srcset: the first at least FALLBACK_WIDTH wide."""
        return next((f for f in self.jpeg if f.width >= FALLBACK_WIDTH), self.jpeg[-1])

    @property
    def share(self) -> ImageFile:
        """The JPEG for link previews: the widest up to SHARE_WIDTH."""
        fitting = [f for f in self.jpeg if f.width <= SHARE_WIDTH]
        return fitting[-1] if fitting else self.jpeg[0]

    @property
    def aspect(self) -> str:
        return f"{self.width} / {self.height}"

    def small(self, width: int) -> Picture:
        """Only the files at most ``width`` wide (the narrowest, if none is)."""

        def kept(files: tuple[ImageFile, ...]) -> tuple[ImageFile, ...]:
            return tuple(f for f in files if f.width <= width) or files[:1]

        return replace(self, webp=kept(self.webp), jpeg=kept(self.jpeg))

    @property
    def unenlarged(self) -> Picture:
        """Only the files no wider than the image itself: where it is shown small (a card),
        the enlarged files of a painting would cost bytes and show nothing more."""
        return self.small(self.width)


@dataclass(frozen=True)
class Original:
    """The full-size result, as the engine wrote it."""

    path: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class Credit:
    text: str
    license: str
    license_label: str
    license_url: str  # "" unless a known licence or an http(s) URL
    source_url: str  # "" unless http(s): only those become links


@dataclass(frozen=True)
class ParamRow:
    name: str
    value: str
    overridden: bool


@dataclass(frozen=True)
class Render:
    seconds: float | None
    device: str
    iterations: int | None
    engine: str
    content_kept: float | None = None  # the judge's two numbers (docs/quality.md)
    style_taken: float | None = None
    faces: int | None = None  # faces protected; None when protection was off
    mode: str = "artistic"  # artistic or photo
    method: str = "gatys"  # gatys, arbitrary or fast (nst.params.METHODS)

    @property
    def method_name(self) -> str:
        """How the painting was made, for people."""
        return METHOD_NAMES.get(self.method, self.method)


METHOD_NAMES = {
    "gatys": "Optimised (Gatys et al.)",
    "arbitrary": "Arbitrary-style network (Ghiasi et al.)",
    "fast": "The cover's own network (Dumoulin et al.)",
}


@dataclass(frozen=True)
class AltTexts:
    result: str
    photo: str
    cover: str


@dataclass(frozen=True)
class Neighbour:
    page: str
    title: str


@dataclass(frozen=True)
class GalleryEntry:
    pair: Pair
    status: str  # ready, or the pair's state (pairstates.STATES) when it has nothing to show
    credits: Mapping[str, Credit]
    alt: AltTexts
    summary: str
    cover: Picture | None
    page: str | None = None  # pairs/<id>.html, for ready entries
    result: Picture | None = None
    photo: Picture | None = None
    original: Original | None = None
    render: Render | None = None
    params: tuple[ParamRow, ...] = ()
    overrides: tuple[ParamRow, ...] = ()
    previous: Neighbour | None = None
    next: Neighbour | None = None
    cover_sha256: str | None = None  # the cover shown: its style vector paints live
    compare: bool = True  # the photo is shown as large as the painting, with the slider
    withheld: tuple[str, ...] = ()  # roles the site does not show (show_photo/cover: none)

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def status_text(self) -> str:
        return "" if self.ready else "Not painted yet"

    @property
    def title(self) -> str:
        return self.pair.title


def image_sources(
    states: Sequence[PairState],
    results: ResultStore,
    input_image: Callable[[str], Path | None],
) -> dict[str, Path]:
    """Every image the site will show, as ``{sha256: file}``; unknown inputs are left out."""
    sources: dict[str, Path] = {}
    for state in states:
        if state.result is not None:
            sources[state.result.sha256] = results.image_path(state.result.key)
        roles = (state.photo_sha256, state.cover_sha256) if state.result else (state.cover_sha256,)
        for sha in roles:
            if sha and sha not in sources:
                with contextlib.suppress(OSError, ValueError):  # a store raising for a lack
                    if (path := input_image(sha)) is not None:
                        sources[sha] = Path(path)
    return sources


THUMBNAIL_WIDTH = 320  # the widest file of an input shown as a thumbnail


def shown_input(image: Picture | None, mode: str) -> Picture | None:
    """An input picture as the site's ``show_photo`` / ``show_cover`` says: whole, small
    files only (thumbnail), or nothing (none; its files are then never published)."""
    if image is None or mode == "none":
        return None
    return image.small(THUMBNAIL_WIDTH) if mode == "thumbnail" else image


def build_entries(
    states: Sequence[PairState],
    derived: Mapping[str, DerivedImage],
    show: tuple[str, str] = ("full", "full"),
) -> list[GalleryEntry]:
    """The entries to show, in the given order, with previous/next among the ready ones;
    ``show``: how much of the photo and of the cover (site.show_photo, site.show_cover)."""
    entries = [_entry(state, derived, show) for state in states]
    ready = [i for i, e in enumerate(entries) if e.ready]
    # The ready entries' links with None at both ends: entry n of `ready` is links[n + 1],
    # so its previous is links[n] and its next links[n + 2].
    links = [None, *(Neighbour(entries[i].page or "", entries[i].title) for i in ready), None]
    for position, index in enumerate(ready):
        entries[index] = replace(entries[index], previous=links[position], next=links[position + 2])
    return entries


def _entry(
    state: PairState, derived: Mapping[str, DerivedImage], show: tuple[str, str]
) -> GalleryEntry:
    pair = state.pair
    assert pair is not None  # invalid pairs are not shown
    common = dict(
        pair=pair,
        cover=shown_input(picture(derived.get(state.cover_sha256 or "")), show[1]),
        credits={"photo": credit_for(pair.photo), "cover": credit_for(pair.cover)},
        alt=alt_texts(pair),
        summary=summary_text(pair),
        cover_sha256=state.cover_sha256,
    )
    result = picture(derived.get(state.result.sha256)) if state.result else None
    if state.result is None or result is None:
        # A result the site cannot show (it would not decode) is pending, never a broken image.
        return GalleryEntry(status=state.state if state.result is None else "missing", **common)
    record, stored = state.shown, state.result
    scores = Metrics.of(stored.metrics)
    return GalleryEntry(
        status="ready",
        page=f"{PAIR_DIR}/{pair.id}.html",
        result=result,
        photo=shown_input(picture(derived.get(state.photo_sha256 or "")), show[0]),
        compare=show[0] == "full",
        withheld=tuple(
            role for role, mode in zip(("photo", "cover"), show, strict=True) if mode == "none"
        ),
        original=Original(
            original_path(stored.sha256), stored.width, stored.height, _size_of(state)
        ),
        render=Render(
            # The run log's figures; a reused record copies them from the result record.
            seconds=_first(record.seconds if record else None, stored.seconds),
            device=_first(record.device if record else None, stored.device) or "",
            iterations=_first(record.iterations if record else None, stored.iterations),
            engine=stored.engine_version,
            content_kept=scores.content_kept,
            style_taken=scores.style_taken,
            faces=_count(stored.metrics.get("faces")),
            mode=str(stored.params.get("mode") or "artistic"),
            method=str(stored.params.get("method") or "gatys"),
        ),
        params=param_rows(stored.params, pair.overrides, stored.metrics),
        overrides=override_rows(stored.params, pair.overrides, stored.metrics),
        **common,
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _size_of(state: PairState) -> int:
    try:
        return state.result_path.stat().st_size if state.result_path else 0
    except OSError:
        return 0


def picture(image: DerivedImage | None) -> Picture | None:
    if image is None or not image.variants:
        return None

    def files(fmt: str) -> tuple[ImageFile, ...]:
        return tuple(ImageFile(f"{IMAGE_DIR}/{v.name}", v.width, v.height) for v in image.of(fmt))

    return Picture(image.width, image.height, files("webp"), files("jpeg"))


def original_path(sha256: str) -> str:
    return f"{IMAGE_DIR}/{sha256[:20]}.png"


def alt_texts(pair: Pair) -> AltTexts:
    """Alt text for each role, written from the catalog's metadata."""
    year = f" ({pair.year})" if pair.year else ""
    return AltTexts(
        result=f"Band photo of {pair.band}, painted in the style of the album cover of "
        f"{pair.album}{year}",
        photo=f"Band photo of {pair.band}",
        cover=f"Album cover of {pair.album} by {pair.band}{year}",
    )


def summary_text(pair: Pair) -> str:
    year = f" ({pair.year})" if pair.year else ""
    return f"A photo of {pair.band}, painted in the style of the cover of {pair.album}{year}."


_CC = re.compile(r"^CC[- ]?(BY(?:-NC)?(?:-SA|-ND)?)[- ](\d\.\d)$", re.IGNORECASE)
_KNOWN_LICENCES = {
    "cc0": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "cc0-1.0": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "public-domain": ("Public domain", "https://creativecommons.org/publicdomain/mark/1.0/"),
    "public domain": ("Public domain", "https://creativecommons.org/publicdomain/mark/1.0/"),
    "pd": ("Public domain", "https://creativecommons.org/publicdomain/mark/1.0/"),
}


def licence_link(licence: str) -> tuple[str, str]:
    """A licence as shown (label) and where its terms are (URL, or "" when unknown)."""
    text = licence.strip()
    if not text:
        return "", ""
    if known := _KNOWN_LICENCES.get(text.lower()):
        return known
    if match := _CC.match(text):
        kind, version = match.group(1).lower(), match.group(2)
        return (
            f"CC {kind.upper()} {version}",
            f"https://creativecommons.org/licenses/{kind}/{version}/",
        )
    return text, (text if is_web_url(text) else "")


def credit_for(ref: ImageRef) -> Credit:
    label, url = licence_link(ref.license)
    return Credit(
        text=ref.credit,
        license=ref.license,
        license_label=label,
        license_url=url,
        source_url=ref.url if is_web_url(ref.url) else "",
    )


def shown_value(name: str, value: Any, metrics: Mapping[str, Any]) -> str:
    """A parameter's value as the page shows it: ``auto → 4`` where the engine chose."""
    return resolved_value(name, value, metrics) or "—"


def param_rows(
    params: Mapping[str, Any], overrides: Mapping[str, Any], metrics: Mapping[str, Any]
) -> tuple[ParamRow, ...]:
    """Every resolved parameter, in the order the engine declares them (names a newer or
    older engine knows come last); those the pair overrides are marked."""
    order = [spec.name for spec in param_specs()]
    names = [n for n in order if n in params] + sorted(n for n in params if n not in order)
    return tuple(
        ParamRow(name, shown_value(name, params[name], metrics), name in overrides)
        for name in names
    )


def override_rows(
    params: Mapping[str, Any], overrides: Mapping[str, Any], metrics: Mapping[str, Any]
) -> tuple[ParamRow, ...]:
    """The pair's own settings, in the catalog's order, with the values actually used."""
    return tuple(
        ParamRow(name, shown_value(name, params.get(name, value), metrics), True)
        for name, value in overrides.items()
    )
