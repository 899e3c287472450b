"""The catalog: `catalog.yaml` parsed, validated (every problem at once) and resolved.

The YAML is read node by node rather than with ``yaml.safe_load`` so that every value keeps
its line, duplicate keys are caught, and aliases cannot expand into a billion nodes.
Engine parameters are validated through ``covergen.nst.params``, the single source of truth.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CovergenError
from .nst import ParameterError, StyleParams
from .nst.params import coerce, param_specs

MAX_NODES = 200_000  # far above any real catalog; stops alias bombs
MAX_BYTES = 16 * 1024 * 1024
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
PAIR_KEYS = ("id", "band", "album", "year", "tags", "notes", "photo", "cover", "overrides")
IMAGE_KEYS = ("src", "credit", "license", "url")
SITE_KEYS = (
    "title",
    "description",
    "base_url",
    "author",
    "show_pending",
    "publish",
    "publish_branch",
    "cname",
    "publish_keep_history",
)
TOP_KEYS = ("site", "defaults", "profiles", "pairs")
PROFILE_ENV = "COVERGEN_PROFILE"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalog, and what to do about it."""

    message: str
    field: str = ""
    pair: str | None = None
    line: int | None = None
    hint: str = ""

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

    @property
    def is_remote(self) -> bool:
        return self.src.startswith(("http://", "https://"))


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
    line: int | None = None

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


@dataclass(frozen=True)
class Catalog:
    path: Path
    site: SiteSettings
    defaults: Mapping[str, Any]
    profiles: Mapping[str, Mapping[str, Any]]
    pairs: tuple[Pair, ...]
    # Problems of single pairs, left out of ``pairs`` (only when loaded with strict=False).
    problems: tuple[Problem, ...] = ()

    @property
    def root(self) -> Path:
        return self.path.parent

    def pair(self, pair_id: str) -> Pair:
        for pair in self.pairs:
            if pair.id == pair_id:
                return pair
        close = difflib.get_close_matches(pair_id, [p.id for p in self.pairs], n=1)
        raise CovergenError(
            f"no pair with id {pair_id!r}",
            pair=pair_id,
            field="id",
            hint=f"did you mean {close[0]!r}?" if close else "`covergen list` shows the ids",
        )

    def choose_profile(self, name: str | None, device_type: str) -> str | None:
        """The profile to use: the one named, else draft on CPU and final on a GPU, if defined."""
        if name:
            if name not in self.profiles:
                raise CovergenError(
                    f"no profile {name!r}",
                    field="profile",
                    hint=f"profiles in {self.path.name}: {', '.join(self.profiles) or 'none'}",
                )
            return name
        preferred = "draft" if device_type == "cpu" else "final"
        return preferred if preferred in self.profiles else None

    def params_for(
        self, pair: Pair, profile: str | None = None, extra: Mapping[str, Any] | None = None
    ) -> StyleParams:
        """Engine defaults ← catalog defaults ← profile ← the pair's overrides ← ``extra``."""
        values: dict[str, Any] = dict(self.defaults)
        if profile:
            values.update(self.profiles[profile])
        values.update(pair.overrides)
        values.update(extra or {})
        try:
            return StyleParams().replace(**values)
        except ParameterError as exc:
            errors = getattr(exc, "errors", [exc])
            first = errors[0]
            raise CovergenError(
                "; ".join(f"{e.field}: {e.message}" for e in errors),
                pair=pair.id,
                field=first.field,
                hint=first.hint,
            ) from None


def slugify(text: str) -> str:
    """ASCII, lower case, words joined by hyphens: 'Motörhead' -> 'motorhead'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def load_catalog(path: Path, *, strict: bool = True) -> Catalog:
    """Parse and validate a catalog file; raise CatalogError listing every problem.

    With ``strict=False`` a problem confined to one pair leaves that pair out and is kept in
    ``Catalog.problems`` instead, so a build can go on with the others.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CovergenError(
            f"no catalog at {path}", field="catalog", hint="create one, or pass --catalog PATH"
        ) from None
    if len(data) > MAX_BYTES:
        raise CatalogError(
            path,
            [
                Problem(
                    f"the file is {len(data)} bytes", hint=f"keep catalogs under {MAX_BYTES} bytes"
                )
            ],
        )
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


