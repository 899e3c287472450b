"""The `covergen` command: parses arguments, calls one function per command, reports errors.

Engine options are derived from ``StyleParams`` (``covergen.nst.params``), never listed here
by hand. Nothing heavy is imported at start: each command imports what it uses, so commands
that paint nothing never load torch.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .catalog import EXECUTORS, MAX_BYTES, PROFILE_ENV, CatalogError, Problem, load_catalog
from .console import Printer, guarded_output, styled
from .errors import CovergenError
from .files import read_user_file
from .nst.errors import EngineError, ParameterError
from .nst.params import (
    ParamSpec,
    coerce,
    from_mapping,
    param_specs,
    params_markdown,
    params_text,
    parse_assignments,
    resolved_value,
    total_iterations,
)
from .nst.runtime import PRECISIONS
from .outputs import cache_folders, catalog_inputs, check_output
from .report import STATUS_STYLE, BuildReport, quality_text
from .safetext import counted, printable, url_scheme
from .stopping import EXIT_INTERRUPTED, StopSignals

SITE_HELP = "the built site (default: site/ in the catalog's folder)"
OFFLINE_ENV = "COVERGEN_OFFLINE"
EXIT_USAGE = 2
EXIT_INTERNAL = 70
# add's --photo-credit, --photo-license, --photo-url and the same of the cover.
ADD_CREDITS = tuple(
    (role, item) for role in ("photo", "cover") for item in ("credit", "license", "url")
)


# ----------------------------------------------------------------------------- options


def add_param_options(parser: argparse.ArgumentParser) -> None:
    """One --option per engine parameter, plus --set NAME=VALUE."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in param_specs():
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(f"{spec.group} parameters")
        groups[spec.group].add_argument(
            "--" + spec.name.replace("_", "-"),
            dest=f"param_{spec.name}",
            metavar=_metavar(spec),
            help=f"{spec.help} (default: {spec.default_text or 'none'})".replace("%", "%%"),
        )
    add_set_option(parser, "set any parameter by name (repeatable)")


PRECISION_HELP = (
    "auto: tf32 on CUDA; on a CPU bf16 where a short measurement finds it pays, else fp32"
)


def add_set_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--set", dest="param_set", action="append", default=[], metavar="NAME=VALUE", help=text
    )


def _metavar(spec: ParamSpec) -> str:
    if spec.choices:
        return "{" + ",".join(spec.choices) + "}"
    return {
        "bool": "{true,false}",
        "int": "N",
        "float": "X",
        "float_or_auto": "X|auto",
        "int_or_auto": "N|auto",
        "str_list": "A,B",
        "float_list": "X,Y",
        "regions": "L,T,R,B,W;...",
    }.get(spec.kind, "VALUE")


def checked_values(args: argparse.Namespace) -> dict[str, Any]:
    """``param_values``, each checked now: a bad value is a usage error (exit 2) before
    anything runs, not a failed pair."""
    values = param_values(args)
    from_mapping(values)  # raises ParameterError(s) naming the field
    return values


def param_values(args: argparse.Namespace) -> dict[str, Any]:
    """The parameter options and --set values given, as raw name -> text."""
    values: dict[str, Any] = parse_assignments(args.param_set)
    for spec in param_specs():
        value = getattr(args, f"param_{spec.name}", None)
        if value is not None:
            values[spec.name] = value
    return values


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (use 1–65535, 0: any)")
    return port


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option's default shown (where it has one to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"


