"""The catalog: `catalog.yaml` parsed, validated (every problem at once) and resolved.

The YAML is composed into nodes (libyaml's C composer when available: a 10,000-pair catalog
composes in well under a second) and each node is converted once, keeping its line, so that
every problem names its line, duplicate keys are caught, unknown tags are refused, and
aliases cannot expand a small file into a huge one (``_Reader``). ruamel.yaml would give
line numbers too, but its pure-Python round-trip reader is several times slower on large
catalogs, and round-tripping is only needed to edit (`covergen add`, ``covergen.edit``).
Engine parameters are validated through ``covergen.nst.params``, the single source of truth.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import math
import os
import re
import stat
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CovergenError
from .files import read_user_file
from .nst import ParameterError, StyleParams
from .nst.params import coerce, param_specs
from .safetext import (
    has_credentials,
    printable,
    redact,
    unsafe_character,
    url_scheme,
    web_url_problem,
)

MAX_BYTES = 16 * 1024 * 1024
# Aliases may be expanded, but a file cannot grow more than ALIAS_GROWTH-fold that way (the
# "billion laughs"); small files get NODE_FLOOR nodes whatever their aliases.
ALIAS_GROWTH = 10
NODE_FLOOR = 100_000
MAX_DEPTH = 64  # nesting; a real catalog is 5 deep
MAX_ID_LENGTH = 100  # ids name files and folders of the site
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
PROFILE_ENV = "COVERGEN_PROFILE"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalog, and what to do about it.

    ``index`` is the position of the pair it concerns in `pairs:` (None for the file's
    other parts), so that a pair is left out by position: two pairs may claim one id.
    """

    message: str
    field: str = ""
    pair: str | None = None
    line: int | None = None
    hint: str = ""
    index: int | None = None

    def describe(self) -> str:
        where = [
            f"line {self.line}" if self.line else "",
            f"pair {self.pair!r}" if self.pair else "",
            self.field,
        ]
        text = ": ".join([part for part in where if part] + [self.message])
        return f"{text}\n  → {self.hint}" if self.hint else text


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
SITE_KEYS = _keys(SiteSettings)
BUILD_KEYS = _keys(BuildSettings)
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
        params = self._params_memo.get(memo_key)
        try:
            if params is None:
                params = StyleParams().replace(**values)
                self._params_memo[memo_key] = params
        except ParameterError as exc:
            errors = getattr(exc, "errors", [exc])
            first = errors[0]
            raise CovergenError(
                "; ".join(f"{e.field}: {e.message}" for e in errors),
                pair=pair.id,
                field=first.field,
                hint=first.hint,
            ) from None
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


def load_catalog(path: Path, *, strict: bool = True) -> Catalog:
    """Read, parse and validate a catalog file; raise CatalogError listing every problem.

    With ``strict=False`` a problem confined to one pair leaves that pair out and is kept in
    ``Catalog.problems`` instead, so a build can go on with the others.
    """
    path = Path(path)
    data = _read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(
            path,
            [
                Problem(
                    f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                    hint="save the file as UTF-8",
                )
            ],
        ) from None
    return parse_catalog(text, path, strict=strict)


