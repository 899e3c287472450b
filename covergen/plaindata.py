"""Dataclasses as plain data (dicts, lists, scalars), for JSON records and digests.

``dataclasses.asdict`` deep-copies every leaf, which made it the largest cost of a rebuild
with nothing to do (hundreds of records, each walked in full). Records here hold only
immutable leaves (str, int, float, bool, None, Path), so nothing needs copying: ``plain``
gives the same structure as ``asdict`` without the copies.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any


@cache
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind))


def plain(value: Any) -> Any:
    """``value`` with every dataclass instance turned into a dict of its fields, recursively
    (through dicts, lists and tuples), as ``dataclasses.asdict`` would."""
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: plain(getattr(value, name)) for name in _field_names(kind)}
    if kind is dict:
        return {plain(k): plain(v) for k, v in value.items()}
    if kind in (list, tuple):
        return kind(plain(v) for v in value)
    return value
