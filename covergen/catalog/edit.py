"""Editing the catalog: `covergen add` appends a validated pair to `catalog.yaml`.

The edit is made on the text, not by loading and re-dumping the YAML, so that the user's
comments, blank lines, key order and quoting survive byte for byte: the only change is the
inserted block (and, for `pairs: []` or `pairs: null`, the empty value it replaces). Where the
`pairs:` list ends is read from the node marks of ``yaml.compose``; the whole new text is then
validated by the catalog's own parser before it is written, atomically, under the catalog's
lock (two `add`s at once keep both pairs).

Why not ruamel.yaml's round trip, which keeps comments too: tried on this module's tests, it
reproduces unchanged files exactly, but an appended pair lands *after* the comments that
introduce the next section (``# Site settings`` ends up above the new pair, not below it),
CRLF files come back with LF line ends, and ``pairs: []   # none yet`` cannot become a block
list keeping its comment where it was. Each would need surgery on ruamel's comment tokens,
which is this module's text surgery again, with a library's internals in the way.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_bytes
from ..errors import CovergenError
from ..files import read_user_file
from ..locks import catalog_lock
from ..nst.params import param_specs
from ..safetext import unsafe_character
from ..starter import new_catalog_text
from .model import Catalog, slugify
from .reader import MAX_BYTES, load_catalog, parse_catalog

# A new catalog: enough to explain the format to whoever opens it next.
DEFAULT_STEP = 2  # indentation of a nested block when the file gives no example to follow
_NO_FOLDING = 2**31 - 1  # emitter width: never fold a quoted string over several lines
_NULLS = ("", "~", "null", "Null", "NULL")


@dataclass(frozen=True)
class NewPair:
    """A pair to add, as given on the command line; text is quoted when written."""

    band: str
    album: str
    photo: str  # src: a path relative to the catalog, or an http(s) URL
    cover: str
    id: str | None = None  # default: slugify(band + " " + album)
    year: int | None = None
    tags: tuple[str, ...] = ()
    notes: str = ""
    photo_credit: str = ""
    photo_license: str = ""
    photo_url: str = ""
    cover_credit: str = ""
    cover_license: str = ""
    cover_url: str = ""
    overrides: Mapping[str, str | int | float | list] = field(default_factory=dict)

    @property
    def pair_id(self) -> str:
        """The id the catalog will give this pair: the explicit one, else the slug."""
        return self.id or slugify(f"{self.band} {self.album}")


@dataclass(frozen=True)
class _Edit:
    """Replace ``text[start:end]`` with ``keep``, ``head``, a blank line if ``gap``, the pair.

    ``keep`` is original text carried over (the rest of the `pairs:` line once an empty
    `[]` or `~` is removed); the layout fields copy what the surrounding list does.
    """

    start: int
    end: int
    indent: str  # before the `- `
    key_gap: int = 2  # from the `-` to the item's keys
    step: int = DEFAULT_STEP  # indentation of photo/cover/overrides contents under their key
    keep: str = ""
    head: str = ""  # written before the pair: a line break, `pairs:`…
    gap: bool = False


def add_pair(catalog_path: Path, new: NewPair) -> str:
    """Append ``new`` to the catalog's `pairs:` list, keeping everything else as it was.

    Creates the catalog (with a short commented header) when it does not exist. The new text
    is validated with ``parse_catalog`` before anything is written, so a duplicate id, an
    unknown override or a bad year raise (``CovergenError`` / ``CatalogError``) and leave the
    file untouched; the write itself is atomic and keeps the file's permission bits.
    Returns the new pair's id. Text fields are stripped, as the catalog would read them.
    """
    path = Path(catalog_path)
    # Edit the file a symlink points at, so the link itself survives the rename.
    target = Path(os.path.realpath(path))
    new = _normalised(new)
    _refuse_unsafe_text(new)
    pair_id = new.pair_id
    if not pair_id:
        raise CovergenError(
            f"cannot make an id from {new.band!r} and {new.album!r}",
            field="id",
            hint="give --id, e.g. --id my-band-my-album",
        )

    if not target.parent.is_dir():
        raise CovergenError(
            f"no folder {target.parent} for the catalog",
            field="catalog",
            hint="create the folder, or pass another --catalog",
        )
    # Read, edit and replace under the catalog's lock: two `add`s at once must not each
    # write their own version of the file and lose the other's pair.
    with catalog_lock(target):
        mode: int | None = None
        if target.exists():
            mode = stat.S_IMODE(target.stat().st_mode)
            text = _read_text(target, path)
        else:
            text = new_catalog_text()

        edit = _plan(text, path, pair_id, new)
        newline = _newline(text)
        block = render_pair(new, edit.indent, key_gap=edit.key_gap, step=edit.step, newline=newline)
        head = edit.head.replace("\n", newline)
        inserted = edit.keep + head + (newline if edit.gap else "") + block
        new_text = text[: edit.start] + inserted + text[edit.end :]

        catalog = parse_catalog(new_text, path)  # raises CatalogError, nothing written yet
        if not catalog.pairs or catalog.pairs[-1].id != pair_id:
            # Would mean the block landed outside the list; never write such a file.
            raise CovergenError(
                f"the new pair did not end up last in {path.name}'s pairs",
                pair=pair_id,
                hint="the catalog was not changed; please report this with the catalog attached",
            )
        try:
            write_bytes(target, new_text.encode("utf-8"), mode=mode)
        except OSError as exc:
            raise CovergenError(
                f"cannot write {target} ({exc.strerror or exc})",
                field="catalog",
                hint="check that you may write to the catalog's folder (a permission problem, "
                "or a full disk); the catalog was not changed",
            ) from None
    return pair_id


def render_pair(
    new: NewPair,
    indent: str,
    *,
    key_gap: int = 2,
    step: int = DEFAULT_STEP,
    newline: str = "\n",
) -> str:
    """The YAML block for one pair: a `- ` item at ``indent``, each line ending in ``newline``.

    ``key_gap`` is the distance from the `-` to the keys (2 for `- band:`), ``step`` the
    indentation of the image and override entries under their key. Every string is
    double-quoted with escapes, so any band name (`yes`, `#1`, `- x`, newlines…) reads back
    exactly; numbers are plain, lists are flow lists.
    """
    if key_gap < 2:
        raise ValueError("key_gap must be at least 2: YAML needs a space after the `-`")
    # None leaves a key out: an id or a year not given, no tags, no notes.
    top = {"id": new.id, "band": new.band, "album": new.album, "year": new.year}
    top |= {"tags": list(new.tags) or None, "notes": new.notes or None}
    entries = [
        (0, f"{key}: {_scalar(value, key)}") for key, value in top.items() if value is not None
    ]
    for role in ("photo", "cover"):
        entries += [(0, f"{role}:"), (1, f"src: {_scalar(getattr(new, role), f'{role}.src')}")]
        for key in ("credit", "license", "url"):
            if value := getattr(new, f"{role}_{key}"):
                entries.append((1, f"{key}: {_scalar(value, f'{role}.{key}')}"))
    if new.overrides:
        entries.append((0, "overrides:"))
        known = {spec.name for spec in param_specs()}
        for name, value in new.overrides.items():
            # Known names are plain identifiers; anything else is quoted so that it can
            # only ever be a key (the catalog then reports it as unknown).
            key = name if name in known else _scalar(name, "overrides")
            entries.append((1, f"{key}: {_scalar(value, f'overrides.{name}')}"))

    dash = f"{indent}-{' ' * (key_gap - 1)}"
    return "".join(
        (dash if number == 0 else indent + " " * (key_gap + step * depth)) + line + newline
        for number, (depth, line) in enumerate(entries)
    )


def _scalar(value: Any, where: str) -> str:
    """One value as a YAML flow scalar (or flow list) on a single line."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(item, where) for item in value) + "]"
    if isinstance(value, str):
        style: str | None = '"'
    elif value is None or isinstance(value, bool | int | float):
        style = None
    else:
        raise CovergenError(
            f"cannot write a {type(value).__name__} value",
            field=where,
            hint="give text, a number or a list",
        )
    dumped = yaml.safe_dump(value, default_style=style, allow_unicode=True, width=_NO_FOLDING)
    # A lone plain scalar is dumped as an open-ended document: drop the `...` end marker.
    text = dumped.removesuffix("\n...\n").removesuffix("\n")
    if "\n" in text:  # the emitter escapes line breaks in double quotes; never fold
        raise AssertionError(f"multi-line scalar for {where}: {text!r}")
    return text


