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
from .catalog import PROFILE_ENV
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
    return from_mapping(param_values_from_args(args), base=base)


def param_values_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The parameter options and --set values given, as raw name -> text."""
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
    return values


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

    check = commands.add_parser("check", help="validate the catalog and report every problem")
    add_catalog_option(check)

    build = commands.add_parser("build", help="paint new and changed pairs, render the site")
    add_catalog_option(build)
    build.add_argument("--only", nargs="+", metavar="ID", default=[], help="just these pairs")
    build.add_argument("--force", action="store_true", help="repaint even if a result exists")
    build.add_argument(
        "--profile",
        help=f"parameter profile from the catalog (or ${PROFILE_ENV}; "
        "default: draft on CPU, final on GPU)",
    )
    build.add_argument("--dry-run", action="store_true", help="show the plan, paint nothing")
    build.add_argument("--no-site", action="store_true", help="do not render the site")
    build.add_argument(
        "--docs-dir", type=Path, help="a built user guide (mkdocs) to publish under site/docs/"
    )
    add_build_options(build)

    rerun = commands.add_parser(
        "rerun",
        help="repaint one pair, trying parameters without "
        "editing the catalog (e.g. --set content_weight=5)",
    )
    add_catalog_option(rerun)
    rerun.add_argument("pair", metavar="ID")
    rerun.add_argument("--profile")
    rerun.add_argument("--force", action="store_true", help="repaint even if a result exists")
    rerun.add_argument("-o", "--output", type=Path, help="also copy the result here")
    add_build_options(rerun)
    add_param_options(rerun)

    add = commands.add_parser(
        "add", help="append a validated pair to the catalog, keeping its comments and formatting"
    )
    add_catalog_option(add)
    add.add_argument("--band", required=True)
    add.add_argument("--album", required=True)
    add.add_argument("--photo", required=True, help="path relative to the catalog, or a URL")
    add.add_argument("--cover", required=True, help="path relative to the catalog, or a URL")
    add.add_argument("--id", help="slug (default: from band and album)")
    add.add_argument("--year", type=int)
    add.add_argument("--tags", default="", help="comma-separated")
    add.add_argument("--notes", default="")
    for role in ("photo", "cover"):
        for item in ("credit", "license", "url"):
            add.add_argument(f"--{role}-{item}", default="", help=f"the {role}'s {item}")
    add.add_argument(
        "--set",
        dest="param_set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter override for this pair",
    )

    publish = commands.add_parser(
        "publish",
        help="send the built site to a git branch or a "
        "directory (target from the catalog's site.publish)",
    )
    add_catalog_option(publish)
    publish.add_argument("target", nargs="?", help="git:REMOTE, dir:PATH, or a URL or path")
    publish.add_argument("--site-dir", type=Path, default=Path("site"))
    publish.add_argument("--branch", help="git branch (default: site.publish_branch or gh-pages)")
    publish.add_argument("--cname", help="custom domain written to CNAME")
    publish.add_argument(
        "--keep-history",
        action="store_true",
        default=None,
        help="commit on top of the branch instead of replacing it",
    )
    publish.add_argument("--message", default="", help="commit message")
    publish.add_argument("--dry-run", action="store_true", help="show what would change")
    publish.add_argument(
        "--force",
        action="store_true",
        help="allow replacing what covergen did not make: a non-empty directory never "
        "published to, or a git branch whose last commit is not covergen's",
    )

    serve = commands.add_parser(
        "serve", help="preview the site locally, under the same base path as the published one"
    )
    add_catalog_option(serve)
    serve.add_argument("--site-dir", type=Path, default=Path("site"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--base-path", help="default: the path of site.base_url")

    status = commands.add_parser("status", help="the latest run of every pair")
    add_catalog_option(status)
    listing = commands.add_parser("list", help="the catalog's pairs and their state")
    add_catalog_option(listing)

    clean = commands.add_parser("clean", help="remove results no pair refers to")
    add_catalog_option(clean)
    clean.add_argument("--downloads", action="store_true", help="also unused fetched images")
    clean.add_argument("--features", action="store_true", help="also the feature cache")
    clean.add_argument("--dry-run", action="store_true", help="only say what would go")
    return parser


def add_catalog_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog",
        type=Path,
        default=Path("catalog.yaml"),
        help="the catalog file (default: catalog.yaml)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="downloads, results, features and the run log (default: cache)",
    )


def add_build_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--device",
        default="auto",
        help="auto (every GPU, else CPU), cpu, cuda:N, or a list cuda:0,cuda:1",
    )
    group.add_argument("--precision", default="auto", choices=PRECISIONS)
    group.add_argument("--max-batch", type=int, default=4, help="jobs per batch on a GPU")
    group.add_argument("--offline", action="store_true", help="use only fetched images")
    group.add_argument(
        "--allow-outside",
        action="store_true",
        help="accept local images outside the catalog's folder (../, absolute paths, "
        "symbolic links leading out)",
    )
    group.add_argument("--site-dir", type=Path, default=Path("site"))
    group.add_argument("-q", "--quiet", action="store_true", help="print failures only")


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


def run_check(args: argparse.Namespace) -> int:
    from .catalog import load_catalog

    catalog = load_catalog(args.catalog)
    print(
        f"{args.catalog}: {len(catalog.pairs)} pairs, "
        f"{len(catalog.profiles)} profiles ({', '.join(catalog.profiles) or 'none'}) — OK"
    )
    return 0


def _build_options(args: argparse.Namespace, **changes: Any) -> Any:
    from .build import BuildOptions
    from .sources import FetchSettings

    return BuildOptions(
        catalog=args.catalog,
        cache_dir=args.cache_dir,
        site_dir=args.site_dir,
        device=args.device,
        precision=args.precision,
        max_batch=args.max_batch,
        offline=args.offline,
        fetch=FetchSettings(allow_outside=args.allow_outside),
        **changes,
    )


def _run_build(options: Any, quiet: bool) -> tuple[int, Any]:
    import signal

    from .build import build
    from .report import BuildReport

    # Ctrl-C and SIGTERM stop a build cleanly: finished results are kept. SIGINT is set
    # explicitly because a process started in the background inherits it ignored.
    previous = {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with BuildReport(quiet=quiet) as report:
            summary = build(options, report)
            report.summary(summary)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if summary.interrupted:
        return 130, summary
    return (1 if summary.failed else 0), summary


def run_build(args: argparse.Namespace) -> int:
    options = _build_options(
        args,
        only=tuple(args.only),
        force=args.force,
        profile=args.profile,
        dry_run=args.dry_run,
        render_site=not args.no_site,
        docs_dir=args.docs_dir,
    )
    code, summary = _run_build(options, args.quiet)
    if args.dry_run:
        for outcome in summary.outcomes:
            if outcome.status == "planned":
                print(f"would paint {outcome.pair} ({outcome.key[:12]})")
    return code


def run_rerun(args: argparse.Namespace) -> int:
    import shutil

    extra = param_values_from_args(args)
    options = _build_options(
        args,
        only=(args.pair,),
        force=args.force,
        profile=args.profile,
        extra=extra,
        kind="rerun",
        render_site=False,
    )
    code, summary = _run_build(options, args.quiet)
    for outcome in summary.outcomes:
        if outcome.result is not None:
            if args.output:
                from PIL import Image

                from .stylize import save_image

                save_image(Image.open(outcome.result), args.output)
                shutil.copystat(outcome.result, args.output)
            print(f"{outcome.pair}: {args.output or outcome.result}")
    return code


def _pair_states(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """The catalog (lenient), its run log and each pair's state, for list and status."""
    from .build import cache_paths
    from .catalog import load_catalog
    from .inventory import pair_states
    from .results import ResultStore
    from .runlog import RunLog

    paths = cache_paths(args.cache_dir)
    catalog = load_catalog(args.catalog, strict=False)
    runlog = RunLog(paths["runlog"])
    return catalog, runlog, pair_states(catalog, runlog, ResultStore(paths["results"]))


