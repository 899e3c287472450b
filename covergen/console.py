"""The one printer: everything covergen writes for people goes through ``Printer``.

Text that comes from data — pair names, paths, error messages, what a server said — is
never read as rich markup (``[/x]`` in a catalog once crashed the build) and never reaches
the terminal with its control characters or escape sequences (``safetext.printable``). Styles
are attached to whole pieces (``styled``), never written inside strings.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .safetext import printable


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
            piece = piece if isinstance(piece, Styled) else Styled(piece)
            out.append(printable(piece.text), style=piece.style or None)
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
            fits: dict[str, Any] = {"overflow": "fold"} if name in wrap else {"no_wrap": True}
            table.add_column(self.text(name), **fits)
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


# ------------------------------------------------------------------- closed or broken output

# What a write to a stream that is gone raises: a pipe whose reader left (EPIPE), a closed
# descriptor (EBADF), a file object closed under us (ValueError), an absent stream (None).
_GONE = (errno.EPIPE, errno.EBADF, errno.ECONNRESET)


class GuardedStream:
    """A text stream whose loss (a reader that went away: ``| head``; a closed descriptor:
    ``>&-``) never stops the command: the first failed write marks it ``lost`` and the rest
    of the output is dropped, while the work goes on and the exit status stays the
    command's own. Everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO | None):
        self._stream = stream
        self.lost = stream is None
        # Why writing stopped, when it was not the reader leaving (a full disk behind
        # `> file`): the command's printed result is then incomplete.
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)  # type: ignore[union-attr]
            except (OSError, ValueError) as exc:
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()  # type: ignore[union-attr]
            except (OSError, ValueError) as exc:
                self._lose(exc)

    def isatty(self) -> bool:
        if self.lost:
            return False
        try:
            return bool(self._stream.isatty())  # type: ignore[union-attr]
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _lose(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno not in _GONE:
            # A full disk behind `> file`: the work still goes on (progress is not the
            # product), and the command says at the end that its output is incomplete.
            self.failure = exc
        self.lost = True
        # What the stream still buffers would fail again when Python flushes it at exit
        # ("Exception ignored … BrokenPipeError"): its descriptor now leads nowhere.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self._stream.fileno()  # type: ignore[union-attr]
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)


@dataclass
class OutputGuard:
    """The process's stdout and stderr as GuardedStreams, for the length of a command."""

    stdout: GuardedStream
    stderr: GuardedStream

    @property
    def lost(self) -> bool:
        return self.stdout.lost or self.stderr.lost


@contextlib.contextmanager
def guarded_output() -> Iterator[OutputGuard]:
    """Replace sys.stdout and sys.stderr with GuardedStreams inside the block."""
    saved = sys.stdout, sys.stderr
    guard = OutputGuard(GuardedStream(sys.stdout), GuardedStream(sys.stderr))
    sys.stdout, sys.stderr = guard.stdout, guard.stderr  # type: ignore[assignment]
    try:
        yield guard
    finally:
        sys.stdout, sys.stderr = saved
