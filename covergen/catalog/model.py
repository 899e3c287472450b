"""The catalog as data: pairs, their images and credits, the site and build settings, profiles;
resolved parameters per pair (``Catalog.params_for``). Built only by the reader."""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CovergenError, Problem
from ..nst import ParameterError, StyleParams
from ..safetext import printable

MAX_ID_LENGTH = 100  # ids name files and folders of the site
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
PROFILE_ENV = "COVERGEN_PROFILE"


class CatalogError(CovergenError):
    """The catalog has problems; ``problems`` lists all of them."""

    def __init__(self, path: Path, problems: list[Problem]):
        self.path = path
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        details = "\n".join(p.describe() for p in problems)
        super().__init__(f"{path}: {count}\n{details}")

    def describe(self) -> str:
        return self.message


@dataclass(frozen=True)
class ImageRef:
    """Where an input image comes from and whom to credit."""

    src: str  # a path relative to the catalog, or an http(s) URL
    credit: str = ""
    license: str = ""
    url: str = ""


@dataclass(frozen=True)
class Pair:
    id: str
    band: str
    album: str
    photo: ImageRef
    cover: ImageRef
    year: int | None = None
    tags: tuple[str, ...] = ()
    notes: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = field(default=None, metadata={"written": False})

    @property
    def title(self) -> str:
        return f"{self.band} — {self.album}"


@dataclass(frozen=True)
class SiteSettings:
    title: str = "covergen"
    description: str = "Bands, painted in the style of their own album covers."
    base_url: str = ""
    author: str = ""
    show_pending: bool = True
    publish: str = ""  # git:REMOTE or dir:PATH (see docs/publishing.md)
    publish_branch: str = "gh-pages"
    cname: str = ""
    publish_keep_history: bool = False
    # How much of each input the site publishes: full (the image as large as the painting,
    # the comparison slider), thumbnail (a small copy beside the painting, no slider) or
    # none (credit only; the file is not published). Rights differ: see docs/faq.md.
    show_photo: str = "full"
    show_cover: str = "full"


# Profiles every catalog has, unless it defines one of the same name (which then wins whole):
# with no profile named, a CPU (or Apple's GPU) paints the draft and an NVIDIA GPU the final,
# so a catalog without profiles never paints 512 px for 15 minutes a pair on a laptop.
BUILTIN_PROFILES: Mapping[str, Mapping[str, Any]] = {
    "draft": {"size": 256, "scales": 2, "min_size": 128, "coarse_iterations": 60,
              "iterations": 60},
    "final": {"size": 768},
    "preview": {"method": "arbitrary", "size": 768},
}  # fmt: skip

SHOW_CHOICES = ("full", "thumbnail", "none")  # site.show_photo, site.show_cover

# Where `covergen build` runs the jobs: executors.EXECUTORS, written out so that reading a
# catalog does not import the executors (a test compares).
EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class BuildSettings:
    """How builds of this catalog run unless the command line says otherwise."""

    executor: str = "local"  # local, process or ray (docs/cluster.md)
    ray_address: str = ""  # the Ray cluster to join; empty: a Ray instance on this machine


def _keys(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("written", True))


# The keys a catalog may hold, derived from the dataclasses they fill.
PAIR_KEYS = _keys(Pair)
IMAGE_KEYS = _keys(ImageRef)
TOP_KEYS = ("site", "build", "defaults", "profiles", "pairs")
DEFAULT_BRANCH = SiteSettings.publish_branch