DESCRIPTION = """\
Paint band photos in the style of their album covers, and publish them as a gallery.

A catalog (catalog.yaml) lists pairs of a photo and a cover; `covergen build` paints what is
new or changed and renders the gallery into site/.
"""
GETTING_STARTED = """\
getting started:
  covergen init my-gallery      a new gallery folder, with one example pair
  cd my-gallery
  covergen build                paint it and render site/ (draft on a CPU)
  covergen serve                preview at http://127.0.0.1:8000/
  covergen add --band NAME --album TITLE --photo photos/x.jpg --cover covers/y.jpg

`covergen COMMAND --help` shows each command's options and examples.
"""
# Each command's description (default: its one-line help) and examples, shown by
# `covergen COMMAND --help`.
COMMAND_HELP: dict[str, tuple[str, str]] = {
    "init": ("", "examples:\n  covergen init my-gallery\n  covergen init .   (here)"),
    "stylize": (
        "Paint PHOTO in the style of COVER (several covers are blended).",
        "examples:\n  covergen stylize band.jpg cover.png -o painted.png\n"
        "  covergen stylize band.jpg cover.png -o painted.png --method arbitrary --size 1024\n"
        "  covergen stylize band.jpg a.png b.png --style-blend 0.7,0.3 -o blend.png",
    ),
    "check": (
        "Validate the catalog: every problem at once, with its line, pair, field and a hint; "
        "every local image must exist.",
        "examples:\n  covergen check\n  covergen check --catalog band/catalog.yaml",
    ),
    "build": (
        "Paint the pairs that are new or changed (the others are reused from the cache) and "
        "render the gallery into site/. With no profile named: draft on a CPU, final on an "
        "NVIDIA GPU. Ctrl-C keeps what is finished; the next build resumes.",
        "examples:\n  covergen build\n  covergen build --dry-run          what would be painted, "
        "and how long\n  covergen build --profile preview  every pair in seconds (a network)\n"
        "  covergen build --only my-band-my-album --set content_weight=4",
    ),
    "rerun": (
        "Paint one pair again with other values, the catalog untouched (or, with --keep, "
        "the values written into the pair's overrides). The gallery shows the build's "
        "painting until the next build.",
        "examples:\n  covergen rerun my-band-my-album --set content_weight=5\n"
        "  covergen rerun my-band-my-album --set content_weight=5 --keep\n"
        "  covergen rerun my-band-my-album -o .   (copies it here as my-band-my-album.png)",
    ),
    "sweep": (
        "",
        "examples:\n  covergen sweep my-band-my-album --set content_weight=1,2,4,8\n"
        "  covergen sweep --set method=gatys,arbitrary -o methods.jpg",
    ),
    "status": (
        "The latest run of every pair (a build or a rerun): its state, device, time, "
        "the quality numbers and why it failed; then the last build and this machine's "
        "precision.",
        "example:\n  covergen status",
    ),
    "list": ("The catalog's pairs, their state and overrides.", "example:\n  covergen list"),
    "clean": (
        "Remove results no pair refers to (and, asked, unused downloads and the feature "
        "cache). What a pair the catalog cannot read right now built is kept.",
        "examples:\n  covergen clean --dry-run\n  covergen clean --downloads",
    ),
    "add": (
        "",
        "examples:\n  covergen add --band Wire --album 'Pink Flag' --photo photos/wire.jpg "
        "--cover covers/pinkflag.jpg --photo-credit 'A. Person' --cover-credit 'Harvest'\n"
        "  covergen add --band Wire --album 'Chairs Missing' --photo ~/Downloads/w.jpg "
        "--cover ~/Downloads/c.jpg --copy",
    ),
    "publish": (
        "",
        "examples:\n  covergen publish git:git@github.com:me/gallery.git\n"
        "  covergen publish dir:/var/www/gallery --dry-run",
    ),
    "serve": ("", "example:\n  covergen serve --port 8080"),
    "score": ("", "example:\n  covergen score photo.jpg cover.png painted.png other.png"),
    "params": ("", "examples:\n  covergen params\n  covergen params --markdown"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covergen",
        description=DESCRIPTION,
        epilog=GETTING_STARTED,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"covergen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        text, examples = COMMAND_HELP.get(name, ("", ""))
        return commands.add_parser(
            name,
            help=help,
            description=textwrap.fill(text, 88) if text else description or help,
            epilog=examples or None,
            formatter_class=_HelpFormatter,
        )

    init = command(
        "init",
        "start a new gallery folder: a commented catalog with one example pair",
        # Kept as written, on one line (the others are wrapped).
        "Make FOLDER a new gallery: catalog.yaml (commented, one example pair with its photo "
        "and cover), photos/, covers/, a Makefile and a .gitignore. Nothing is overwritten.",
    )
    init.add_argument("folder", type=Path, nargs="?", default=Path("."), help="(default: .)")

    stylize = command("stylize", "paint one photo in the style of one or more covers")
    stylize.add_argument("photo", type=Path)
    stylize.add_argument("covers", type=Path, nargs="+", metavar="cover")
    stylize.add_argument(
        "-o", "--output", type=Path, required=True, help="result (.png/.jpg/.webp)"
    )
    stylize.add_argument(
        "--content-map", type=Path, help="greyscale image: per-pixel content weight"
    )
    stylize.add_argument("--init-image", type=Path, help="starting image for --init image")
    add_runtime_options(stylize, build=False)
    stylize.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    add_param_options(stylize)

    params = command("params", "list the engine parameters and their defaults")
    params.add_argument("--markdown", action="store_true", help="as the docs' Markdown table")

    check = command("check", "validate the catalog and report every problem")
    add_catalog_option(check, cache=False)
    check.add_argument(
        "--allow-outside",
        action="store_true",
        help="accept local images outside the catalog's folder, as a build with it does",
    )

    build = command("build", "paint new and changed pairs, render the site")
    add_catalog_option(build)
    build.add_argument("--only", nargs="+", metavar="ID", default=[], help="just these pairs")
    build.add_argument("--force", action="store_true", help="repaint even if a result exists")
    add_profile_option(build)
    build.add_argument(
        "--dry-run", action="store_true", help="show the plan; write, fetch and paint nothing"
    )
    build.add_argument("--no-site", action="store_true", help="do not render the site")
    add_set_option(
        build,
        "a parameter for every pair of this build, over the catalog's values (repeatable; "
        "never written to the catalog)",
    )
    build.add_argument(
        "--docs-dir", type=Path, help="a built user guide (mkdocs) to publish under site/docs/"
    )
    add_runtime_options(build)

    rerun = command(
        "rerun",
        "repaint one pair, trying parameters without editing the catalog (e.g. --set "
        "content_weight=5)",
    )
    add_catalog_option(rerun)
    rerun.add_argument("pair", metavar="ID")
    add_profile_option(rerun)
    rerun.add_argument("--force", action="store_true", help="repaint even if a result exists")
    rerun.add_argument(
        "-o",
        "--output",
        type=Path,
        help="also copy the painting here (a folder: as PAIR.png in it)",
    )
    rerun.add_argument(
        "--keep",
        action="store_true",
        help="write the --set values into the pair's overrides in the catalog (after a "
        "successful rerun), so the next build paints with them",
    )
    add_runtime_options(rerun)
    add_param_options(rerun)

    sweep = command(
        "sweep",
        "paint pairs with several values of parameters and write a contact sheet "
        "with each variant's quality numbers (e.g. ID --set content_weight=1,2,4,8)",
    )
    add_catalog_option(sweep)
    sweep.add_argument(
        "pairs", metavar="ID", nargs="*", help="the pairs, one row each (default: every pair)"
    )
    add_profile_option(sweep)
    sweep.add_argument(
        "-o",
        "--output",
        type=Path,
        help="the sheet (default: cache/sweeps/ID.jpg, or pairs.jpg for several)",
    )
    sweep.add_argument(
        "--tile", type=int, default=320, help="pixels per picture on the sheet (default: 320)"
    )
    add_runtime_options(sweep)
    add_set_option(
        sweep,
        "a parameter and its values, NAME=V1,V2,... (repeatable: every combination is "
        "painted; none: as the catalog says)",
    )

    score = command(
        "score", "judge any image: how much of the photo it keeps, how much of the cover it takes"
    )
    score.add_argument("photo", type=Path)
    score.add_argument("cover", type=Path)
    score.add_argument("result", type=Path, nargs="+")
    score.add_argument("--device", default="auto", help="auto, cpu, cuda:N or mps")

    add = command(
        "add", "append a validated pair to the catalog, keeping its comments and formatting"
    )
    add_catalog_option(add, cache=False)
    add.add_argument("--band", required=True)
    add.add_argument("--album", required=True)
    for role in ("photo", "cover"):
        add.add_argument(
            f"--{role}",
            required=True,
            help="a path from this folder (as your shell completes it), or a URL",
        )
    add.add_argument(
        "--copy",
        action="store_true",
        help="copy local images into the catalog's folder (photos/, covers/) first",
    )
    add.add_argument("--id", help="slug (default: from band and album)")
    add.add_argument("--year", type=int)
    add.add_argument("--tags", default="", help="comma-separated")
    add.add_argument("--notes", default="")
    for role, item in ADD_CREDITS:
        add.add_argument(f"--{role}-{item}", default="", help=f"the {role}'s {item}")
    add_set_option(add, "a parameter override for this pair (repeatable)")

    publish = command(
        "publish",
        "send the built site to a git branch or a directory (target from the catalog's "
        "site.publish)",
    )
    add_catalog_option(publish, cache=False)
    publish.add_argument("target", nargs="?", help="git:REMOTE, dir:PATH, or a URL or path")
    publish.add_argument("--site-dir", type=Path, help=SITE_HELP)
    publish.add_argument("--branch", help="git branch (default: site.publish_branch)")
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

    serve = command(
        "serve", "preview the site locally, under the same base path as the published one"
    )
    add_catalog_option(serve)
    serve.add_argument("--site-dir", type=Path, help=SITE_HELP)
    serve.add_argument(
        "--watch",
        action="store_true",
        help="render the site again (not the paintings) when the catalog or its templates/ "
        "change, and reload the pages open in the browser",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8000)
    serve.add_argument("--base-path", help="default: the path of site.base_url")

    add_catalog_option(command("status", "the latest run of every pair"))
    add_catalog_option(command("list", "the catalog's pairs and their state"))

    clean = command("clean", "remove results no pair refers to")
    add_catalog_option(clean)
    clean.add_argument("--downloads", action="store_true", help="also unused fetched images")
    clean.add_argument("--features", action="store_true", help="also the feature cache")
    clean.add_argument("--dry-run", action="store_true", help="only say what would go")
    return parser


def add_catalog_option(parser: argparse.ArgumentParser, *, cache: bool = True) -> None:
    parser.add_argument(
        "--catalog",
        type=Path,
        default=Path("catalog.yaml"),
        help="the catalog file (default: catalog.yaml)",
    )
    if cache:
        parser.add_argument(
            "--cache-dir",
            type=Path,
            help="downloads, results, features and the run log (default: cache/ in the "
            "catalog's folder)",
        )


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        help=f"parameter profile from the catalog (or ${PROFILE_ENV}; "
        "default: draft on CPU, final on GPU)",
    )


def add_runtime_options(parser: argparse.ArgumentParser, *, build: bool = True) -> None:
    """Where and how to paint: a build's options (build, rerun, sweep) or `stylize`'s."""
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--device",
        default="auto",
        help="auto (every GPU, else CPU), cpu, cuda:N, or a list cuda:0,cuda:1"
        if build
        else "auto, cpu, cuda, cuda:N or mps",
    )
    group.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    if build:
        group.add_argument(
            "--max-batch", type=positive, default=4, help="jobs per batch on a GPU (default: 4)"
        )
    else:
        group.add_argument(
            "--cache-dir",
            type=Path,
            help="converted weights, features and trained networks (default: covergen's folder "
            "in the user's cache, e.g. ~/.cache/covergen)",
        )
        group.add_argument(
            "--weights-file", type=Path, help="VGG weights file to use instead of the packaged ones"
        )
    what = "nothing: images and weights from the cache only" if build else "no weights"
    group.add_argument(
        "--offline",
        action="store_true",
        default=env_flag(OFFLINE_ENV),
        help=f"download {what} (or ${OFFLINE_ENV}=1)",
    )
    if not build:
        return
    group.add_argument(
        "--allow-outside",
        action="store_true",
        help="accept local images outside the catalog's folder (../, absolute paths, "
        "symbolic links leading out)",
    )
    group.add_argument("--site-dir", type=Path, help=SITE_HELP)
    group.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    # Where the jobs run (docs/cluster.md): the catalog's `build:` settings unless given.
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="local (threads here; the default unless the catalog's build.executor says "
        "otherwise), process (a worker process per device) or ray (a Ray cluster: "
        "pip install 'covergen[ray]')",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster to join (its head's host:6379, or auto); default: the "
        "catalog's build.ray_address, else a Ray instance started on this machine",
    )


