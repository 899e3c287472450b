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
    BuildSettings,
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