def _read(path: Path) -> bytes:
    """The file's bytes, refused before reading when it is no plain file or too large."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CovergenError(
            f"no catalog at {path}", field="catalog", hint="create one, or pass --catalog PATH"
        ) from None
    except OSError as exc:
        raise CovergenError(
            f"cannot read the catalog {path} ({exc.strerror or exc})",
            field="catalog",
            hint="check the path and its permissions",
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise CovergenError(
            f"{path} is a folder, not a catalog file",
            field="catalog",
            hint=f"pass the catalog file itself, e.g. --catalog {path / 'catalog.yaml'}",
        )
    return read_user_file(path, limit=MAX_BYTES, field="catalog", what="catalog file")


def parse_catalog(text: str, path: Path, *, strict: bool = True) -> Catalog:
    """Parse and validate catalog text; ``path`` names it in messages and anchors relative srcs."""
    with _collector_paused():
        return _parse_catalog(text, path, strict=strict)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a catalog is read. Reading makes hundreds
    of thousands of small objects that hold no cycles (YAML nodes, values), and the
    collections their number triggers cost three times the reading itself: composing a
    10,000-pair catalog takes 4.0 s with the collector on, 1.0 s with it off. What is
    garbage is still freed, by reference counting; the collector runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_catalog(text: str, path: Path, *, strict: bool) -> Catalog:
    if len(text) > MAX_BYTES:
        raise CatalogError(
            path,
            [
                Problem(
                    f"the catalog is {len(text)} characters long",
                    hint=f"keep catalogs under {MAX_BYTES} bytes",
                )
            ],
        )
    root = _compose(text, path)
    reader = _Reader(path, root, aliased="*" in text)  # no "*", no alias
    problems = reader.problems
    top = reader.tree
    if top is None:
        top = _Node({}, 1)
    if not isinstance(top.value, dict):
        raise CatalogError(
            path,
            [
                Problem(
                    "the file must be a mapping with site, defaults, profiles and pairs",
                    line=1,
                    hint="start the file with `pairs:`",
                )
            ],
        )
    entries: dict[str, _Node] = top.value
    _unknown_keys(entries, TOP_KEYS, "", None, None, problems)
    site = _site(entries.get("site"), problems)
    build = _build(entries.get("build"), problems)
    defaults = _params_block(entries.get("defaults"), "defaults", None, None, problems)
    profiles: dict[str, dict[str, Any]] = {}
    if "profiles" in entries:
        for name, node in _mapping(entries["profiles"], "profiles", None, None, problems).items():
            profiles[name] = _params_block(node, f"profiles.{name}", None, None, problems)
    pairs, owners = _pairs(entries.get("pairs"), problems)
    catalog = Catalog(
        path=path,
        site=site,
        defaults=defaults,
        profiles=profiles,
        pairs=tuple(pairs),
        build=build,
        sources=_every_src(entries.get("pairs")),
    )
    if not any(p.index is None for p in problems):
        problems.extend(_resolution_problems(catalog, owners))
    problems = _unique(problems)
    if not problems:
        return catalog
    problems.sort(key=lambda p: p.line or 0)
    if strict or any(p.index is None for p in problems):
        raise CatalogError(path, problems)
    bad = {p.index for p in problems}
    kept = tuple(pair for pair, index in zip(pairs, owners, strict=True) if index not in bad)
    return dataclasses.replace(catalog, pairs=kept, problems=tuple(problems))


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for problem in problems:
        key = (problem.message, problem.field, problem.pair, problem.line)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


def _compose(text: str, path: Path) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        where = f" (column {mark.column + 1})" if mark else ""
        raise CatalogError(
            path,
            [
                Problem(
                    f"malformed YAML: {exc.problem}{where}",
                    line=line,
                    hint="fix the YAML syntax at that line",
                )
            ],
        ) from None
    except yaml.YAMLError as exc:
        raise CatalogError(path, [Problem(f"malformed YAML: {exc}")]) from None
    except RecursionError:
        raise CatalogError(
            path,
            [Problem("the YAML is nested too deeply", hint="a catalog needs a few levels only")],
        ) from None


def _resolution_problems(catalog: Catalog, owners: list[int]) -> list[Problem]:
    """Cross-field checks (layer names against the network, one weight per layer…) on each
    pair's fully resolved parameters, under every profile."""
    problems = []
    for pair, index in zip(catalog.pairs, owners, strict=True):
        for profile in [None, *catalog.all_profiles]:
            try:
                catalog.params_for(pair, profile)
            except CovergenError as exc:
                under = f" (with profile {profile!r})" if profile else ""
                problems.append(
                    Problem(
                        exc.message + under,
                        field=exc.field or "",
                        pair=pair.id,
                        line=pair.line,
                        hint=exc.hint,
                        index=index,
                    )
                )
                break
    return problems