# ----------------------------------------------------------------------------- commands


def run_stylize(args: argparse.Namespace) -> int:
    from .nst import Engine, Runtime, device_kind
    from .precision import resolve_precision
    from .store.features import FeatureCache
    from .stylize import stylize_files

    params = from_mapping(param_values(args))
    precision = resolve_precision(args.precision, device_kind(args.device))
    engine = Engine(
        Runtime(device=args.device, precision=precision),
        cache_dir=args.cache_dir,
        # Features, face boxes and the fast method's cover networks, kept between runs.
        target_cache=FeatureCache(args.cache_dir / "features"),
        weights_file=args.weights_file,
        offline=args.offline,
    )
    label = args.photo.name
    with BuildReport(quiet=args.quiet) as report:
        report.paint_started(str(engine.device), label, total_iterations(params))
        result = stylize_files(
            args.photo,
            args.covers,
            args.output,
            params,
            engine,
            content_map=args.content_map,
            init_image=args.init_image,
            extra_inputs=[(args.weights_file, "the weights file")],
            protected=managed_folders(args),
            progress=lambda event: report.paint_progress(str(engine.device), label, event),
        )
    if not args.quiet:
        Printer().line(
            f"wrote {args.output} ({result.image.width}×{result.image.height}, "
            f"{result.iterations} iterations, {result.seconds:.1f} s on {result.device}, "
            f"loss {result.losses.total:.4g})"
        )
    return 0