@dataclass(frozen=True)
class Catalog:
    path: Path
    site: SiteSettings
    defaults: Mapping[str, Any]
    profiles: Mapping[str, Mapping[str, Any]]
    pairs: tuple[Pair, ...]
    # Problems of single pairs, left out of ``pairs`` (only when loaded with strict=False).
    problems: tuple[Problem, ...] = ()
    build: BuildSettings = field(default_factory=BuildSettings)
    # Every photo and cover src the file names, in pairs it can read or not: what no
    # command may write over (a pair broken by a typo still refers to its files).
    sources: tuple[str, ...] = ()
    # params_for's results by their merged values: most pairs share them, and checking
    # parameters is the largest cost of reading a big catalog.
    _params_memo: dict[str, StyleParams] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def root(self) -> Path:
        return self.path.parent

    def pair(self, pair_id: str) -> Pair:
        for pair in self.pairs:
            if pair.id == pair_id:
                return pair
        close = difflib.get_close_matches(pair_id, [p.id for p in self.pairs], n=1)
        raise CovergenError(
            f"no pair with id {printable(pair_id)!r}",
            pair=pair_id,
            field="id",
            hint=f"did you mean {close[0]!r}?" if close else "`covergen list` shows the ids",
        )

    @property
    def all_profiles(self) -> dict[str, Mapping[str, Any]]:
        """The catalog's profiles and the built-in ones it does not redefine."""
        return {**BUILTIN_PROFILES, **self.profiles}

    def choose_profile(self, name: str | None, device_family: str) -> str:
        """The profile to use: the one named, else draft on a CPU or Apple's GPU and final
        on an NVIDIA GPU (``device_family``: cpu, mps or cuda; ``gpu`` counts as cuda)."""
        if name:
            if name not in self.all_profiles:
                close = difflib.get_close_matches(name, list(self.all_profiles), n=1)
                raise CovergenError(
                    f"no profile {printable(name)!r}",
                    field="profile",
                    hint=(f"did you mean {close[0]!r}? " if close else "")
                    + f"profiles: {', '.join(self.all_profiles)}",
                )
            return name
        return "final" if device_family in ("cuda", "gpu") else "draft"

    def params_for(
        self, pair: Pair, profile: str | None = None, extra: Mapping[str, Any] | None = None
    ) -> StyleParams:
        """Engine defaults ← catalog defaults ← profile ← the pair's overrides ← ``extra``.

        A built-in profile the catalog does not define sits *under* its defaults: it fills
        in only what the catalog does not say (a catalog's ``size: 32`` stays 32)."""
        if profile and profile not in self.profiles:
            values: dict[str, Any] = {**BUILTIN_PROFILES[profile], **self.defaults}
        else:
            values = dict(self.defaults)
            if profile:
                values.update(self.profiles[profile])
        values.update(pair.overrides)
        values.update(extra or {})
        # repr tells "1" from 1 from 1.0 from True: equal keys are equal values
        memo_key = repr(sorted(values.items(), key=lambda item: str(item[0])))
        if memo_key not in self._params_memo:
            try:
                self._params_memo[memo_key] = StyleParams().replace(**values)
            except ParameterError as exc:
                errors = getattr(exc, "errors", [exc])
                raise CovergenError(
                    "; ".join(f"{e.field}: {e.message}" for e in errors),
                    pair=pair.id,
                    field=errors[0].field,
                    hint=errors[0].hint,
                ) from None
        params = self._params_memo[memo_key]
        if len(params.style_blend) > 1:
            raise CovergenError(
                f"gives {len(params.style_blend)} weights, but a pair has one cover",
                pair=pair.id,
                field="style_blend",
                hint="remove style_blend: it blends several covers, which `covergen stylize "
                "PHOTO A.png B.png --style-blend 0.7,0.3` can do",
            )
        if params.init == "image":
            raise CovergenError(
                "init 'image' needs a starting image, which a catalog cannot give",
                pair=pair.id,
                field="init",
                hint="use content, style or noise (`covergen stylize --init-image` takes one)",
            )
        return params


def slugify(text: str, limit: int = MAX_ID_LENGTH) -> str:
    """ASCII, lower case, words joined by hyphens: 'Motörhead' -> 'motorhead'; at most
    ``limit`` characters, cut at a word."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > limit:
        slug = slug[: limit + 1].rsplit("-", 1)[0] if "-" in slug[:limit] else slug[:limit]
    return slug
