"""Planning: a job key per pair, and which pairs have no finished result yet.

A job key is the hash of everything that decides the image: the photo's bytes, the
cover's bytes, the fully resolved parameters, the engine version and the weights'
identity. Credits, notes and file names are not in it, so editing them reruns nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .nst import ENGINE_VERSION, StyleParams
from .results import ResultRecord, ResultStore


@dataclass(frozen=True)
class Job:
    """One pair to paint: plain data, so any executor (local threads, a cluster) can run it."""

    pair: str
    key: str
    label: str
    photo_sha256: str
    photo_path: Path
    photo_size: tuple[int, int]
    cover_sha256: str
    cover_path: Path
    params: StyleParams
    weights: str  # identity of the network weights
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the --set values of a rerun

    def record_fields(self) -> dict[str, Any]:
        """Fields of the ResultRecord this job will produce, less the run's own figures."""
        return {
            "key": self.key,
            "pair": self.pair,
            "params": self.params.to_dict(),
            "photo_sha256": self.photo_sha256,
            "cover_sha256": self.cover_sha256,
            "engine_version": ENGINE_VERSION,
            "weights": self.weights,
            "extra": self.extra,
        }


@dataclass(frozen=True)
class PlannedPair:
    """What the planner needs of a pair whose inputs are fetched."""

    pair: str
    label: str
    photo_sha256: str
    photo_path: Path
    photo_size: tuple[int, int]
    cover_sha256: str
    cover_path: Path
    params: StyleParams
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    to_run: list[Job] = field(default_factory=list)
    reused: list[tuple[Job, ResultRecord]] = field(default_factory=list)


def job_key(photo_sha256: str, cover_sha256: str, params: StyleParams, weights: str) -> str:
    """The content address of a result."""
    payload = {
        "photo": photo_sha256,
        "cover": cover_sha256,
        "params": params.to_dict(),
        "engine": ENGINE_VERSION,
        "weights": weights,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def plan_jobs(
    pairs: Iterable[PlannedPair],
    results: ResultStore,
    weights_identity: Callable[[StyleParams], str],
    *,
    force: bool = False,
) -> Plan:
    """Split pairs into jobs to run and finished results to reuse (``force``: run all)."""
    plan = Plan()
    for item in pairs:
        weights = weights_identity(item.params)
        job = Job(
            pair=item.pair,
            label=item.label,
            key=job_key(item.photo_sha256, item.cover_sha256, item.params, weights),
            photo_sha256=item.photo_sha256,
            photo_path=item.photo_path,
            photo_size=item.photo_size,
            cover_sha256=item.cover_sha256,
            cover_path=item.cover_path,
            params=item.params,
            weights=weights,
            extra=item.extra,
        )
        record = None if force else results.get(job.key)
        if record is None:
            plan.to_run.append(job)
        else:
            plan.reused.append((job, record))
    return plan