def run_params(args: argparse.Namespace) -> int:
    sys.stdout.write(params_markdown() if args.markdown else params_text())
    return 0


def run_check(args: argparse.Namespace) -> int:
    from .sources import Where, missing_local

    catalog = load_catalog(args.catalog)

    @functools.cache
    def missing(src: str) -> CovergenError | None:
        try:
            missing_local(src, catalog.root, args.allow_outside, Where(src, None, ""))
        except CovergenError as exc:
            return exc
        return None

    # The local images must be there (a build would fail those pairs); each path once.
    problems: list[Problem] = []
    for pair in catalog.pairs:
        for role, image in (("photo", pair.photo), ("cover", pair.cover)):
            error = None if url_scheme(image.src) else missing(image.src)
            if error is not None:
                message = error.message.removeprefix(f"{image.src}: ")
                problems.append(Problem(message, f"{role}.src", pair.id, pair.line, error.hint))
    if problems:
        raise CatalogError(args.catalog, problems)
    names = [name + ("" if name in catalog.profiles else " (built in)")
             for name in catalog.all_profiles]  # fmt: skip
    Printer().line(
        f"{args.catalog}: {counted(len(catalog.pairs), 'pair')}, profiles {', '.join(names)}; "
        "every local image found — OK"
    )
    return 0


def build_options(args: argparse.Namespace, **changes: Any) -> Any:
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
        executor=args.executor,
        ray_address=args.ray_address,
        **changes,
    )