# ------------------------------------------------------------------------- nodes to values


@dataclass
class _Node:
    """A YAML value converted once: a scalar, a dict of _Nodes or a list of _Nodes."""

    value: Any
    line: int
    text: str = ""  # a scalar as written (`1.10` stays 1.10, a date stays 2001-01-01)

    def plain(self) -> Any:
        if isinstance(self.value, dict):
            return {key: node.plain() for key, node in self.value.items()}
        if isinstance(self.value, list):
            return [node.plain() for node in self.value]
        return self.value


class _TooLarge(Exception):
    pass


class _Reader:
    """Converts the node graph into _Nodes once, noting problems instead of raising."""

    def __init__(self, path: Path, root: yaml.Node | None, *, aliased: bool = True) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self._constructor = _Loader("")
        self._count = 0
        # Without aliases every node is converted once: the limit cannot be reached, and
        # counting the distinct nodes (a walk of the whole graph) is not needed.
        self._limit = max(NODE_FLOOR, ALIAS_GROWTH * _distinct(root)) if aliased else math.inf
        self._path: set[int] = set()
        try:
            self.tree = self._convert(root, "", 0) if root is not None else None
        except _TooLarge as exc:
            raise CatalogError(
                path,
                [
                    Problem(
                        f"its aliases expand to more than {self._limit:,} values (an alias bomb?)",
                        field=str(exc),
                        hint="use fewer aliases, or write the repeated parts out",
                    )
                ],
            ) from None

    def _convert(self, node: yaml.Node, where: str, depth: int) -> _Node:
        self._count += 1
        if self._count > self._limit:
            raise _TooLarge(where or "the file")
        line = node.start_mark.line + 1
        if depth > MAX_DEPTH:
            self._problem(f"nested more than {MAX_DEPTH} levels deep", where, line)
            return _Node(None, line)
        if id(node) in self._path:
            self._problem("an alias refers to itself (a loop)", where, line)
            return _Node(None, line)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR_TAG:  # most values: the text is the value
                return _Node(node.value, line, node.value)
            try:
                value = self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc)
                self._problem(
                    f"cannot read this value ({printable(problem)})",
                    where,
                    line,
                    hint="unknown YAML tags (!something) are not supported: write plain values",
                )
                value = None
            return _Node(value, line, node.value)
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            self._problem(
                f"unknown YAML tag {printable(node.tag)}",
                where,
                line,
                hint="unknown YAML tags (!something) are not supported: write plain values",
            )
        self._path.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = [
                    self._convert(item, f"{where}[{i}]", depth + 1)
                    for i, item in enumerate(node.value)
                ]
                return _Node(items, line)
            return _Node(self._mapping(node, where, depth), line)
        finally:
            self._path.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, where: str, depth: int) -> dict[str, _Node]:
        out: dict[str, _Node] = {}
        merged: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`
                for source in (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                ):
                    merged_node = self._convert(source, where, depth + 1)
                    if isinstance(merged_node.value, dict):
                        for key, value in merged_node.value.items():
                            merged.setdefault(key, value)
                    else:
                        self._problem("`<<` merges mappings only", where, key_line)
                continue
            key = (
                self._convert(key_node, where, depth + 1).value
                if isinstance(key_node, yaml.ScalarNode)
                else None
            )
            if not isinstance(key, str):
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self._problem(f"key {printable(str(shown))[:40]!r} is not text", where, key_line)
                continue
            if key in out:
                self._problem(
                    f"duplicate key {printable(key)!r}",
                    _join(where, key),
                    key_line,
                    hint=f"first set on line {out[key].line}; keep one",
                )
                continue
            out[key] = self._convert(value_node, _join(where, key), depth + 1)
        return {**merged, **out}

    def _problem(self, message: str, where: str, line: int, hint: str = "") -> None:
        # A pair's own position is filled in when its pair is read (see _pairs).
        index = _pair_index(where)
        self.problems.append(Problem(message, field=where, line=line, hint=hint, index=index))


def _distinct(root: yaml.Node | None) -> int:
    """How many nodes the file itself holds, each counted once however often aliased."""
    if root is None:
        return 0
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return len(seen)


_STR_TAG = "tag:yaml.org,2002:str"
_PAIR_FIELD = re.compile(r"^pairs\[(\d+)\]")


def _pair_index(where: str) -> int | None:
    match = _PAIR_FIELD.match(where)
    return int(match.group(1)) if match else None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ------------------------------------------------------------------------- validation


def _mapping(
    node: _Node | None, where: str, pair: str | None, index: int | None, problems: list[Problem]
) -> dict[str, _Node]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        problems.append(
            Problem(
                "must be a mapping of names to values",
                field=where,
                pair=pair,
                line=node.line,
                index=index,
            )
        )
        return {}
    return node.value


def _unknown_keys(
    entries: Mapping[str, _Node],
    known: tuple[str, ...],
    where: str,
    pair: str | None,
    index: int | None,
    problems: list[Problem],
) -> None:
    for key, node in entries.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            problems.append(
                Problem(
                    f"unknown key {printable(key)!r}",
                    field=_join(where, key),
                    pair=pair,
                    line=node.line,
                    hint=hint,
                    index=index,
                )
            )


def _text(
    entries: Mapping[str, _Node],
    key: str,
    where: str,
    pair: str | None,
    index: int | None,
    problems: list[Problem],
    required: bool = False,
) -> str:
    name = _join(where, key)
    if key not in entries:
        if required:
            problems.append(
                Problem("is missing", field=name, pair=pair, hint=f"add `{key}:`", index=index)
            )
        return ""
    node = entries[key]
    value = "" if node.value is None else node.value
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int | float)
        or (not isinstance(value, str) and not node.text)
    ):
        problems.append(
            Problem(
                f"must be text, not {_kind_of(node)}",
                field=name,
                pair=pair,
                line=node.line,
                hint="quote the value",
                index=index,
            )
        )
        return ""
    # As written: `album: 1.10` stays "1.10", `0x1F` stays "0x1F".
    text = (value if isinstance(value, str) else node.text).strip()
    bad = unsafe_character(text)
    if bad:
        problems.append(
            Problem(
                f"contains {bad}",
                field=name,
                pair=pair,
                line=node.line,
                hint="remove it (retype the text if it was pasted)",
                index=index,
            )
        )
        return ""
    if required and not text:
        problems.append(
            Problem(
                "is empty",
                field=name,
                pair=pair,
                line=node.line,
                hint=f"give the {key}",
                index=index,
            )
        )
    return text


def _kind_of(node: _Node) -> str:
    if isinstance(node.value, dict):
        return "a mapping"
    if isinstance(node.value, list):
        return "a list"
    if isinstance(node.value, bool):
        return "true/false"
    return f"{node.text!r}" if node.text else "this value"


def _settings(node: _Node, cls: type, section: str, problems: list[Problem]) -> dict[str, Any]:
    """The fields of a settings section (``site``, ``build``) present in the file, checked:
    booleans must be true or false, everything else text."""
    entries = _mapping(node, section, None, None, problems)
    _unknown_keys(entries, _keys(cls), section, None, None, problems)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in entries:
            continue
        if f.type in (bool, "bool"):
            value = entries[f.name].value
            if isinstance(value, bool):
                values[f.name] = value
            else:
                problems.append(
                    Problem(
                        "must be true or false",
                        field=f"{section}.{f.name}",
                        line=entries[f.name].line,
                    )
                )
        else:
            values[f.name] = _text(entries, f.name, section, None, None, problems)
    return values


def _site(node: _Node | None, problems: list[Problem]) -> SiteSettings:
    if node is None:
        return SiteSettings()
    values = _settings(node, SiteSettings, "site", problems)
    for key in ("show_photo", "show_cover"):
        if key in values and values[key] not in SHOW_CHOICES:
            problems.append(
                Problem(
                    f"{printable(str(values[key]))[:40]!r} is not one of {', '.join(SHOW_CHOICES)}",
                    field=f"site.{key}",
                    line=node.value[key].line,
                    hint="full shows it as large as the painting, thumbnail small, none not "
                    "at all (its credit stays)",
                )
            )
            del values[key]
    base_url = values.get("base_url", "")
    problem = web_url_problem(base_url) if base_url else ""
    if not problem and base_url and has_credentials(base_url):
        problem = "holds a user name or password, which every page would show"
    if problem:
        problems.append(
            Problem(
                f"{redact(printable(base_url))[:80]!r} {problem}",
                field="site.base_url",
                line=node.value["base_url"].line,
                hint="give the address the gallery is published at, e.g. "
                "https://example.org/gallery/",
            )
        )
    return SiteSettings(**values)


def _build(node: _Node | None, problems: list[Problem]) -> BuildSettings:
    if node is None:
        return BuildSettings()
    values = _settings(node, BuildSettings, "build", problems)
    executor = values.get("executor", BuildSettings.executor)
    if executor not in EXECUTORS:
        problems.append(
            Problem(
                f"no executor called {executor!r}",
                field="build.executor",
                line=node.value["executor"].line,
                hint=f"use one of {', '.join(EXECUTORS)}",
            )
        )
        values.pop("executor")
    return BuildSettings(**values)


def _params_block(
    node: _Node | None,
    where: str,
    pair: str | None,
    index: int | None,
    problems: list[Problem],
) -> dict[str, Any]:
    """Engine parameters, each checked against the StyleParams spec."""
    if node is None:
        return {}
    entries = _mapping(node, where, pair, index, problems)
    known = tuple(spec.name for spec in param_specs())
    out: dict[str, Any] = {}
    for key, value in entries.items():
        if key not in known:
            _unknown_keys({key: value}, known, where, pair, index, problems)
            continue
        try:
            out[key] = coerce(key, value.plain())
        except ParameterError as exc:
            problems.append(
                Problem(
                    exc.message,
                    field=_join(where, key),
                    pair=pair,
                    line=value.line,
                    hint=exc.hint,
                    index=index,
                )
            )
    return out


def _every_src(node: _Node | None) -> tuple[str, ...]:
    """The src texts of every pair's photo and cover, read as leniently as can be."""
    found: list[str] = []
    items = node.value if node is not None and isinstance(node.value, list) else []
    for item in items:
        if not isinstance(item.value, dict):
            continue
        for role in ("photo", "cover"):
            image = item.value.get(role)
            if image is None:
                continue
            src = image.value.get("src") if isinstance(image.value, dict) else image
            if src is not None and isinstance(src.value, str) and src.value.strip():
                found.append(src.value.strip())
    return tuple(dict.fromkeys(found))


def _pairs(node: _Node | None, problems: list[Problem]) -> tuple[list[Pair], list[int]]:
    """The valid pairs, and each one's position in the list."""
    if node is None:
        problems.append(
            Problem(
                "the catalog has no `pairs:` list",
                field="pairs",
                hint="add pairs (see docs/catalog.md)",
            )
        )
        return [], []
    if node.value is None:
        return [], []
    if not isinstance(node.value, list):
        problems.append(
            Problem(
                "must be a list of pairs",
                field="pairs",
                line=node.line,
                hint="start each pair with `- band: …`",
            )
        )
        return [], []
    pairs: list[Pair] = []
    owners: list[int] = []
    seen: dict[str, int] = {}
    ids: dict[int, str] = {}
    for index, item in enumerate(node.value):
        pair, ids[index] = _pair(item, index, problems)
        if pair is None:
            continue
        if pair.id in seen:
            # The first keeps its id (and its paintings); this one is left out, by position.
            problems.append(
                Problem(
                    f"duplicate id {pair.id!r}",
                    field="id",
                    pair=pair.id,
                    line=pair.line,
                    hint=f"the pair on line {seen[pair.id]} has it too; "
                    "give this one an explicit unique `id:`",
                    index=index,
                )
            )
            continue
        seen[pair.id] = pair.line or 0
        pairs.append(pair)
        owners.append(index)
    # Problems the reader found inside a pair get the pair's id now that it is known.
    for i, problem in enumerate(problems):
        if problem.index is not None and problem.pair is None:
            problems[i] = dataclasses.replace(
                problem, pair=ids.get(problem.index, f"pairs[{problem.index}]")
            )
    return pairs, owners


def _pair(node: _Node, index: int, problems: list[Problem]) -> tuple[Pair | None, str]:
    """The pair at ``index`` (None when it has problems) and the id it goes by."""
    label = f"pairs[{index}]"
    if not isinstance(node.value, dict):
        problems.append(
            Problem(
                "each pair must be a mapping (band, album, photo, cover…)",
                field=label,
                line=node.line,
                index=index,
            )
        )
        return None, label
    entries: dict[str, _Node] = node.value
    before = len(problems)
    quiet: list[Problem] = []
    band = _text(entries, "band", "", None, index, quiet)
    album = _text(entries, "album", "", None, index, quiet)
    explicit_id = _text(entries, "id", "", None, index, quiet)
    derived = slugify(f"{band} {album}")
    pair_id = explicit_id or derived or label
    line = node.line
    if not explicit_id and (band or album) and not derived:
        problems.append(
            Problem(
                "band and album give no usable id",
                field="id",
                pair=pair_id,
                line=line,
                hint="add an explicit `id:` such as my-band-my-album",
                index=index,
            )
        )
    _unknown_keys(entries, PAIR_KEYS, "", pair_id, index, problems)
    band = _text(entries, "band", "", pair_id, index, problems, required=True)
    album = _text(entries, "album", "", pair_id, index, problems, required=True)
    if explicit_id:
        id_line = entries["id"].line
        if not SLUG.match(explicit_id):
            problems.append(
                Problem(
                    f"{printable(explicit_id)[:60]!r} is not a slug",
                    field="id",
                    pair=pair_id,
                    line=id_line,
                    hint=f"use lower-case letters, digits and hyphens, e.g. "
                    f"{slugify(explicit_id) or 'my-band-my-album'!r}",
                    index=index,
                )
            )
        elif len(explicit_id) > MAX_ID_LENGTH:
            problems.append(
                Problem(
                    f"is {len(explicit_id)} characters long; ids name the site's files",
                    field="id",
                    pair=pair_id[:40] + "…",
                    line=id_line,
                    hint=f"use at most {MAX_ID_LENGTH} characters, e.g. "
                    f"{slugify(explicit_id, 40)!r}",
                    index=index,
                )
            )
    year = None
    if "year" in entries:
        ynode = entries["year"]
        value = ynode.value
        if isinstance(value, bool) or not isinstance(value, int) or not 1000 <= value <= 2999:
            shown = ynode.text or _kind_of(ynode)
            problems.append(
                Problem(
                    f"{printable(shown)[:40]} is not a year",
                    field="year",
                    pair=pair_id,
                    line=ynode.line,
                    hint="write four digits, e.g. 1979",
                    index=index,
                )
            )
        else:
            year = value
    tags: tuple[str, ...] = ()
    if "tags" in entries:
        tnode = entries["tags"]
        items = [tnode] if isinstance(tnode.value, str) else tnode.value
        texts = []
        if isinstance(items, list):
            for item in items:
                if isinstance(item.value, str) and item.value.strip():
                    texts.append(item.value.strip())
                else:
                    texts = []
                    break
        if not texts and items:
            problems.append(
                Problem(
                    "must be a list of words",
                    field="tags",
                    pair=pair_id,
                    line=tnode.line,
                    hint="e.g. tags: [post-punk, 1970s]",
                    index=index,
                )
            )
        for tag in texts:
            bad = unsafe_character(tag)
            if bad:
                problems.append(
                    Problem(f"a tag contains {bad}", field="tags", pair=pair_id,
                            line=tnode.line, hint="remove it", index=index)
                )  # fmt: skip
                break
        else:
            tags = tuple(dict.fromkeys(texts))
    notes = _text(entries, "notes", "", pair_id, index, problems)
    images = {
        role: _image(entries.get(role), role, pair_id, index, problems)
        for role in ("photo", "cover")
    }
    overrides = _params_block(entries.get("overrides"), "overrides", pair_id, index, problems)
    if len(problems) > before or images["photo"] is None or images["cover"] is None:
        return None, pair_id
    pair = Pair(
        id=pair_id,
        band=band,
        album=album,
        photo=images["photo"],
        cover=images["cover"],
        year=year,
        tags=tags,
        notes=notes,
        overrides=overrides,
        line=line,
    )
    return pair, pair_id


def _image(
    node: _Node | None,
    role: str,
    pair_id: str,
    index: int,
    problems: list[Problem],
) -> ImageRef | None:
    if node is None:
        problems.append(
            Problem(
                "is missing",
                field=role,
                pair=pair_id,
                hint=f"add `{role}: {{src: path-or-url, credit: …}}`",
                index=index,
            )
        )
        return None
    if isinstance(node.value, str):  # shorthand: `photo: photos/band.jpg`
        entries = {"src": node}
    else:
        entries = _mapping(node, role, pair_id, index, problems)
    _unknown_keys(entries, IMAGE_KEYS, role, pair_id, index, problems)
    src = _text(entries, "src", role, pair_id, index, problems, required=True)
    url = _text(entries, "url", role, pair_id, index, problems)
    url_problem = web_url_problem(url) if url else ""
    if url_problem:
        problems.append(
            Problem(
                f"{redact(printable(url))[:80]!r} is not an http(s) link: it {url_problem}",
                field=f"{role}.url",
                pair=pair_id,
                line=entries["url"].line,
                hint="give the source page as https://…",
                index=index,
            )
        )
    scheme = url_scheme(src) if src else ""
    if scheme and scheme not in ("http", "https"):
        problems.append(
            Problem(
                f"{scheme}: sources are not supported"
                if "://" not in src
                else f"{scheme}:// sources are not supported",
                field=f"{role}.src",
                pair=pair_id,
                line=entries["src"].line,
                hint="use a path relative to the catalog or an http(s) URL",
                index=index,
            )
        )
    src_problem = web_url_problem(src) if scheme in ("http", "https") else ""
    if src_problem:
        problems.append(
            Problem(
                f"{redact(printable(src))[:80]!r} {src_problem}",
                field=f"{role}.src",
                pair=pair_id,
                line=entries["src"].line,
                hint="check the URL (copy it from the browser's address bar)",
                index=index,
            )
        )
    if src and not scheme and len(os.fsencode(src)) > 4096:
        problems.append(
            Problem(
                "is too long for a path",
                field=f"{role}.src",
                pair=pair_id,
                line=entries["src"].line,
                index=index,
            )
        )
    if not src:
        return None
    return ImageRef(
        src=src,
        credit=_text(entries, "credit", role, pair_id, index, problems),
        license=_text(entries, "license", role, pair_id, index, problems),
        url=url,
    )


__all__ = [
    "DEFAULT_BRANCH",
    "PROFILE_ENV",
    "SLUG",
    "Catalog",
    "CatalogError",
    "ImageRef",
    "Pair",
    "Problem",
    "SiteSettings",
    "load_catalog",
    "parse_catalog",
    "slugify",
]
