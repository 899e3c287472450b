"""Reading `catalog.yaml`: the YAML composed into nodes (libyaml's C composer when available: a
10,000-pair catalog composes in well under a second) and each node converted once, keeping its
line, so that every problem names its line, duplicate keys are caught, unknown tags are
refused, and aliases cannot expand a small file into a huge one (``_Reader``). ruamel.yaml
would give line numbers too, but its pure-Python round-trip reader is several times slower on
large catalogs, and round-tripping is only needed to edit (``catalog.edit``)."""

from __future__ import annotations

import dataclasses
import gc
import math
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ..errors import CovergenError, Problem
from ..files import read_user_file
from ..safetext import printable
from .model import Catalog, CatalogError
from .schema import _STR_TAG, _catalog, _join, _Node, _pair_index, _Scope

MAX_BYTES = 16 * 1024 * 1024
# Aliases may be expanded, but a file cannot grow more than ALIAS_GROWTH-fold that way (the
# "billion laughs"); small files get NODE_FLOOR nodes whatever their aliases.
ALIAS_GROWTH = 10
NODE_FLOOR = 100_000
MAX_DEPTH = 64  # nesting; a real catalog is 5 deep
_TAGS = "unknown YAML tags (!something) are not supported: write plain values"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
        _refuse(
            path, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the file as UTF-8"
        )
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
        _refuse(
            path,
            f"the catalog is {len(text)} characters long",
            f"keep catalogs under {MAX_BYTES} bytes",
        )
    root = _compose(text, path)
    reader = _Reader(path, root, aliased="*" in text)  # no "*", no alias
    problems = reader.problems
    top = reader.tree or _Node({}, 1)  # an empty file: no pairs
    if not isinstance(top.value, dict):
        _refuse(
            path,
            "the file must be a mapping with site, defaults, profiles and pairs",
            "start the file with `pairs:`",
            line=1,
        )
    catalog, owners = _catalog(path, top.value, problems)
    if not any(p.index is None for p in problems):
        problems.extend(_resolution_problems(catalog, owners))
    problems = _unique(problems)
    if not problems:
        return catalog
    problems.sort(key=lambda p: p.line or 0)
    if strict or any(p.index is None for p in problems):
        raise CatalogError(path, problems)
    bad = {p.index for p in problems}
    kept = tuple(
        pair for pair, index in zip(catalog.pairs, owners, strict=True) if index not in bad
    )
    return dataclasses.replace(catalog, pairs=kept, problems=tuple(problems))


def _unique(problems: list[Problem]) -> list[Problem]:
    first: dict[tuple[Any, ...], Problem] = {}
    for p in problems:
        first.setdefault((p.message, p.field, p.pair, p.line), p)
    return list(first.values())


def _refuse(path: Path, message: str, hint: str = "", **where: Any) -> NoReturn:
    """Raise the CatalogError of a file that cannot be read any further."""
    raise CatalogError(path, [Problem(message, hint=hint, **where)]) from None


def _compose(text: str, path: Path) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        where = f" (column {mark.column + 1})" if mark else ""
        _refuse(
            path,
            f"malformed YAML: {exc.problem}{where}",
            "fix the YAML syntax at that line",
            line=line,
        )
    except yaml.YAMLError as exc:
        _refuse(path, f"malformed YAML: {exc}")
    except RecursionError:
        _refuse(path, "the YAML is nested too deeply", "a catalog needs a few levels only")


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
                scope = _Scope(problems, pair.id, index)
                scope.add(exc.message + under, exc.field or "", pair.line, exc.hint)
                break
    return problems


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
            _refuse(
                path,
                f"its aliases expand to more than {self._limit:,} values (an alias bomb?)",
                "use fewer aliases, or write the repeated parts out",
                field=str(exc),
            )

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
                self._problem(f"cannot read this value ({printable(problem)})", where, line, _TAGS)
                value = None
            return _Node(value, line, node.value)
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            self._problem(f"unknown YAML tag {printable(node.tag)}", where, line, _TAGS)
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
                    if isinstance(merged_node.value, dict):  # the first source of a key wins
                        merged |= {k: v for k, v in merged_node.value.items() if k not in merged}
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
        _Scope(self.problems, index=_pair_index(where)).add(message, where, line, hint)


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
