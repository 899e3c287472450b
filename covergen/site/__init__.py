"""The gallery site: the catalog, the run log and the results, rendered into static files.

Reads nothing else and never imports torch. Templates and assets come from the built-in
theme (``covergen/site/theme/``), overridden file by file by a user folder (``templates/``).
See docs/site.md. Imported lazily: `publish` and `serve` only need the staging marker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .render import SiteReport, render_site


def __getattr__(name: str) -> Any:
    if name in ("SiteReport", "render_site"):
        from . import render

        return getattr(render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SiteReport", "render_site"]