def parse_catalog(text: str, path: Path, *, strict: bool = True) -> Catalog:
    """Parse and validate catalog text; ``path`` names it in messages and anchors relative srcs."""
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
    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
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
    if root is None:
        root_map: dict[str, tuple[Any, yaml.Node]] = {}
    else:
        value = reader.value(root, "")
        if not isinstance(value, dict):
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
        root_map = reader.mapping(root, "")
    problems = reader.problems
    _unknown_keys(root_map, TOP_KEYS, "", None, problems)
    site = _site(reader, root_map.get("site"), problems)
    defaults = _params_block(reader, root_map.get("defaults"), "defaults", None, problems)
    profiles: dict[str, dict[str, Any]] = {}
    if "profiles" in root_map:
        node = root_map["profiles"][1]
        for name, (_, pnode) in _mapping_or_problem(
            reader, node, "profiles", None, problems
        ).items():
            profiles[name] = _params_block(
                reader, (None, pnode), f"profiles.{name}", None, problems
            )
    pairs = _pairs(reader, root_map.get("pairs"), problems)
    catalog = Catalog(
        path=path, site=site, defaults=defaults, profiles=profiles, pairs=tuple(pairs)
    )
    if not any(p.pair is None for p in problems):
        problems.extend(_resolution_problems(catalog))
    if not problems:
        return catalog
    problems.sort(key=lambda p: p.line or 0)
    if strict or any(p.pair is None for p in problems):
        raise CatalogError(path, problems)
    bad = {p.pair for p in problems}
    return dataclasses.replace(
        catalog, pairs=tuple(p for p in catalog.pairs if p.id not in bad), problems=tuple(problems)
    )


def _resolution_problems(catalog: Catalog) -> list[Problem]:
    """Cross-field checks (layer names against the network, one weight per layer…) on each
    pair's fully resolved parameters, under every profile."""
    problems = []
    for pair in catalog.pairs:
        for profile in [None, *catalog.profiles]:
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
                    )
                )
                break
    return problems


