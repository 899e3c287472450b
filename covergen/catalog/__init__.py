"""The catalog: `catalog.yaml` parsed, validated (every problem at once) and resolved.

``model`` is the catalog as data, ``reader`` turns the file into it, ``schema`` says what
each field may hold (noting every problem with its line), ``edit`` changes the file itself
(`covergen add`) keeping its comments and layout.
"""

from __future__ import annotations

from ..errors import Problem
from .model import (
    BUILTIN_PROFILES,
    DEFAULT_BRANCH,
    EXECUTORS,
    PROFILE_ENV,
    SLUG,
    BuildSettings,
    Catalog,
    CatalogError,
    ImageRef,
    Pair,
    SiteSettings,
    slugify,
)
from .reader import MAX_BYTES, load_catalog, parse_catalog

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_BRANCH",
    "EXECUTORS",
    "MAX_BYTES",
    "PROFILE_ENV",
    "SLUG",
    "BuildSettings",
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
