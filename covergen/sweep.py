"""`covergen sweep`: pairs painted with several values of parameters, on one contact sheet.

The way to choose by eye: ``covergen sweep PAIR --set content_weight=1,2,4,8`` paints each
variant (cached like every result, batched where shapes match), then writes a contact sheet —
photo, cover, and each variant with its values and its two quality numbers under it — so the
user picks one and keeps it with `rerun --set` or an override in the catalog. Several pairs
(or none named: every pair) give one row each; without ``--set`` each pair is painted as the
catalog says, which is how the docs' sheets of the sample and hard pairs are made.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CovergenError
from .nst.errors import ParameterError
from .nst.params import AUTO, StyleParams, format_value, parse_assignments, resolved_value, spec
from .outcome import Metrics

SCALAR_KINDS = ("bool", "int", "float", "float_or_auto", "int_or_auto", "str")
# Variants per row before the sheet wraps a pair onto a second row; pixels per picture.
ROW_VARIANTS = 6
TILE = 320


@dataclass(frozen=True)
class SweepReport:
    sheet: Path
    jobs: int  # variants times pairs
    painted: int  # the others were already in the cache
    failed: int
    interrupted: bool = False  # stopped before the end: no sheet was written


def parse_variants(items: Sequence[str]) -> list[dict[str, str]]:
    """``--set`` texts as the variants to paint: every combination of the values given.

    ``NAME=V1,V2`` lists values of a one-value parameter; a parameter that takes a list
    (style_layers…) gets one ``--set`` per value instead, as commas are its own. No ``--set``:
    no variants, each pair painted as the catalog says.
    """
    values: dict[str, list[str]] = {}
    for item in items:
        ((name, text),) = parse_assignments([item]).items()
        kind = spec(name).kind
        parts = [p.strip() for p in text.split(",")] if kind in SCALAR_KINDS else [text]
        if not all(parts):
            raise CovergenError(
                f"{item!r} has an empty value", field=name, hint="e.g. content_weight=1,2,4,8"
            )
        for part in parts:  # each value checked now, not once per pair while painting
            try:
                StyleParams().replace(**{name: part})
            except ParameterError as exc:
                first = getattr(exc, "errors", [exc])[0]
                raise CovergenError(first.message, field=name, hint=first.hint) from None
        values.setdefault(name, []).extend(parts)
    if not values:
        return []  # each pair as the catalog says
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def sweep(options: Any, pairs: Sequence[str], variants: Sequence[Mapping[str, str]],
          out: Path | None, events: Any = None, tile: int = TILE,
          stop: threading.Event | None = None) -> SweepReport:  # fmt: skip
    """Paint every variant of ``pairs`` (none: every pair; ``options`` a BuildOptions) and
    write their sheet: a row per pair, photo and cover first. A pair that cannot be painted
    fails alone; its row is left out."""
    import dataclasses

    from PIL import Image

    from .build import build
    from .catalog import load_catalog
    from .outputs import cache_folders, catalog_inputs, check_output
    from .sheets import Tile, contact_sheet
    from .sources import ImageStore
    from .store import cache_paths
    from .stylize import save_image

    catalog = load_catalog(options.catalog, strict=False)
    targets = [catalog.pair(p) for p in pairs] if pairs else list(catalog.pairs)
    name = targets[0].id if len(targets) == 1 else "pairs"
    sheet = out or Path(options.cache_dir) / "sweeps" / f"{name}.jpg"
    # Before painting, not after; never into the cache's stores (a sheet in its sweeps/
    # folder, the default, is fine) nor the site.
    stores = [(folder, "the cache") for folder in cache_folders(options.cache_dir)]
    protected = [*stores, (options.site_dir, "the site")]
    check_output(sheet, catalog_inputs(catalog), protected=protected)
    variants = list(variants) or [{}]
    jobs = len(variants) * len(targets)
    summary = build(
        dataclasses.replace(
            options,
            only=tuple(t.id for t in targets),
            variants=tuple(variants),
            kind="sweep",
            render_site=False,
        ),
        events,
        stop=stop,
    )
    painted, failed = summary.count("built"), summary.count("failed")
    if summary.interrupted:  # what was painted is kept for the next sweep; no sheet
        return SweepReport(sheet, jobs, painted, failed, True)
    store = ImageStore(cache_paths(options.cache_dir)["images"])
    profile = summary.profile
    rows = []
    for target in targets:
        outcomes = [o for o in summary.outcomes if o.pair == target.id and o.result]
        if not outcomes:
            continue
        tiles = []
        for role, sha in (("photo", outcomes[0].photo), ("cover", outcomes[0].cover)):
            path = store.find(sha or "")
            if path is not None:
                caption = [target.id if role == "photo" else role, getattr(target, role).credit]
                tiles.append(Tile(Image.open(path), caption))
        for variant in variants:
            wanted = catalog.params_for(target, profile, {**options.extra, **variant}).to_dict()
            outcome = next((o for o in outcomes if dict(o.params) == wanted), None)
            if outcome is not None:
                tiles.append(Tile(Image.open(outcome.result), _caption(variant, outcome)))
        rows += [tiles[:2] + tiles[2:][i : i + ROW_VARIANTS] for i in
                 range(0, max(1, len(tiles) - 2), ROW_VARIANTS)]  # fmt: skip
    if not rows:
        raise CovergenError(
            "nothing could be painted",
            pair=targets[0].id if len(targets) == 1 else None,
            hint="see the messages above; `covergen status` keeps them",
        )
    sheet_image = contact_sheet(rows, tile)
    # Again: the path may lead elsewhere after the painting.
    check_output(sheet, catalog_inputs(catalog), protected=protected)
    save_image(sheet_image, sheet, quality=85)
    return SweepReport(sheet, jobs, painted, failed)


def _caption(variant: Mapping[str, str], outcome: Any) -> list[str]:
    shown = {k: v for k, v in outcome.params.items() if k in variant}
    first = ", ".join(f"{k}={format_value(v)}" for k, v in shown.items())
    return [first or "as the catalog says", _numbers(outcome.metrics)]


def _numbers(metrics: Mapping[str, Any]) -> str:
    parts = [scores] if (scores := Metrics.of(metrics).summary()) else []
    if "content_weight" in metrics:  # the sheet's font has no arrow
        parts.append("weight " + resolved_value("content_weight", AUTO, metrics, arrow="->"))
    return ", ".join(parts)
