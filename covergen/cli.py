"""The `covergen` command: parses arguments, calls one function per command, reports errors.

Engine options are derived from ``StyleParams`` (see ``covergen.nst.params``), never
listed here by hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CovergenError
from .nst import Engine, EngineError, ParameterError, Progress, Runtime, StyleParams
from .nst.engine import PRECISIONS
from .nst.params import ParamSpec, format_value, from_mapping, param_specs

DEFAULT_CACHE = Path("cache")


def add_param_options(parser: argparse.ArgumentParser) -> None:
    """One --option per engine parameter, plus --set NAME=VALUE."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in param_specs():
        group = groups.get(spec.group)
        if group is None:
            group = groups[spec.group] = parser.add_argument_group(f"{spec.group} parameters")
        flag = "--" + spec.name.replace("_", "-")
        group.add_argument(
            flag,
            dest=f"param_{spec.name}",
            metavar=_metavar(spec),
            help=f"{spec.help} (default: {spec.default_text or 'none'})",
        )
    parser.add_argument(
        "--set",
        dest="param_set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set any parameter by name (repeatable)",
    )


def _metavar(spec: ParamSpec) -> str:
    if spec.choices:
        return "{" + ",".join(spec.choices) + "}"
    return {
        "int": "N",
        "float": "X",
        "str_list": "A,B",
        "float_list": "X,Y",
        "regions": "L,T,R,B,W;...",
    }.get(spec.kind, "VALUE")


def params_from_args(args: argparse.Namespace, base: StyleParams | None = None) -> StyleParams:
    """Collect the given parameter options (and --set) into validated params."""
    values: dict[str, Any] = {}
    for item in args.param_set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ParameterError(item, "--set needs NAME=VALUE", "e.g. --set content_weight=5")
        values[name.strip().replace("-", "_")] = value
    for spec in param_specs():
        value = getattr(args, f"param_{spec.name}")
        if value is not None:
            values[spec.name] = value
    return from_mapping(values, base=base)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covergen", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"covergen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    stylize = commands.add_parser(
        "stylize",
        help="paint one photo in the style of one or more covers",
        description="Paint PHOTO in the style of COVER (several covers are blended).",
    )
    stylize.add_argument("photo", type=Path)
    stylize.add_argument("covers", type=Path, nargs="+", metavar="cover")
    stylize.add_argument(
        "-o", "--output", type=Path, required=True, help="result (.png/.jpg/.webp)"
    )
    stylize.add_argument(
        "--content-map", type=Path, help="greyscale image: per-pixel content weight"
    )
    stylize.add_argument("--init-image", type=Path, help="starting image for --init image")
    add_runtime_options(stylize)
    stylize.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    add_param_options(stylize)

    params = commands.add_parser("params", help="list the engine parameters and their defaults")
    params.add_argument("--markdown", action="store_true", help="as the docs' Markdown table")
    return parser


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    group.add_argument("--precision", default="auto", choices=PRECISIONS)
    group.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="where converted weights are kept (default: cache)",
    )
    group.add_argument(
        "--weights-file", type=Path, help="VGG weights file to use instead of the packaged ones"
    )


def run_stylize(args: argparse.Namespace) -> int:
    from .stylize import stylize_files

    params = params_from_args(args)
    engine = Engine(
        Runtime(device=args.device, precision=args.precision),
        cache_dir=args.cache_dir,
        weights_file=args.weights_file,
    )
    report = _ProgressReport(enabled=not args.quiet)
    with report:
        result = stylize_files(
            args.photo,
            args.covers,
            args.output,
            params,
            engine,
            content_map=args.content_map,
            init_image=args.init_image,
            progress=report.update,
        )
    if not args.quiet:
        print(
            f"wrote {args.output} ({result.image.width}×{result.image.height}, "
            f"{result.iterations} iterations, {result.seconds:.1f} s on {result.device}, "
            f"loss {result.losses.total:.4g})"
        )
    return 0


class _ProgressReport:
    """A rich progress bar on a terminal, a line every few seconds elsewhere."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None
        self._scale = -1
        self._last_line = 0.0

    def __enter__(self) -> _ProgressReport:
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[loss]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, event: Progress) -> None:
        if not self.enabled:
            return
        loss = event.losses[0]
        text = f"loss {loss.total:.4g} (content {loss.content:.3g}, style {loss.style:.3g})"
        label = f"scale {event.scale + 1}/{event.scales} {event.size[0]}×{event.size[1]}"
        if self._progress is not None:
            if event.scale != self._scale:
                if self._task is not None:
                    self._progress.remove_task(self._task)
                self._task = self._progress.add_task(label, total=event.iterations, loss=text)
                self._scale = event.scale
            self._progress.update(self._task, completed=event.iteration, loss=text)
            return
        now = time.monotonic()
        if now - self._last_line >= 5 or event.iteration == event.iterations:
            self._last_line = now
            print(
                f"{label} iteration {event.iteration}/{event.iterations} {text}",
                file=sys.stderr,
                flush=True,
            )


def run_params(args: argparse.Namespace) -> int:
    print(params_markdown() if args.markdown else params_text(), end="")
    return 0


def params_text() -> str:
    lines = []
    for spec in param_specs():
        lines.append(f"{spec.name} = {format_value(spec.default) or '(none)'}")
        lines.append(f"    {spec.help}" + (f" [{spec.range_text}]" if spec.range_text else ""))
    return "\n".join(lines) + "\n"


def params_markdown() -> str:
    """The docs' parameter table, generated from StyleParams."""
    rows = ["| parameter | default | range | effect |", "| --- | --- | --- | --- |"]
    for spec in param_specs():
        default = f"`{spec.default_text}`" if spec.default_text else "(none)"
        rows.append(
            f"| `{spec.name}` | {default} | {spec.range_text} | {spec.help.replace('|', '/')} |"
        )
    return "\n".join(rows) + "\n"


COMMANDS = {"stylize": run_stylize, "params": run_params}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CovergenError, EngineError) as exc:
        if args.debug:
            raise
        print(f"covergen: error: {_describe(exc)}", file=sys.stderr)
        return 2


def _describe(exc: Exception) -> str:
    if isinstance(exc, CovergenError):
        return exc.describe()
    errors = getattr(exc, "errors", None) or [exc]
    parts = []
    for error in errors:
        if isinstance(error, ParameterError):
            text = f"{error.field}: {error.message}"
            parts.append(text + (f"\n  → {error.hint}" if error.hint else ""))
        else:
            parts.append(str(error))
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