def _normalised(new: NewPair) -> NewPair:
    """Strip text as the catalog does when reading, so what is written reads back equal."""
    strip = {
        f.name: getattr(new, f.name).strip()
        for f in dataclasses.fields(new)
        if f.name != "id" and isinstance(getattr(new, f.name), str)
    }
    return dataclasses.replace(
        new,
        **strip,
        # An empty --id means "none given", not an empty id.
        id=(new.id.strip() or None) if isinstance(new.id, str) else new.id,
        tags=tuple(dict.fromkeys(tag.strip() for tag in new.tags)),
        overrides=dict(new.overrides),
    )


def _refuse_unsafe_text(new: NewPair) -> None:
    """Text the catalog would refuse is refused here, naming the option it came from (YAML's
    own escapes would otherwise turn it into a syntax error somewhere in the new block)."""
    for f in dataclasses.fields(new):
        value = getattr(new, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for text in values:
            if isinstance(text, str) and (bad := unsafe_character(text)):
                option = "--" + f.name.replace("_", "-")
                raise CovergenError(
                    f"contains {bad}",
                    field=f.name,
                    hint=f"retype {option} without it",
                )


def _read_text(target: Path, path: Path) -> str:
    # Bytes, not read_text(): universal newlines would turn CRLF into LF and the edit
    # would rewrite every line. A FIFO or a device named as the catalog is refused unread.
    data = read_user_file(target, limit=MAX_BYTES, field="catalog", what="catalog file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        load_catalog(target)  # raises the catalog's own "not UTF-8" problem
        raise


def _newline(text: str) -> str:
    """The file's line break, CRLF or LF (judged by its first line break)."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _plan(text: str, path: Path, pair_id: str, new: NewPair) -> _Edit:
    """Where the new pair goes and how it is laid out; refuse a duplicate id first."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        parse_catalog(text, path)  # raises CatalogError naming the line
        raise
    if root is None:  # empty, or only comments
        return _append_pairs_key(text, key_col=0)
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        parse_catalog(text, path)  # a non-mapping is a CatalogError
        raise CovergenError(
            "the catalog is written as one {…} flow mapping",
            field="catalog",
            hint="write it as a block mapping (`pairs:` on its own line) to use `covergen add`",
        )
    key_col = root.value[0][0].start_mark.column if root.value else 0
    found = [(k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "pairs"]
    if not found:
        return _append_pairs_key(text, key_col)
    key_node, pairs_node = found[0]
    if pairs_node.start_mark.index < key_node.end_mark.index:
        # An alias: its marks point at the anchor, elsewhere in the file.
        raise CovergenError(
            "`pairs:` is an alias of another list",
            field="pairs",
            hint="write the pairs out under `pairs:` to use `covergen add`",
        )
    if isinstance(pairs_node, yaml.SequenceNode) and pairs_node.value:
        _refuse_duplicate(parse_catalog(text, path), pair_id, new)
        if pairs_node.flow_style:
            raise CovergenError(
                "`pairs:` is a [flow, list] on one line",
                field="pairs",
                hint="write one `- band: …` item per block to use `covergen add`",
            )
        return _append_to_list(text, pairs_node)
    empty_flow = isinstance(pairs_node, yaml.SequenceNode) and pairs_node.flow_style
    null = isinstance(pairs_node, yaml.ScalarNode) and pairs_node.value in _NULLS
    if not (empty_flow or null) or pairs_node.tag not in (
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:seq",
    ):
        parse_catalog(text, path)  # "must be a list of pairs"
        raise CovergenError("`pairs:` is not a list", field="pairs", hint="make it a list")
    return _replace_empty_list(text, key_node, pairs_node)


def _refuse_duplicate(catalog: Catalog, pair_id: str, new: NewPair) -> None:
    taken = {pair.id: pair for pair in catalog.pairs}
    if pair_id not in taken:
        return
    stem = f"{pair_id}-{new.year}" if new.year is not None else pair_id
    numbered = (f"{pair_id}-{number}" for number in itertools.count(2))
    suggestion = next(name for name in itertools.chain([stem], numbered) if name not in taken)
    line = taken[pair_id].line
    raise CovergenError(
        f"a pair with this id is already in the catalog{f' (line {line})' if line else ''}",
        pair=pair_id,
        field="id",
        hint=f"give --id with another id, e.g. --id {suggestion}",
    )


def _append_to_list(text: str, pairs_node: yaml.SequenceNode) -> _Edit:
    """After the last item of a block list, and after comments that are still inside it."""
    items = pairs_node.value
    # For a block sequence, indented or not, the node starts at its first `-`.
    dash_col = pairs_node.start_mark.column
    last_end = _content_end(items[-1], text)
    at = _next_line_start(text, last_end)
    # Comments indented into the list belong to it (a note on the last pair, a commented
    # out pair); one at the list's own column 0 already introduces the next section.
    at = _after_own_comments(text, at, min_col=dash_col if dash_col > 0 else 1)
    separated = len(items) > 1 and _blank_line_between(
        text, _content_end(items[-2], text), items[-1].start_mark.index
    )
    return _Edit(
        start=at,
        end=at,
        indent=" " * dash_col,
        key_gap=_key_gap(items, dash_col),
        step=_nested_step(items),
        head="\n" if at == len(text) and text and not text.endswith("\n") else "",
        gap=separated,
    )


def _replace_empty_list(text: str, key_node: yaml.Node, value: yaml.Node) -> _Edit:
    """`pairs:`, `pairs: ~` or `pairs: []`: drop the empty value, start a block list below."""
    start, end = value.start_mark.index, value.end_mark.index
    if start != end:  # a written `[]`, `~` or `null`: also drop the spaces before it
        while start > 0 and text[start - 1] in " \t":
            start -= 1
    line_end = _next_line_start(text, end)
    key_col = key_node.start_mark.column
    at = _after_own_comments(text, line_end, min_col=key_col + 1)
    keep = text[end:at]
    return _Edit(
        start=start,
        end=at,
        indent=" " * (key_col + DEFAULT_STEP),
        keep=keep,
        head="\n" if not keep.endswith("\n") and (at == len(text)) else "",
    )


def _append_pairs_key(text: str, key_col: int) -> _Edit:
    """No `pairs:` at all: add it, with the new pair, at the end of the file."""
    head = "\n" if text and not text.endswith("\n") else ""
    if text.strip():  # set the new section off from the one before
        head += "\n"
    head += " " * key_col + "pairs:\n"
    return _Edit(start=len(text), end=len(text), indent=" " * (key_col + DEFAULT_STEP), head=head)


def _content_end(node: yaml.Node, text: str) -> int:
    """Index just past the last character that belongs to ``node``.

    A block collection's own end mark points at the next token, past any comments and
    blank lines after it; so descend to its last scalar or flow collection, whose marks
    are exact. A block scalar's mark also runs past the blank lines after it, which are
    only its own under `+` (keep) chomping.
    """
    while not (isinstance(node, yaml.ScalarNode) or node.flow_style) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    end = node.end_mark.index
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        start = node.start_mark.index
        header_end = text.find("\n", start)
        header = text[start : len(text) if header_end < 0 else header_end].split("#")[0]
        if "+" not in header:
            end = start + len(text[start:end].rstrip())
    return end


def _next_line_start(text: str, index: int) -> int:
    """The start of the line after the one ``index`` is on (``len(text)`` on the last line).

    An index already at a line start (a block scalar's end) stays where it is.
    """
    if index == 0 or text[index - 1] == "\n":
        return index
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _after_own_comments(text: str, at: int, min_col: int) -> int:
    """Move ``at`` past the comment lines (and blank lines between them) indented at least
    ``min_col``: they are part of the list, not of what follows it."""
    position = at
    while position < len(text):
        newline = text.find("\n", position)
        line_end = len(text) if newline < 0 else newline + 1
        line = text[position:line_end]
        content = line.lstrip(" \t")
        if content.strip() == "":
            position = line_end
            continue
        if not content.startswith("#") or len(line) - len(content) < min_col:
            break
        position = at = line_end
    return at


def _blank_line_between(text: str, start: int, end: int) -> bool:
    """Whether a blank line separates two items (the list's style, which the new pair copies)."""
    return any(line.strip() == "" for line in text[start:end].split("\n")[1:-1])


def _key_gap(items: Sequence[yaml.Node], dash_col: int) -> int:
    """Distance from the `-` to the item's keys, as the last block-mapping item has it."""
    for item in reversed(items):
        if isinstance(item, yaml.MappingNode) and not item.flow_style:
            gap = item.start_mark.column - dash_col
            if gap >= 2:
                return gap
    return 2


def _nested_step(items: Sequence[yaml.Node]) -> int:
    """How far the file indents a nested block mapping (`photo:` → `src:`)."""
    for item in reversed(items):
        if not isinstance(item, yaml.MappingNode) or item.flow_style:
            continue
        for key, value in item.value:
            if isinstance(value, yaml.MappingNode) and not value.flow_style and value.value:
                step = value.start_mark.column - key.start_mark.column
                if step > 0:
                    return step
    return DEFAULT_STEP


@dataclass(frozen=True)
class PlacedImage:
    """Where an image given to `covergen add` goes in the catalog, and the copy to make."""

    src: str  # as the catalog will say it: relative to the catalog's folder, or a URL
    copy_from: Path | None = None  # --copy: the file to copy to ``src``


def place_image(text: str, catalog_path: Path, role: str, *, copy: bool = False) -> PlacedImage:
    """The catalog's ``src`` for an image path typed from the current folder (as a shell
    completes it), or a URL as it is.

    ``band/photos/x.jpg`` typed beside ``band/catalog.yaml`` becomes ``photos/x.jpg``; a
    path already relative to the catalog's folder is kept; a file outside that folder is
    refused unless ``copy`` (then it is to be copied into ``photos/`` or ``covers/`` there).
    """
    from ..safetext import url_scheme
    from ..sources import near_names

    if url_scheme(text):
        return PlacedImage(text)
    root = Path(catalog_path).resolve().parent
    typed = Path(text).expanduser()
    here = typed if typed.is_absolute() else Path.cwd() / typed
    if not here.is_file() and not typed.is_absolute() and (root / typed).is_file():
        here = root / typed  # written relative to the catalog, as earlier releases wanted
    if not here.is_file():
        near = near_names(here.absolute())
        raise CovergenError(
            f"no such file: {text}",
            field=role,
            hint=f"did you mean {' or '.join(repr(str(p)) for p in near)}?"
            if near
            else "give the path from this folder (as your shell completes it), or a URL",
        )
    target = here.resolve()
    if copy:
        folder = "photos" if role == "photo" else "covers"
        dest = root / folder / target.name
        if dest.exists() and dest.resolve() != target:
            if dest.read_bytes() != target.read_bytes():
                raise CovergenError(
                    f"{dest} exists and is another image",
                    field=role,
                    hint="rename the file you add, or give the one already there",
                )
            return PlacedImage(f"{folder}/{target.name}")
        return PlacedImage(f"{folder}/{target.name}", None if dest.exists() else target)
    if not target.is_relative_to(root):
        raise CovergenError(
            f"{text} lies outside the catalog's folder {root}",
            field=role,
            hint="add --copy to copy it there (photos/ or covers/), or move it there yourself",
        )
    return PlacedImage(target.relative_to(root).as_posix())


def keep_overrides(catalog_path: Path, pair_id: str, values: Mapping[str, Any]) -> None:
    """Write ``values`` into the overrides of pair ``pair_id`` (`rerun --keep`), editing the
    text so that every other byte, comment and layout stays; a value the pair already
    overrides is replaced in place. Checked with ``parse_catalog`` before the atomic write,
    under the catalog's lock; a pair written as a flow mapping (`{band: …}`) is refused."""
    path = Path(catalog_path)
    target = Path(os.path.realpath(path))
    known = {spec.name for spec in param_specs()}
    for name in values:
        if name not in known:
            raise CovergenError(
                f"unknown parameter {name!r}", field=name, hint="see covergen params"
            )
    with catalog_lock(target):
        mode = stat.S_IMODE(target.stat().st_mode)
        text = _read_text(target, path)
        pair = parse_catalog(text, path, strict=False).pair(pair_id)  # "did you mean"
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        pairs = next(v for k, v in root.value if k.value == "pairs")
        item = next(i for i in pairs.value if i.start_mark.line + 1 == pair.line)
        if not isinstance(item, yaml.MappingNode) or item.flow_style:
            raise _on_one_line(pair_id, "is")
        newline = _newline(text)
        key_col = item.value[0][0].start_mark.column
        key_node, overrides = next(
            ((k, v) for k, v in item.value if k.value == "overrides"), (None, None)
        )
        # Where the new entries go (text[start:at] is replaced), after what head, at what
        # column, and the values the pair already overrides (replaced in place).
        present: dict[str, yaml.Node] = {}
        col = key_col + DEFAULT_STEP
        if key_node is None:
            start = at = _next_line_start(text, _content_end(item, text))
            head = f"{' ' * key_col}overrides:{newline}"
        elif isinstance(overrides, yaml.ScalarNode) and overrides.value in _NULLS:
            start, at = key_node.start_mark.index, _next_line_start(text, key_node.end_mark.index)
            head = f"overrides:{newline}"
        elif isinstance(overrides, yaml.MappingNode) and not overrides.flow_style:
            present = {k.value: v for k, v in overrides.value}
            col = overrides.value[0][0].start_mark.column
            start = at = _next_line_start(text, _content_end(overrides, text))
            head = ""
        else:
            raise _on_one_line(pair_id, "are")
        edits: list[tuple[int, int, str]] = []  # (start, end, replacement), applied last first
        for name, value in values.items():
            if name in present:
                node = present[name]
                edits.append(
                    (node.start_mark.index, _content_end(node, text), _scalar(value, name))
                )
            else:
                head += f"{' ' * col}{name}: {_scalar(value, name)}{newline}"
        edits.append((start, at, head))  # nothing added: an empty insertion, no change
        new_text = text
        for start, end, replacement in sorted(edits, reverse=True):
            new_text = new_text[:start] + replacement + new_text[end:]
        checked = parse_catalog(new_text, path)  # raises, nothing written yet
        kept = checked.pair(pair_id).overrides
        if any(kept.get(name) != value for name, value in values.items()):
            raise CovergenError(
                "the edit did not read back as intended",
                pair=pair_id,
                field="overrides",
                hint="the catalog was not changed; write the overrides by hand",
            )
        write_bytes(target, new_text.encode("utf-8"), mode=mode)


def _on_one_line(pair_id: str, verb: str) -> CovergenError:
    """What --keep says of a pair (``is``) or its overrides (``are``) in flow style."""
    return CovergenError(
        f"{verb} written on one line ({{…}}); --keep edits block mappings only",
        pair=pair_id,
        field="overrides",
        hint="write the overrides into the catalog by hand",
    )