def run_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    _, runlog, states = _pair_states(args)

    table = Table(title=f"{args.catalog} — latest runs")
    for column in ("pair", "state", "device", "iter.", "secs", "when"):
        table.add_column(column, no_wrap=True)
    table.add_column("note", overflow="fold")
    for state in states:
        r = state.record
        when = time.strftime("%m-%d %H:%M", time.localtime(r.recorded)) if r else ""
        note = (r.error or "").splitlines()[0] if r and r.error else ""
        note = note.removeprefix(f"pair {state.pair!r}: ")
        table.add_row(
            state.pair,
            state.state,
            (r.device or "") if r else "",
            str(r.iterations or "") if r else "",
            f"{r.seconds:.0f}" if r and r.seconds else "",
            when,
            note,
        )
    Console().print(table)
    last = runlog.last_build()
    if last:
        print(
            f"last {last['kind']}: {last['status']}, profile {last['profile'] or 'none'}, "
            + ", ".join(f"{n} {s}" for s, n in last["summary"].items())
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    catalog, _, pair_states = _pair_states(args)
    states = {s.pair: s for s in pair_states}
    for pair in catalog.pairs:
        state = states[pair.id]
        year = f" ({pair.year})" if pair.year else ""
        overrides = f"  overrides: {', '.join(state.overrides)}" if state.overrides else ""
        print(f"{pair.id:32} {state.state:9} {pair.band} — {pair.album}{year}{overrides}")
    for problem in catalog.problems:
        print(f"{problem.pair or '?':32} {'invalid':9} {problem.describe().splitlines()[0]}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from .edit import NewPair, add_pair
    from .nst.params import coerce

    overrides: dict[str, Any] = {}
    for item in args.param_set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ParameterError(item, "--set needs NAME=VALUE", "e.g. --set content_weight=5")
        name = name.strip().replace("-", "_")
        typed = coerce(name, value)
        overrides[name] = (
            [list(v) if isinstance(v, tuple) else v for v in typed]
            if isinstance(typed, tuple)
            else typed
        )
    new = NewPair(
        band=args.band,
        album=args.album,
        photo=args.photo,
        cover=args.cover,
        id=args.id,
        year=args.year,
        tags=tuple(t.strip() for t in args.tags.split(",") if t.strip()),
        notes=args.notes,
        photo_credit=args.photo_credit,
        photo_license=args.photo_license,
        photo_url=args.photo_url,
        cover_credit=args.cover_credit,
        cover_license=args.cover_license,
        cover_url=args.cover_url,
        overrides=overrides,
    )
    pair_id = add_pair(args.catalog, new)
    print(f"added {pair_id} to {args.catalog}; paint it with: covergen build --only {pair_id}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from .catalog import load_catalog
    from .publish import parse_target, plan_publish, publish

    site = load_catalog(args.catalog, strict=False).site if args.catalog.exists() else None
    text = args.target or (site.publish if site else "")
    if not text:
        raise CovergenError(
            "no publish target",
            field="publish",
            hint="give one (git:REMOTE or dir:PATH) or set site.publish in the catalog",
        )
    keep = (
        args.keep_history
        if args.keep_history is not None
        else bool(site and site.publish_keep_history)
    )
    target = parse_target(
        text,
        branch=args.branch or (site.publish_branch if site else "gh-pages"),
        cname=args.cname if args.cname is not None else (site.cname if site else ""),
        keep_history=keep,
        message=args.message,
    )
    if args.dry_run:
        plan = plan_publish(args.site_dir, target, force=args.force)
        for line in plan.lines():
            print(line)
        print(f"would publish: {plan.summary()}")
        return 0
    plan = publish(args.site_dir, target, force=args.force)
    if not plan.has_changes:
        print("nothing to publish: the target is up to date")
    else:
        commit = f" (commit {plan.commit[:12]})" if plan.commit else ""
        print(f"published: {plan.summary()}{commit}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from .catalog import load_catalog
    from .serve import base_path_for, serve

    base_path = args.base_path
    if base_path is None:
        site = load_catalog(args.catalog, strict=False).site if args.catalog.exists() else None
        base_path = base_path_for(site.base_url if site else "")
    serve(
        args.site_dir,
        host=args.host,
        port=args.port,
        base_path=base_path,
        on_ready=lambda url: print(f"serving {url} (Ctrl-C to stop)", flush=True),
    )
    return 0


def run_clean(args: argparse.Namespace) -> int:
    from .catalog import load_catalog
    from .inventory import clean
    from .locks import cache_lock

    catalog = load_catalog(args.catalog, strict=False)
    with cache_lock(args.cache_dir):
        report = clean(
            catalog,
            args.cache_dir,
            downloads=args.downloads,
            features=args.features,
            dry_run=args.dry_run,
        )
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {report.results_removed} results, {report.images_removed} downloads"
        + (", the feature cache" if report.features_removed else "")
        + f" ({report.bytes_freed / 1e6:.1f} MB)"
    )
    return 0


COMMANDS = {
    "stylize": run_stylize,
    "params": run_params,
    "check": run_check,
    "build": run_build,
    "rerun": run_rerun,
    "add": run_add,
    "publish": run_publish,
    "serve": run_serve,
    "status": run_status,
    "list": run_list,
    "clean": run_clean,
}


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
