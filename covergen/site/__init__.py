"""The gallery site: the catalog, the run log and the results, rendered into static files.

Reads nothing else and never imports torch. Templates and assets come from the built-in
theme (``covergen/site/theme/``), overridden file by file by a user folder (``templates/``).
See docs/site.md.
"""

from .render import SiteReport, render_site

__all__ = ["SiteReport", "render_site"]
