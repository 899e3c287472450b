"""The one printer: everything covergen writes for people goes through ``Printer``.

Text that comes from data — pair names, paths, error messages, what a server said — is
never read as rich markup (``[/x]`` in a catalog once crashed the build) and never reaches
the terminal with its control characters or escape sequences (``text.printable``). Styles
are attached to whole pieces (``styled``), never written inside strings.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .text import printable


@dataclass(frozen=True)
class Styled:
    """A piece of text shown in a rich style (``bold red``, ``dim``…); the text is data."""

    text: str
    style: str = ""


def styled(text: object, style: str) -> Styled:
    return Styled(str(text), style)


Piece = str | Styled


class Printer:
    """Writes lines and tables to one stream: styled on a terminal, plain elsewhere."""

    def __init__(self, stream: TextIO | None = None, *, plain: bool | None = None):
        self.stream = stream or sys.stdout
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain = (not is_tty) if plain is None else plain
        self._console: Any = None

    @property
    def console(self) -> Any:
        """The rich Console on the stream, made on first use: plain output never loads rich
        (a fifth of a light command's start-up)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=self.stream,
                markup=False,
                highlight=False,
                emoji=False,
                soft_wrap=True,
                force_terminal=not self.plain,
                no_color=self.plain,
            )
        return self._console

    def text(self, *pieces: Piece) -> Any:
        """A rich Text of the pieces; data is made printable, never parsed."""
        from rich.text import Text

        out = Text()
        for piece in pieces:
            if isinstance(piece, Styled):
                out.append(printable(piece.text), style=piece.style or None)
            else:
                out.append(printable(piece))
        return out

    def line(self, *pieces: Piece) -> None:
        if not self.plain:
            self.console.print(self.text(*pieces))
            return
        text = "".join(_unstyled(p) for p in pieces) + "\n"
        try:
            self.stream.write(text)
        except UnicodeEncodeError:  # a stream that cannot take it (LANG=C): as ? instead
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            self.stream.write(text.encode(encoding, "replace").decode(encoding))
        self.stream.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Piece]],
        *,
        title: str = "",
        wrap: Sequence[str] = (),
    ) -> None:
        """A table whose cells are data (or Styled data); ``wrap`` names columns that fold.

        Off a terminal it is plain aligned text, nothing cut short: what scripts and logs
        want, where a boxed table would squeeze its columns to the default 80 characters.
        """
        if self.plain:
            self._plain_table(columns, [list(row) for row in rows], title)
            return
        from rich.table import Table

        table = Table(title=self.text(title) if title else None)
        for name in columns:
            if name in wrap:
                table.add_column(self.text(name), overflow="fold")
            else:
                table.add_column(self.text(name), no_wrap=True)
        for row in rows:
            table.add_row(*(self.text(cell) for cell in row))
        self.console.print(table)

    def _plain_table(self, columns: Sequence[str], rows: list[list[Piece]], title: str) -> None:
        cells = [[_unstyled(c) for c in row] for row in rows]
        widths = [
            max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)
        ]
        if title:
            self.line(title)
        for row in [list(columns), *cells]:
            padded = [text.ljust(width) for text, width in zip(row, widths, strict=True)]
            self.line("  ".join(padded).rstrip())


def _unstyled(piece: Piece) -> str:
    """A piece's text, made printable, without its style: what plain output shows."""
    return printable(piece.text if isinstance(piece, Styled) else piece)


def error_printer() -> Printer:
    return Printer(sys.stderr)
