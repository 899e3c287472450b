"""`covergen init`: a new gallery folder, ready to build (as `mkdocs new` and `sigal init` do).

The folder gets a commented ``catalog.yaml`` (the site block, the built-in profiles
explained, one example pair), ``photos/`` and ``covers/`` holding that pair's images (a
public-domain NASA photo and a cover covergen generated), a ``Makefile`` with the everyday
targets and a ``.gitignore`` for what covergen makes. Nothing is ever overwritten: a folder
that already holds any of these files is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import write_bytes
from .errors import CovergenError

STARTER = Path(__file__).resolve().parent / "starter"
# What the new folder gets: its path there, from the starter file here.
FILES = {
    "catalog.yaml": "catalog.yaml",
    "photos/example-photo.jpg": "example-photo.jpg",
    "covers/example-cover.png": "example-cover.png",
    "Makefile": "Makefile",
    ".gitignore": "gitignore",
}


def new_catalog_text() -> str:
    """The starter catalog without its example pair: what `covergen add` writes into a
    catalog file that does not exist yet."""
    text = (STARTER / "catalog.yaml").read_text(encoding="utf-8")
    return text[: text.index("\npairs:\n")] + "\npairs:\n"


def create_gallery(folder: Path) -> list[Path]:
    """Make a new gallery in ``folder`` (created if missing); return the files written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CovergenError(
            f"{folder} is a file", field="folder", hint="name a new folder, e.g. my-gallery"
        )
    taken = [name for name in FILES if (folder / name).exists()]
    if taken:
        raise CovergenError(
            f"{folder} already holds {', '.join(taken)}",
            field="folder",
            hint="covergen init never overwrites anything: name a new folder, or add pairs "
            "to the catalog there with `covergen add`",
        )
    written = []
    try:
        for name, source in FILES.items():
            write_bytes(folder / name, (STARTER / source).read_bytes())
            written.append(folder / name)
    except OSError as exc:
        for path in written:  # nothing half-made stays behind
            path.unlink(missing_ok=True)
        raise CovergenError(
            f"cannot write {exc.filename or folder} ({exc.strerror or exc})",
            field="folder",
            hint="check that you may write there",
        ) from None
    return written
