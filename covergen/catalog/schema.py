"""What a catalog may say, checked field by field: every problem noted (with its line, pair and
field) instead of raised, so that `covergen check` lists them all at once. Engine parameters
are validated through ``covergen.nst.params``, the single source of truth."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Problem
from ..nst import ParameterError
from ..nst.params import coerce, param_specs
from ..safetext import (
    has_credentials,
    printable,
    redact,
    unsafe_character,
    url_scheme,
    web_url_problem,
)
from .model import (
    EXECUTORS,
    IMAGE_KEYS,
    MAX_ID_LENGTH,
    PAIR_KEYS,
    SHOW_CHOICES,
    SLUG,
    TOP_KEYS,
    BuildSettings,
    Catalog,
    ImageRef,
    Pair,
    SiteSettings,
    _keys,
    slugify,
)

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


_STR_TAG = "tag:yaml.org,2002:str"
_PAIR_FIELD = re.compile(r"^pairs\[(\d+)\]")


def _pair_index(where: str) -> int | None:
    match = _PAIR_FIELD.match(where)
    return int(match.group(1)) if match else None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Scope:
    """Where the problems found go, and the pair (its id and position) they concern."""

    problems: list[Problem]
    pair: str | None = None
    index: int | None = None

    def add(self, message: str, field: str, line: int | None = None, hint: str = "") -> None:
        self.problems.append(Problem(message, field, self.pair, line, hint, self.index))


def _mapping(node: _Node | None, where: str, scope: _Scope) -> dict[str, _Node]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        scope.add("must be a mapping of names to values", where, node.line)
        return {}
    return node.value


def _unknown_keys(
    entries: Mapping[str, _Node], known: tuple[str, ...], where: str, scope: _Scope
) -> None:
    for key, node in entries.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            scope.add(f"unknown key {printable(key)!r}", _join(where, key), node.line, hint)


def _text(
    entries: Mapping[str, _Node], key: str, where: str, scope: _Scope, required: bool = False
) -> str:
    name = _join(where, key)
    if key not in entries:
        if required:
            scope.add("is missing", name, hint=f"add `{key}:`")
        return ""
    node = entries[key]
    value = "" if node.value is None else node.value
    # Text, or a number written plainly (kept as written below); never true/false.
    written = isinstance(value, str) or (isinstance(value, int | float) and node.text)
    if isinstance(value, bool) or not written:
        scope.add(f"must be text, not {_kind_of(node)}", name, node.line, "quote the value")
        return ""
    # As written: `album: 1.10` stays "1.10", `0x1F` stays "0x1F".
    text = (value if isinstance(value, str) else node.text).strip()
    bad = unsafe_character(text)
    if bad:
        scope.add(
            f"contains {bad}", name, node.line, "remove it (retype the text if it was pasted)"
        )
        return ""
    if required and not text:
        scope.add("is empty", name, node.line, f"give the {key}")
    return text


def _kind_of(node: _Node) -> str:
    if isinstance(node.value, dict):
        return "a mapping"
    if isinstance(node.value, list):
        return "a list"
    if isinstance(node.value, bool):
        return "true/false"
    return f"{node.text!r}" if node.text else "this value"


def _settings(node: _Node | None, cls: type, section: str, scope: _Scope) -> dict[str, Any]:
    """The fields of a settings section (``site``, ``build``) present in the file, checked:
    booleans must be true or false, everything else text. No section: none of them."""
    entries = _mapping(node, section, scope)
    _unknown_keys(entries, _keys(cls), section, scope)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in entries:
            continue
        if f.type in (bool, "bool"):
            value = entries[f.name].value
            if isinstance(value, bool):
                values[f.name] = value
            else:
                scope.add("must be true or false", f"{section}.{f.name}", entries[f.name].line)
        else:
            values[f.name] = _text(entries, f.name, section, scope)
    return values


def _site(node: _Node | None, scope: _Scope) -> SiteSettings:
    values = _settings(node, SiteSettings, "site", scope)
    for key in ("show_photo", "show_cover"):
        if key in values and values[key] not in SHOW_CHOICES:
            scope.add(
                f"{printable(str(values[key]))[:40]!r} is not one of {', '.join(SHOW_CHOICES)}",
                f"site.{key}",
                node.value[key].line,
                "full shows it as large as the painting, thumbnail small, none not at all "
                "(its credit stays)",
            )
            del values[key]
    base_url = values.get("base_url", "")
    problem = web_url_problem(base_url) if base_url else ""
    if not problem and base_url and has_credentials(base_url):
        problem = "holds a user name or password, which every page would show"
    if problem:
        scope.add(
            f"{redact(printable(base_url))[:80]!r} {problem}",
            "site.base_url",
            node.value["base_url"].line,
            "give the address the gallery is published at, e.g. https://example.org/gallery/",
        )
    return SiteSettings(**values)


def _build(node: _Node | None, scope: _Scope) -> BuildSettings:
    values = _settings(node, BuildSettings, "build", scope)
    executor = values.get("executor", BuildSettings.executor)
    if executor not in EXECUTORS:
        scope.add(
            f"no executor called {executor!r}",
            "build.executor",
            node.value["executor"].line,
            f"use one of {', '.join(EXECUTORS)}",
        )
        values.pop("executor")
    return BuildSettings(**values)


def _params_block(node: _Node | None, where: str, scope: _Scope) -> dict[str, Any]:
    """Engine parameters, each checked against the StyleParams spec."""
    entries = _mapping(node, where, scope)
    known = tuple(spec.name for spec in param_specs())
    out: dict[str, Any] = {}
    for key, value in entries.items():
        if key not in known:
            _unknown_keys({key: value}, known, where, scope)
            continue
        try:
            out[key] = coerce(key, value.plain())
        except ParameterError as exc:
            scope.add(exc.message, _join(where, key), value.line, exc.hint)
    return out


def _catalog(
    path: Path, entries: dict[str, _Node], problems: list[Problem]
) -> tuple[Catalog, list[int]]:
    """The catalog the file's top-level entries describe, and the position of each of its
    pairs in the list; every problem is noted in ``problems``."""
    scope = _Scope(problems)
    _unknown_keys(entries, TOP_KEYS, "", scope)
    site = _site(entries.get("site"), scope)
    build = _build(entries.get("build"), scope)
    defaults = _params_block(entries.get("defaults"), "defaults", scope)
    profiles = {
        name: _params_block(node, f"profiles.{name}", scope)
        for name, node in _mapping(entries.get("profiles"), "profiles", scope).items()
    }
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
    return catalog, owners


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
    scope = _Scope(problems)
    if node is None:
        scope.add(
            "the catalog has no `pairs:` list", "pairs", hint="add pairs (see docs/catalog.md)"
        )
        return [], []
    if node.value is None:
        return [], []
    if not isinstance(node.value, list):
        scope.add("must be a list of pairs", "pairs", node.line, "start each pair with `- band: …`")
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
            _Scope(problems, pair.id, index).add(
                f"duplicate id {pair.id!r}",
                "id",
                pair.line,
                f"the pair on line {seen[pair.id]} has it too; "
                "give this one an explicit unique `id:`",
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
        _Scope(problems, index=index).add(
            "each pair must be a mapping (band, album, photo, cover…)", label, node.line
        )
        return None, label
    entries: dict[str, _Node] = node.value
    before = len(problems)
    quiet = _Scope([], index=index)
    band, album, explicit_id = (_text(entries, key, "", quiet) for key in ("band", "album", "id"))
    derived = slugify(f"{band} {album}")
    pair_id = explicit_id or derived or label
    line = node.line
    scope = _Scope(problems, pair_id, index)
    if not explicit_id and (band or album) and not derived:
        scope.add(
            "band and album give no usable id",
            "id",
            line,
            "add an explicit `id:` such as my-band-my-album",
        )
    _unknown_keys(entries, PAIR_KEYS, "", scope)
    band, album = (_text(entries, key, "", scope, required=True) for key in ("band", "album"))
    if explicit_id:
        id_line = entries["id"].line
        if not SLUG.match(explicit_id):
            scope.add(
                f"{printable(explicit_id)[:60]!r} is not a slug",
                "id",
                id_line,
                f"use lower-case letters, digits and hyphens, e.g. "
                f"{slugify(explicit_id) or 'my-band-my-album'!r}",
            )
        elif len(explicit_id) > MAX_ID_LENGTH:
            _Scope(problems, pair_id[:40] + "…", index).add(
                f"is {len(explicit_id)} characters long; ids name the site's files",
                "id",
                id_line,
                f"use at most {MAX_ID_LENGTH} characters, e.g. {slugify(explicit_id, 40)!r}",
            )
    year = None
    if "year" in entries:
        ynode = entries["year"]
        value = ynode.value
        if isinstance(value, bool) or not isinstance(value, int) or not 1000 <= value <= 2999:
            scope.add(
                f"{printable(ynode.text or _kind_of(ynode))[:40]} is not a year",
                "year",
                ynode.line,
                "write four digits, e.g. 1979",
            )
        else:
            year = value
    tags: tuple[str, ...] = ()
    if "tags" in entries:
        tnode = entries["tags"]
        items = [tnode] if isinstance(tnode.value, str) else tnode.value
        words = isinstance(items, list) and all(
            isinstance(item.value, str) and item.value.strip() for item in items
        )
        texts = [item.value.strip() for item in items] if words else []
        if not texts and items:
            scope.add(
                "must be a list of words", "tags", tnode.line, "e.g. tags: [post-punk, 1970s]"
            )
        bad = next((found for text in texts if (found := unsafe_character(text))), "")
        if bad:
            scope.add(f"a tag contains {bad}", "tags", tnode.line, "remove it")
        else:
            tags = tuple(dict.fromkeys(texts))
    notes = _text(entries, "notes", "", scope)
    images = {role: _image(entries.get(role), role, scope) for role in ("photo", "cover")}
    overrides = _params_block(entries.get("overrides"), "overrides", scope)
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


def _image(node: _Node | None, role: str, scope: _Scope) -> ImageRef | None:
    if node is None:
        scope.add("is missing", role, hint=f"add `{role}: {{src: path-or-url, credit: …}}`")
        return None
    # `photo: photos/band.jpg` is shorthand for `photo: {src: photos/band.jpg}`
    entries = {"src": node} if isinstance(node.value, str) else _mapping(node, role, scope)
    _unknown_keys(entries, IMAGE_KEYS, role, scope)
    src = _text(entries, "src", role, scope, required=True)
    url = _text(entries, "url", role, scope)
    url_problem = web_url_problem(url) if url else ""
    if url_problem:
        scope.add(
            f"{redact(printable(url))[:80]!r} is not an http(s) link: it {url_problem}",
            f"{role}.url",
            entries["url"].line,
            "give the source page as https://…",
        )
    scheme = url_scheme(src) if src else ""
    src_line = entries["src"].line if "src" in entries else None
    if scheme and scheme not in ("http", "https"):
        written = f"{scheme}://" if "://" in src else f"{scheme}:"
        scope.add(
            f"{written} sources are not supported",
            f"{role}.src",
            src_line,
            "use a path relative to the catalog or an http(s) URL",
        )
    src_problem = web_url_problem(src) if scheme in ("http", "https") else ""
    if src_problem:
        scope.add(
            f"{redact(printable(src))[:80]!r} {src_problem}",
            f"{role}.src",
            src_line,
            "check the URL (copy it from the browser's address bar)",
        )
    if src and not scheme and len(os.fsencode(src)) > 4096:
        scope.add("is too long for a path", f"{role}.src", src_line)
    if not src:
        return None
    return ImageRef(
        src=src,
        credit=_text(entries, "credit", role, scope),
        license=_text(entries, "license", role, scope),
        url=url,
    )