class _Reader:
    """Turns YAML nodes into plain values, remembering problems and counting nodes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.nodes = 0
        self._constructor = yaml.SafeLoader("")

    def value(self, node: yaml.Node, where: str) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise CatalogError(
                Path("catalog"),
                [
                    Problem(
                        f"more than {MAX_NODES} YAML nodes (an alias bomb?)",
                        field=where,
                        line=node.start_mark.line + 1,
                        hint="remove the repeated aliases",
                    )
                ],
            )
        if isinstance(node, yaml.ScalarNode):
            return self._constructor.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        return {key: value for key, (value, _) in self.mapping(node, where).items()}

    def mapping(self, node: yaml.Node, where: str) -> dict[str, tuple[Any, yaml.Node]]:
        """A mapping node as {key: (value, value node)}; duplicate and odd keys are problems."""
        out: dict[str, tuple[Any, yaml.Node]] = {}
        if not isinstance(node, yaml.MappingNode):
            return out
        for key_node, value_node in node.value:
            key = self.value(key_node, where)
            if not isinstance(key, str):
                self.problems.append(
                    Problem(
                        f"key {key!r} is not text", field=where, line=key_node.start_mark.line + 1
                    )
                )
                continue
            if key in out:
                self.problems.append(
                    Problem(
                        f"duplicate key {key!r}",
                        field=_join(where, key),
                        line=key_node.start_mark.line + 1,
                        hint=f"first set on line {out[key][1].start_mark.line + 1}; keep one",
                    )
                )
                continue
            out[key] = (self.value(value_node, _join(where, key)), value_node)
        return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _mapping_or_problem(
    reader: _Reader, node: yaml.Node, where: str, pair: str | None, problems: list[Problem]
) -> dict[str, tuple[Any, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        if not (isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")):
            problems.append(
                Problem(
                    "must be a mapping of names to values", field=where, pair=pair, line=_line(node)
                )
            )
        return {}
    return reader.mapping(node, where)


def _unknown_keys(
    entries: Mapping[str, tuple[Any, yaml.Node]],
    known: tuple[str, ...],
    where: str,
    pair: str | None,
    problems: list[Problem],
) -> None:
    for key, (_, node) in entries.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            problems.append(
                Problem(
                    f"unknown key {key!r}",
                    field=_join(where, key),
                    pair=pair,
                    line=_line(node),
                    hint=hint,
                )
            )


def _text(
    entries: Mapping[str, tuple[Any, yaml.Node]],
    key: str,
    where: str,
    pair: str | None,
    problems: list[Problem],
    required: bool = False,
) -> str:
    if key not in entries:
        if required:
            problems.append(
                Problem("is missing", field=_join(where, key), pair=pair, hint=f"add `{key}:`")
            )
        return ""
    value, node = entries[key]
    if value is None:
        value = ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.append(
            Problem(
                f"must be text, not {type(value).__name__}",
                field=_join(where, key),
                pair=pair,
                line=_line(node),
                hint="quote the value",
            )
        )
        return ""
    if not isinstance(value, str) and isinstance(node, yaml.ScalarNode):
        value = node.value  # as written: `album: 1.10` stays "1.10", `0x1F` stays "0x1F"
    text = str(value).strip()
    if required and not text:
        problems.append(
            Problem(
                "is empty",
                field=_join(where, key),
                pair=pair,
                line=_line(node),
                hint=f"give the {key}",
            )
        )
    return text


def _site(
    reader: _Reader, entry: tuple[Any, yaml.Node] | None, problems: list[Problem]
) -> SiteSettings:
    if entry is None:
        return SiteSettings()
    entries = _mapping_or_problem(reader, entry[1], "site", None, problems)
    _unknown_keys(entries, SITE_KEYS, "site", None, problems)
    values: dict[str, Any] = {}
    for key in ("title", "description", "base_url", "author", "publish", "publish_branch", "cname"):
        if key in entries:
            values[key] = _text(entries, key, "site", None, problems)
    for key in ("show_pending", "publish_keep_history"):
        if key in entries:
            value, node = entries[key]
            if isinstance(value, bool):
                values[key] = value
            else:
                problems.append(
                    Problem("must be true or false", field=f"site.{key}", line=_line(node))
                )
    base_url = values.get("base_url", "")
    if base_url and not base_url.startswith(("http://", "https://")):
        problems.append(
            Problem(
                f"{base_url!r} is not an http(s) URL",
                field="site.base_url",
                line=_line(entries["base_url"][1]),
                hint="e.g. https://example.org/gallery/",
            )
        )
    return SiteSettings(**values)


def _params_block(
    reader: _Reader,
    entry: tuple[Any, yaml.Node] | None,
    where: str,
    pair: str | None,
    problems: list[Problem],
) -> dict[str, Any]:
    """Engine parameters, each checked against the StyleParams spec."""
    if entry is None:
        return {}
    entries = _mapping_or_problem(reader, entry[1], where, pair, problems)
    known = tuple(spec.name for spec in param_specs())
    out: dict[str, Any] = {}
    for key, (value, node) in entries.items():
        if key not in known:
            _unknown_keys({key: (value, node)}, known, where, pair, problems)
            continue
        try:
            out[key] = coerce(key, value)
        except ParameterError as exc:
            problems.append(
                Problem(
                    exc.message, field=_join(where, key), pair=pair, line=_line(node), hint=exc.hint
                )
            )
    return out


def _pairs(
    reader: _Reader, entry: tuple[Any, yaml.Node] | None, problems: list[Problem]
) -> list[Pair]:
    if entry is None:
        problems.append(
            Problem(
                "the catalog has no `pairs:` list",
                field="pairs",
                hint="add pairs (see docs/catalog.md)",
            )
        )
        return []
    node = entry[1]
    if not isinstance(node, yaml.SequenceNode):
        problems.append(
            Problem(
                "must be a list of pairs",
                field="pairs",
                line=_line(node),
                hint="start each pair with `- band: …`",
            )
        )
        return []
    pairs: list[Pair] = []
    seen: dict[str, int | None] = {}
    for index, item in enumerate(node.value):
        pair = _pair(reader, item, index, problems)
        if pair is None:
            continue
        if pair.id in seen:
            problems.append(
                Problem(
                    f"duplicate id {pair.id!r}",
                    field="id",
                    pair=pair.id,
                    line=pair.line,
                    hint=f"the pair on line {seen[pair.id]} has it too; "
                    "give one an explicit unique `id:`",
                )
            )
            continue
        seen[pair.id] = pair.line
        pairs.append(pair)
    return pairs


def _pair(reader: _Reader, node: yaml.Node, index: int, problems: list[Problem]) -> Pair | None:
    label = f"pairs[{index}]"
    if not isinstance(node, yaml.MappingNode):
        problems.append(
            Problem(
                "each pair must be a mapping (band, album, photo, cover…)",
                field=label,
                line=_line(node),
            )
        )
        return None
    entries = reader.mapping(node, label)
    before = len(problems)
    band = _text(entries, "band", "", None, [], required=False)
    album = _text(entries, "album", "", None, [], required=False)
    explicit_id = _text(entries, "id", "", None, [], required=False)
    pair_id = explicit_id or slugify(f"{band} {album}") or label
    line = _line(node)
    if not explicit_id and (band or album) and not slugify(f"{band} {album}"):
        problems.append(
            Problem(
                "band and album give no usable id",
                field="id",
                pair=pair_id,
                line=line,
                hint="add an explicit `id:` such as my-band-my-album",
            )
        )
    _unknown_keys(entries, PAIR_KEYS, "", pair_id, problems)
    band = _text(entries, "band", "", pair_id, problems, required=True)
    album = _text(entries, "album", "", pair_id, problems, required=True)
    if explicit_id and not SLUG.match(explicit_id):
        problems.append(
            Problem(
                f"{explicit_id!r} is not a slug",
                field="id",
                pair=pair_id,
                line=_line(entries["id"][1]),
                hint=f"use lower-case letters, digits and hyphens, e.g. "
                f"{slugify(explicit_id) or 'my-band-my-album'!r}",
            )
        )
    year = None
    if "year" in entries:
        value, ynode = entries["year"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1000 <= value <= 2999:
            problems.append(
                Problem(
                    f"{value!r} is not a year",
                    field="year",
                    pair=pair_id,
                    line=_line(ynode),
                    hint="write four digits, e.g. 1979",
                )
            )
        else:
            year = value
    tags: tuple[str, ...] = ()
    if "tags" in entries:
        value, tnode = entries["tags"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
            problems.append(
                Problem(
                    "must be a list of words",
                    field="tags",
                    pair=pair_id,
                    line=_line(tnode),
                    hint="e.g. tags: [post-punk, 1970s]",
                )
            )
        else:
            tags = tuple(dict.fromkeys(t.strip() for t in value))
    notes = _text(entries, "notes", "", pair_id, problems)
    images = {}
    for role in ("photo", "cover"):
        images[role] = _image(reader, entries.get(role), role, pair_id, problems)
    overrides = _params_block(reader, entries.get("overrides"), "overrides", pair_id, problems)
    if len(problems) > before or images["photo"] is None or images["cover"] is None:
        return None
    return Pair(
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


def _image(
    reader: _Reader,
    entry: tuple[Any, yaml.Node] | None,
    role: str,
    pair_id: str,
    problems: list[Problem],
) -> ImageRef | None:
    if entry is None:
        problems.append(
            Problem(
                "is missing",
                field=role,
                pair=pair_id,
                hint=f"add `{role}: {{src: path-or-url, credit: …}}`",
            )
        )
        return None
    value, node = entry
    if isinstance(value, str):  # shorthand: `photo: photos/band.jpg`
        entries = {"src": (value, node)}
    else:
        entries = _mapping_or_problem(reader, node, role, pair_id, problems)
    _unknown_keys(entries, IMAGE_KEYS, role, pair_id, problems)
    src = _text(entries, "src", role, pair_id, problems, required=True)
    url = _text(entries, "url", role, pair_id, problems)
    if url and not url.startswith(("http://", "https://")):
        problems.append(
            Problem(
                f"{url!r} is not an http(s) link",
                field=f"{role}.url",
                pair=pair_id,
                line=_line(entries["url"][1]),
                hint="give the source page as https://…",
            )
        )
    if src and "://" in src and not src.startswith(("http://", "https://")):
        problems.append(
            Problem(
                f"{src.split('://')[0]}:// sources are not supported",
                field=f"{role}.src",
                pair=pair_id,
                line=_line(entries["src"][1]),
                hint="use a path relative to the catalog or an http(s) URL",
            )
        )
    if not src:
        return None
    return ImageRef(
        src=src,
        credit=_text(entries, "credit", role, pair_id, problems),
        license=_text(entries, "license", role, pair_id, problems),
        url=url,
    )
