"""The site's look: Jinja templates and static assets, a user folder over the built-in theme.

The built-in theme (``covergen/site/theme/``) is complete. A user folder (the repository's
``templates/``, next to ``catalog.yaml``) overrides it file by file, like sigal's themes: a
template or asset found there wins, anything missing falls back to the theme. Restyling is
editing templates and CSS, never Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CovergenError
from ..store import digest

if TYPE_CHECKING:
    import jinja2

THEME_DIR = Path(__file__).parent / "theme"
ASSETS = "assets"


@dataclass(frozen=True)
class Asset:
    name: str  # path under assets/, e.g. site.css
    source: Path
    digest: str  # first hex digits of the content's SHA-256, for cache busting

    @property
    def url(self) -> str:
        # A query string busts caches and still works from disk (file:// ignores it).
        return f"{ASSETS}/{self.name}?v={self.digest}"


class Theme:
    """Templates and assets, looked up in ``folders`` in order."""

    def __init__(self, user_dir: Path | None = None):
        if user_dir is not None and not Path(user_dir).is_dir():
            raise CovergenError(
                f"no templates folder at {user_dir}",
                field="templates",
                hint="create it, or leave it out to use the built-in theme",
            )
        self.folders = (Path(user_dir), THEME_DIR) if user_dir else (THEME_DIR,)
        self._env: jinja2.Environment | None = None

    @property
    def env(self) -> jinja2.Environment:
        """The Jinja environment, made on first use: a render the site can skip (nothing
        changed) never loads Jinja."""
        if self._env is None:
            import jinja2

            self._env = jinja2.Environment(
                loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(p) for p in self.folders]),
                # Every HTML and XML template escapes by default; robots.txt is plain text.
                autoescape=jinja2.select_autoescape(
                    enabled_extensions=("html", "htm", "xml", "svg"), default_for_string=True
                ),
                undefined=jinja2.StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
                keep_trailing_newline=True,
                auto_reload=False,
            )
            self._env.filters["duration"] = duration
            self._env.filters["filesize"] = filesize
        return self._env

    def render(self, name: str, context: dict[str, object]) -> bytes:
        """Render one template to UTF-8 bytes; template mistakes become CovergenError."""
        import jinja2

        try:
            return self.env.get_template(name).render(context).encode("utf-8")
        except jinja2.TemplateSyntaxError as exc:
            message = f"{exc.filename or exc.name}, line {exc.lineno}: {exc.message}"
            hint = "fix the template's Jinja syntax"
        except jinja2.TemplateNotFound as exc:
            message = f"template {exc.name!r} not found in {', '.join(map(str, self.folders))}"
            hint = "check the names in {% extends %}, {% include %} and {% import %}"
        except jinja2.UndefinedError as exc:
            message = f"{name}: {exc.message}"
            hint = "docs/site.md lists the variables each template gets"
        raise CovergenError(message, field="templates", hint=hint)

    def assets(self) -> dict[str, Asset]:
        """Every file under ``assets/``, the user's copy winning, by name."""
        found: dict[str, Asset] = {}
        for folder in reversed(self.folders):  # the theme first, then user files replace
            root = folder / ASSETS
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*")):
                relative = path.relative_to(root)
                # Editors' swap files and .DS_Store are not part of the site.
                if path.is_file() and not any(p.startswith(".") for p in relative.parts):
                    name = relative.as_posix()
                    found[name] = Asset(name, path, digest(path.read_bytes())[:10])
        return dict(sorted(found.items()))


def duration(seconds: float | None) -> str:
    """12.3 -> '12.3 s', 75 -> '1 min 15 s', 4000 -> '1 h 6 min'."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{round(seconds)} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def filesize(size: int) -> str:
    """1536 -> '1.5 KB' (decimal units, as browsers and file managers show them)."""
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"