def managed_folders(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """The folders covergen manages for a command, where no result may be written."""
    folders = [(folder, "the cache") for folder in cache_folders(args.cache_dir)]
    if getattr(args, "site_dir", None) is not None:
        folders.append((args.site_dir, "the site"))
    return folders


def resolve_paths(args: argparse.Namespace) -> None:
    """One meaning for paths: the cache and the site live in the catalog's folder unless
    given (so a command run from another folder finds what a build there made); `stylize`,
    which has no catalog, keeps its cache in the user's cache folder."""
    catalog = getattr(args, "catalog", None)
    if getattr(args, "cache_dir", "absent") is None:
        if catalog is None:
            from .precision import user_cache_dir

            args.cache_dir = user_cache_dir()
        else:
            args.cache_dir = catalog.parent / "cache"
    if catalog is not None and getattr(args, "site_dir", "absent") is None:
        args.site_dir = catalog.parent / "site"


def run_with_report(options: Any, quiet: bool) -> tuple[int, Any]:
    """Run a build with its display; Ctrl-C and SIGTERM stop it cleanly (``StopSignals``)."""
    from .build import build

    stop = threading.Event()
    with StopSignals(stop), BuildReport(quiet=quiet) as report:
        summary = build(options, report, stop=stop)
        report.summary(summary)
    if summary.interrupted:
        return EXIT_INTERRUPTED, summary
    return (1 if summary.failed else 0), summary


def run_build(args: argparse.Namespace) -> int:
    options = build_options(
        args,
        only=tuple(args.only),
        force=args.force,
        profile=args.profile,
        dry_run=args.dry_run,
        render_site=not args.no_site,
        docs_dir=args.docs_dir,
        extra=checked_values(args),
    )
    code, summary = run_with_report(options, args.quiet)
    if args.dry_run:
        printer = Printer()
        for outcome in summary.outcomes:
            if outcome.status == "planned" and outcome.key is None:
                printer.line(f"would download and paint {outcome.pair} ({outcome.error})")
            elif outcome.status == "planned":
                printer.line(f"would paint {outcome.pair} ({outcome.key[:12]})")
    return code


def run_rerun(args: argparse.Namespace) -> int:
    from .stylize import export_result

    extra = checked_values(args)  # a bad --set is a usage error, before anything runs
    if args.keep and not extra:
        raise CovergenError(
            "--keep writes the --set values into the catalog, and none were given",
            field="keep",
            hint="e.g. covergen rerun PAIR --set content_weight=5 --keep",
        )
    output = args.output
    if output is not None and output.is_dir():
        output = output / f"{args.pair}.png"  # named after the pair
    if output is not None:
        catalog = load_catalog(args.catalog, strict=False)
        check_output(output, catalog_inputs(catalog), protected=managed_folders(args))
    options = build_options(
        args,
        only=(args.pair,),
        force=args.force,
        profile=args.profile,
        extra=extra,
        kind="rerun",
        render_site=False,
    )
    code, summary = run_with_report(options, args.quiet)
    printer = Printer()
    for outcome in summary.outcomes:
        if outcome.result is None:
            continue
        quality = quality_text(outcome.metrics)
        printer.line(
            f"{outcome.pair}: {outcome.status}" + (f" ({quality})" if quality else "")
            + f"; the painting: {outcome.result}"
        )  # fmt: skip
        if output is not None:
            # Checked again just before writing: the path may lead elsewhere by now.
            catalog = load_catalog(args.catalog, strict=False)
            check_output(output, catalog_inputs(catalog), protected=managed_folders(args))
            export_result(outcome.result, output)
            printer.line(f"copied to {output}")
    if args.keep and code == 0:
        from .catalog.edit import keep_overrides

        keep_overrides(args.catalog, args.pair, {n: coerce(n, v) for n, v in extra.items()})
        values = ", ".join(f"{name}={value}" for name, value in extra.items())
        printer.line(
            f"kept {values} in {args.pair}'s overrides in {args.catalog}; "
            "the next build paints with them"
        )
    elif args.keep:
        printer.line("not kept: the rerun did not finish (the catalog is unchanged)")
    return code


def run_sweep(args: argparse.Namespace) -> int:
    from .sweep import parse_variants, sweep

    if not 64 <= args.tile <= 2048:
        raise CovergenError(
            f"a tile of {args.tile} pixels", field="tile", hint="use 64 to 2048 (default 320)"
        )
    variants = parse_variants(args.param_set)
    options = build_options(args, profile=args.profile, render_site=False)
    stop = threading.Event()
    with StopSignals(stop), BuildReport(quiet=args.quiet) as report:
        result = sweep(options, args.pairs, variants, args.output, report, args.tile, stop)
    if result.interrupted:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    Printer().line(
        f"wrote {result.sheet}: {counted(result.jobs, 'image')} ({result.painted} painted "
        f"now, {result.jobs - result.painted - result.failed} from the cache, "
        f"{result.failed} failed)"
    )
    return 1 if result.failed else 0


def run_score(args: argparse.Namespace) -> int:
    from .nst import quality
    from .nst.runtime import resolve_devices
    from .stylize import open_image

    photo = open_image(args.photo, "photo")
    cover = open_image(args.cover, "cover")
    results = [open_image(path, "result") for path in args.result]
    judge = quality.QualityJudge(resolve_devices(args.device)[0])
    scores = judge.score_many(photo, cover, results)

    def number(value: float) -> str:
        return "n/a" if value != value else f"{value:.3f}"  # NaN: photo and cover too alike

    columns = ("content_kept", "style_taken", "style_texture", "style_colour")
    Printer().table(
        ["result", "content kept", "style taken", "(texture", "colour)"],
        [
            [str(path), *(number(getattr(s, c)) for c in columns)]
            for path, s in zip(args.result, scores, strict=True)
        ],
    )
    return 0


def run_status(args: argparse.Namespace) -> int:
    import time

    from .pairstates import load_states
    from .precision import recorded_cpu_precision

    catalog = load_catalog(args.catalog, strict=False)
    runlog, states = load_states(catalog, args.cache_dir)
    latest = runlog.latest(None)  # builds and reruns alike: the latest run of each pair
    rows = []
    for state in states:
        r, metrics, shown = state.record, state.metrics, state.shown or state.record
        label = state.state + (" (shows older)" if state.stale else "")
        newer = latest.get(state.id)
        if newer is not None and newer.kind != "build" and (r is None or newer.build > r.build):
            # A rerun since the build: its figures; the gallery shows the build's painting.
            r = shown = newer
            metrics, label = newer.metrics, f"{newer.kind}: {newer.status}"
        when = time.strftime("%m-%d %H:%M", time.localtime(r.recorded)) if r else ""
        rows.append(
            [
                state.id,
                styled(label, STATUS_STYLE.get(r.status if r else state.state, "")),
                (r.device or "") if r else "",
                str(r.iterations or "") if r else "",
                f"{r.seconds:.0f}" if r and r.seconds else "",
                _weight(shown, metrics),
                _score(metrics.get("content_kept")),
                _score(metrics.get("style_taken")),
                when,
                state.note,
            ]
        )
    printer = Printer()
    printer.table(
        ["pair", "state", "device", "iter.", "secs", "weight", "content", "style", "when", "note"],
        rows,
        title=f"{args.catalog} — latest runs",
        wrap=["note"],
    )
    last = runlog.last_build()
    if last:
        precision = f", precision {last['precision']}" if last["precision"] else ""
        printer.line(
            f"last {last['kind']}: {last['status']}, profile {last['profile'] or 'none'}"
            f"{precision}, " + ", ".join(f"{n} {s}" for s, n in last["summary"].items())
        )
    record = recorded_cpu_precision()
    printer.line(
        f"precision auto on this machine's CPU: {record.describe()}"
        if record
        else "precision auto on this machine's CPU: not measured yet (the next build measures it)"
    )
    return 0


def _score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else ""


def _weight(record: Any, metrics: Any) -> str:
    """The content weight of a run (the painting shown, or the latest run): ``auto → 4``."""
    if record is None or "content_weight" not in record.params:
        return ""
    return resolved_value("content_weight", record.params["content_weight"], metrics)


def _quality(state: Any) -> str:
    """``content 0.38 · style 0.40, auto → 2`` for a pair with a scored painting."""
    from .outcome import Metrics

    scores = Metrics.of(state.metrics).summary()
    if not scores:
        return ""
    weight = _weight(state.shown or state.record, state.metrics)
    return scores + (f", weight {weight}" if weight.startswith("auto") else "")


def run_list(args: argparse.Namespace) -> int:
    from .pairstates import load_states

    catalog = load_catalog(args.catalog, strict=False)
    _, states = load_states(catalog, args.cache_dir)
    printer = Printer()
    for state in states:
        if state.pair is None:
            printer.line(f"{state.id:32} {'invalid':9} {state.note}")
            continue
        pair = state.pair
        year = f" ({pair.year})" if pair.year else ""
        overrides = f"  overrides: {', '.join(state.overrides)}" if state.overrides else ""
        quality = f"  ({_quality(state)})" if _quality(state) else ""
        printer.line(f"{pair.id:32} {state.state:9} {pair.title}{year}{overrides}{quality}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    import shutil

    from .catalog.edit import NewPair, add_pair, place_image

    overrides = {
        name: coerce(name, value) for name, value in parse_assignments(args.param_set).items()
    }
    root = args.catalog.resolve().parent
    if root.is_dir() and not os.access(root, os.W_OK):
        # Said first: nothing else about the pair matters while it cannot be written.
        raise CovergenError(
            f"cannot write the catalog's folder {root} (permission denied)",
            field="catalog",
            hint="add pairs to a catalog in a folder you may write to",
        )
    if args.catalog.exists():  # a FIFO or a device named as the catalog: refused unread
        read_user_file(args.catalog, limit=MAX_BYTES, field="catalog", what="catalog file")
    photo = place_image(args.photo, args.catalog, "photo", copy=args.copy)
    cover = place_image(args.cover, args.catalog, "cover", copy=args.copy)
    new = NewPair(
        band=args.band,
        album=args.album,
        photo=photo.src,
        cover=cover.src,
        id=args.id,
        year=args.year,
        tags=tuple(t.strip() for t in args.tags.split(",") if t.strip()),
        notes=args.notes,
        **{f"{role}_{item}": getattr(args, f"{role}_{item}") for role, item in ADD_CREDITS},
        overrides=overrides,
    )
    copied: list[Path] = []
    made: list[Path] = []
    try:
        for placed in (photo, cover):
            if placed.copy_from is not None and not (root / placed.src).exists():
                folder = (root / placed.src).parent
                if not folder.exists():
                    folder.mkdir(parents=True)
                    made.append(folder)
                shutil.copy2(placed.copy_from, root / placed.src)
                copied.append(root / placed.src)
        pair_id = add_pair(args.catalog, new)
    except BaseException:
        for path in copied:  # nothing of a refused pair stays behind
            path.unlink(missing_ok=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    printer = Printer()
    printer.line(
        f"added {pair_id} to {args.catalog}; paint it with: covergen build --only {pair_id}"
    )
    for role, credit in (("photo", args.photo_credit), ("cover", args.cover_credit)):
        if not credit.strip():
            printer.line(
                styled(
                    f"note: no credit for the {role}: its page will say 'Credit unknown'. "
                    f"Add one with --{role}-credit NAME (and --{role}-license, --{role}-url) "
                    "in a new add, or in the catalog; album art and photographs belong to "
                    "their makers (see the FAQ on rights)",
                    "yellow",
                )
            )
    return 0


def _catalog_files(catalog: Path) -> list[tuple[Path, str]]:
    """What a publish may never remove: the catalog, its cache and the images it names."""
    files = [(catalog, "the catalog"), (catalog.parent / "cache", "the cache")]
    if catalog.is_file():
        with contextlib.suppress(CovergenError):
            files += catalog_inputs(load_catalog(catalog, strict=False))
    return files


def _site_settings(catalog: Path) -> Any:
    return load_catalog(catalog, strict=False).site if catalog.exists() else None


def run_publish(args: argparse.Namespace) -> int:
    from .publish import publish, target_from_settings

    target = target_from_settings(
        args.target,
        _site_settings(args.catalog),
        branch=args.branch,
        cname=args.cname,
        keep_history=args.keep_history,
        message=args.message,
    )
    printer = Printer()
    # Ctrl-C or SIGTERM raises KeyboardInterrupt (exit 130, "interrupted"), so the snapshot,
    # the temporary repository and half-written files are removed on the way out.
    protected = _catalog_files(args.catalog)
    with StopSignals():
        plan = publish(
            args.site_dir, target, force=args.force, protected=protected, dry_run=args.dry_run
        )
    if args.dry_run:
        for line in plan.lines():
            printer.line(line)
        printer.line(f"would publish to {target.describe()}: {plan.summary()}")
        return 0
    if not plan.has_changes:
        printer.line("nothing to publish: the target is up to date")
    else:
        commit = f" (commit {plan.commit[:12]})" if plan.commit else ""
        printer.line(f"published to {target.describe()}: {plan.summary()}{commit}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from .serve import base_path_for, serve

    base_path = args.base_path
    if base_path is None:
        site = _site_settings(args.catalog)
        base_path = base_path_for(site.base_url if site else "")
    printer = Printer()
    watch = None
    if args.watch:
        from .build import BuildOptions, render_only
        from .serve import Watch

        options = BuildOptions(
            catalog=args.catalog, cache_dir=args.cache_dir, site_dir=args.site_dir
        )
        watch = Watch(
            [args.catalog, args.catalog.parent / "templates"],
            lambda: f"rebuilt: {render_only(options).describe()}",
            printer.line,
        )
    # Ctrl-C or SIGTERM ends the preview, also when started in the background (which
    # inherits SIGINT ignored: Python then never raises KeyboardInterrupt by itself).
    with StopSignals():
        serve(
            args.site_dir,
            host=args.host,
            port=args.port,
            base_path=base_path,
            on_ready=lambda url: printer.line(
                f"serving {url} (Ctrl-C to stop)"
                + ("; watching the catalog and templates/" if watch else "")
            ),
            watch=watch,
        )
    return 0


def run_clean(args: argparse.Namespace) -> int:
    from .clean import clean

    catalog = load_catalog(args.catalog, strict=False)
    report = clean(
        catalog,
        args.cache_dir,
        downloads=args.downloads,
        features=args.features,
        dry_run=args.dry_run,
    )
    verb = "would remove" if args.dry_run else "removed"
    printer = Printer()
    printer.line(
        f"{verb} {report.results_removed} results, {report.images_removed} downloads, "
        f"{report.derived_removed} sets of site images"
        + (", the feature cache" if report.features_removed else "")
        + f" ({report.bytes_freed / 1e6:.1f} MB)"
    )
    if report.kept_unlisted:
        printer.line(
            f"kept everything of {counted(report.kept_unlisted, 'pair')} the catalog does not "
            "list: it has a pair it cannot read, which may be one of them under another id "
            "(`covergen check` shows it; clean again once it is fixed)"
        )
    return 0


def run_init(args: argparse.Namespace) -> int:
    from .starter import create_gallery

    written = create_gallery(args.folder)
    printer = Printer()
    for path in written:
        printer.line(f"  wrote {path}")
    here = args.folder.resolve() == Path.cwd().resolve()
    printer.line("\na new gallery, with one example pair. Next:")
    if not here:
        printer.line(f"  cd {args.folder}")
    printer.line("  covergen build     # paints the example (about half a minute on a CPU)")
    printer.line("  covergen serve     # opens the gallery at http://127.0.0.1:8000/")
    printer.line(
        "  covergen add --band NAME --album TITLE --photo photos/x.jpg --cover covers/y.jpg"
    )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": run_init,
    "stylize": run_stylize,
    "params": run_params,
    "check": run_check,
    "build": run_build,
    "rerun": run_rerun,
    "sweep": run_sweep,
    "score": run_score,
    "add": run_add,
    "publish": run_publish,
    "serve": run_serve,
    "status": run_status,
    "list": run_list,
    "clean": run_clean,
}


# ----------------------------------------------------------------------------- errors


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status and never lets a traceback out (but with
    --debug): 0 done, 1 some pairs failed, 2 bad input, 130 interrupted, 70 a bug."""
    with guarded_output() as guard:
        code, command = _main(argv)
        failure = guard.stdout.failure
        if failure is not None and command not in _WORKING_COMMANDS:
            # What a printing command prints is its product: an incomplete one is an error.
            if not guard.stderr.lost:
                sys.stderr.write(
                    f"covergen: error: the output could not be written "
                    f"({failure.strerror or failure}); it is incomplete\n"
                )
            return EXIT_USAGE
        if guard.stdout.lost and not guard.stderr.lost and command in _WORKING_COMMANDS:
            # Said once, at the end: the output went away, the work did not stop.
            why = f" ({failure.strerror})" if failure is not None and failure.strerror else ""
            sys.stderr.write(
                f"covergen: the output was cut before the end{why}; the command went on and "
                "finished (`covergen status` shows the outcome)\n"
            )
    return code


# Commands that do work whose outcome outlives their output (the others only print).
_WORKING_COMMANDS = ("build", "rerun", "sweep", "stylize", "publish", "add", "clean", "init")


def _main(argv: Sequence[str] | None) -> tuple[int, str]:
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words
    command = ""
    try:
        _refuse_unknown_command(words)
        args = build_parser().parse_args(argv)
        command = args.command
        resolve_paths(args)
        return COMMANDS[args.command](args), command
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback either
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED, command
    except (CovergenError, EngineError) as exc:
        if debug:
            raise
        _complain(describe(exc))
        return EXIT_USAGE, command
    except OSError as exc:  # the machine said no: a permission, a full disk, a missing folder
        if debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        _complain(
            f"{exc.strerror or exc}{where}\n"
            "  → check that path: it must exist, be yours to read or write, on a disk with space"
        )
        return EXIT_USAGE, command
    except Exception as exc:
        if _caused_by_interrupt(exc):  # Ctrl-C inside an import is re-raised wrapped
            sys.stderr.write("interrupted\n")
            return EXIT_INTERRUPTED, command
        if debug:
            raise
        _complain(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "  → this is a bug in covergen: run again with --debug for the details and "
            "report it"
        )
        return EXIT_INTERNAL, command


# Words people type for a command, and the command they mean.
_MEANT = {
    "paint": "build", "run": "build", "make": "build", "render": "build",
    "new": "init", "create": "init", "start": "init", "preview": "serve",
    "deploy": "publish", "upload": "publish", "ls": "list", "show": "status",
    "validate": "check", "lint": "check", "remove": "clean", "gc": "clean",
}  # fmt: skip


def _refuse_unknown_command(words: Sequence[str]) -> None:
    """A mistyped command gets a suggestion (argparse lists every choice instead)."""
    import difflib

    first = next((w for w in words if not w.startswith("-")), None)
    if first is None or first in COMMANDS:
        return
    close = [_MEANT[first]] if first in _MEANT else difflib.get_close_matches(first, COMMANDS, n=1)
    raise CovergenError(
        f"there is no command {first!r}",
        field="command",
        hint=(f"did you mean {close[0]!r}? " if close else "")
        + "`covergen --help` lists the commands",
    )


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _complain(text: str) -> None:
    sys.stderr.write(f"covergen: error: {printable(text)}\n")


def describe(exc: Exception) -> str:
    """A message for the user from one of our errors."""
    if isinstance(exc, CovergenError):
        return exc.describe()
    errors = getattr(exc, "errors", None) or [exc]
    return "\n".join(e.describe() if isinstance(e, ParameterError) else str(e) for e in errors)


if __name__ == "__main__":
    sys.exit(main())
