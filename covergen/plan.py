"""Planning: a job key per pair, and which pairs have no finished result yet.

A job key is the hash of everything that decides the image: the photo's bytes, the
cover's bytes, the fully resolved parameters, the engine version and the weights'
identity. Credits, notes and file names are not in it, so editing them reruns nothing.

A ``Job`` is plain data — hashes, sizes, parameters — with no path on this machine and no
torch, so any executor can run it: a thread here, another process, a Ray actor elsewhere.
The images are fetched by their SHA-256 from wherever the executor keeps them.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .nst import ENGINE_VERSION, StyleParams
from .nst.params import key_values, recipe_versions
from .store.results import ResultRecord, ResultStore


@dataclass(frozen=True)
class ImageInput:
    """An input image as a job knows it: by the hash of its bytes, with its upright size."""

    sha256: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass(frozen=True)
class Job:
    """One pair to paint."""

    pair: str
    key: str
    label: str
    photo: ImageInput
    cover: ImageInput
    params: StyleParams
    weights: str  # identity of the network weights
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. the --set values of a rerun
    precision: str = "fp32"  # what the network runs in, resolved (never "auto")

    def record_fields(self) -> dict[str, Any]:
        """Fields of the ResultRecord this job will produce, less the run's own figures."""
        return {
            "key": self.key,
            "pair": self.pair,
            "params": self.params.to_dict(),
            "photo_sha256": self.photo.sha256,
            "cover_sha256": self.cover.sha256,
            "engine_version": ENGINE_VERSION,
            "weights": self.weights,
            "extra": dict(self.extra),
        }


@dataclass
class Plan:
    to_run: list[Job] = field(default_factory=list)
    reused: list[tuple[Job, ResultRecord]] = field(default_factory=list)


def job_key(
    photo_sha256: str,
    cover_sha256: str,
    params: StyleParams,
    weights: str,
    precision: str = "fp32",
) -> str:
    """The content address of a result. ``precision`` is what the network runs in (see
    covergen.precision): fp32 results keep the keys they had before it was part of them."""
    payload = {
        "photo": photo_sha256,
        "cover": cover_sha256,
        "params": key_values(params),
        "engine": ENGINE_VERSION,
        "weights": weights,
        "recipes": recipe_versions(params),
    }
    if precision != "fp32":
        payload["precision"] = precision
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_job(
    pair: str,
    label: str,
    photo: ImageInput,
    cover: ImageInput,
    params: StyleParams,
    weights: str,
    extra: Mapping[str, Any] | None = None,
    precision: str = "fp32",
) -> Job:
    """A job, its key derived from its inputs."""
    key = job_key(photo.sha256, cover.sha256, params, weights, precision)
    return Job(
        pair=pair,
        key=key,
        label=label,
        photo=photo,
        cover=cover,
        params=params,
        weights=weights,
        extra=dict(extra or {}),
        precision=precision,
    )


def plan_jobs(
    jobs: Iterable[Job],
    results: ResultStore,
    *,
    force: bool = False,
) -> Plan:
    """Split jobs into those to run and finished results to reuse (``force``: run all).

    Each distinct key is looked up (and its result verified) once, however many pairs share
    it: pairs with the same inputs and parameters are one result."""
    plan = Plan()
    verified = functools.cache(results.get)
    for job in jobs:
        record = None if force else verified(job.key)
        if record is None:
            plan.to_run.append(job)
        else:
            plan.reused.append((job, record))
    return plan
