"""The Gatys style-transfer loop: targets, multi-scale schedule, batching, callbacks.

``Engine`` holds what is worth keeping between jobs (loaded encoders, the face detector, the
quality judge, the target cache) and runs jobs alone (``stylize``) or several of the same
shape together (``stylize_batch``). A job runs in stages:

1. **prepare**: images to tensors at their sizes; faces detected in the photo and their
   content weight raised (``protect_faces``); the photorealism memory checked;
2. **probe** (``content_weight: auto`` only): the coarse scale painted for each candidate
   weight side by side, each judged by the quality measures, the lowest weight that keeps
   the subject recognisable chosen; the winner's image carries on;
3. **paint**: the scales, coarse to fine, with the photorealism regulariser where asked;
4. **finish**: colours restored, the guided filter where asked, both quality scores.

It reports through callbacks and never prints. The rooms it stands on: ``prepared`` (a job
made ready: tensors, colour, maps), ``autoweight`` (the automatic content weight's choice),
``objective`` (the loss of a batch, assembled from ``losses``, and the stopping rule),
``precision`` (what ``auto`` means here, and torch's flags for a run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from PIL import Image

from . import imaging, losses
from .autoweight import Candidate, choose_content_weight, keeps_enough
from .errors import Cancelled, ParameterError
from .layers import deepest_layer
from .objective import EarlyStop, Objective, term_weights
from .optim import BatchAdam, BatchLBFGS
from .params import (
    AUTO,
    AUTO_CANDIDATES,
    ENGINE_VERSION,
    FACE_DETECTOR_VERSION,
    FACE_MEAN_CAP,
    PHOTOREAL_VERSION,
    StyleParams,
    probe_iterations,
    probe_long_side,
    shape_signature,
)
from .precision import effective_precision, precision_flags
from .prepared import PreparedJob, StylizeJob
from .runtime import Runtime, resolve_devices
from .vgg import VGGEncoder
from .weights import VGGWeights, load_weights
from .weightsources import choose_source, resolve_flavour


def select_device(name: str = "auto") -> torch.device:
    """The one device an engine runs on: the first that ``resolve_devices`` gives."""
    devices = resolve_devices(name)
    if len(devices) > 1 and name.strip() != "auto":
        raise ParameterError(
            "device", f"an engine runs on one device, not {name!r}", "name one, e.g. cuda:0"
        )
    return torch.device(devices[0])


@dataclass(frozen=True)
class LossValues:
    """Weighted loss terms of one image at one iteration."""

    total: float
    content: float
    style: float
    tv: float
    photo: float = 0.0  # the photorealism regulariser


@dataclass(frozen=True)
class Progress:
    """Handed to the progress callback after every iteration."""

    scale: int  # 0-based index of the current scale
    scales: int
    size: tuple[int, int]  # (width, height) at this scale
    iteration: int  # 1-based, within this scale (or the probe)
    iterations: int  # the most any job in the batch runs at this scale
    losses: tuple[LossValues, ...]  # one per job in the batch (the probe: per candidate)
    elapsed: float  # seconds since the job (batch) started
    stage: str = "paint"  # probe (choosing the content weight) or paint
    done: int = 0  # iterations so far, every stage and scale (the batch's longest job)
    total: int = 0  # the most it can take, every probe round counted until one is not needed


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class TargetCache(Protocol):
    """Storage for computed targets, keyed by a content hash the engine derives."""

    def get(self, key: str) -> dict[str, torch.Tensor] | None: ...

    def put(self, key: str, value: dict[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class StylizeResult:
    image: Image.Image
    history: list[dict[str, float]]  # per iteration: scale, iteration and the loss terms
    iterations: int
    seconds: float
    device: str
    losses: LossValues
    # What the job found out: content_kept and style_taken (the judge's scores), faces (how
    # many were protected), content_weight (the value chosen, when it was auto).
    metrics: dict[str, Any] = field(default_factory=dict)


def batch_signature(job: StylizeJob) -> tuple:
    """Jobs with equal signatures can share a batch; the scheduler groups by this."""
    return shape_signature(job.params, job.content.size)


class Engine:
    """Runs style-transfer jobs on one device.

    ``cache_dir`` holds the converted network weights; ``target_cache`` (optional)
    stores content features and style statistics so that covers shared by several pairs,
    and reruns with new weights, skip recomputing them. ``offline`` forbids downloading
    weights (torchvision's files); the packaged weights need no network.
    """

    def __init__(
        self,
        runtime: Runtime | None = None,
        *,
        cache_dir: Path = Path("cache"),
        weights_file: Path | None = None,
        target_cache: TargetCache | None = None,
        offline: bool = False,
    ):
        self.runtime = runtime or Runtime()
        self.device = select_device(self.runtime.device)
        self.dtype = torch.float64 if self.runtime.precision == "fp64" else torch.float32
        self.cache_dir = Path(cache_dir)
        self.weights_file = weights_file
        self.target_cache = target_cache
        self.offline = offline
        self._weights: dict[tuple[str, str], VGGWeights] = {}
        self._encoders: dict[tuple[str, str, str, str], VGGEncoder] = {}
        self._detector: Any = None  # faces.FaceDetector, made on first use
        self._judge: Any = None  # quality.QualityJudge, made on first use
        self._instant: Any = None  # instant.InstantMethods, made on first use
        # Called after every optimiser step with the step's Progress and the batch's current
        # images (B, 3, H, W; Adam's averaged iterate): how benchmarks watch quality over
        # time. Never crosses a process boundary, unlike the progress callback's events.
        self.observer: Callable[[Progress, torch.Tensor], None] | None = None
        self.precision = effective_precision(self.runtime.precision, self.device)
        channels_last = self.runtime.channels_last
        # NHWC is what tensor cores and oneDNN's bf16 kernels want; fp32 on a CPU is not faster.
        wanted = self.device.type == "cuda" or self.precision == "bf16"
        self.channels_last = wanted if channels_last is None else channels_last
        # How the automatic content weight's candidates are painted. On an accelerator, all
        # at once: a batch of four costs about what one image costs. On a CPU a batch costs
        # what its images cost one after another, so the candidates go in rounds, lowest
        # weight first, and a job stops probing at the first candidate that passes: the
        # same choice for a quarter to all of the work (docs/benchmarks.md).
        self.probe_in_rounds = self.device.type == "cpu"

    # -- network ---------------------------------------------------------------------------
    def weights(self, params: StyleParams) -> VGGWeights:
        """The network weights a job uses (loaded once per engine)."""
        flavour = resolve_flavour(params.network, params.weights)
        key = (params.network, flavour)
        if key not in self._weights:
            self._weights[key] = load_weights(params.network, flavour, **self._source_settings())
        return self._weights[key]

    def weights_identity(self, params: StyleParams) -> str:
        """Content address of the weights a job uses, for job keys (loads nothing)."""
        if (params.network, resolve_flavour(params.network, params.weights)) in self._weights:
            return self.weights(params).identity
        return choose_source(params.network, params.weights, **self._source_settings()).identity

    def _source_settings(self) -> dict[str, Any]:
        """What decides where this engine's weights come from (``choose_source``)."""
        return {"cache_dir": self.cache_dir, "explicit": self.weights_file, "offline": self.offline}

    def encoder(self, params: StyleParams) -> VGGEncoder:
        """A frozen encoder just deep enough for the job's layers, on this engine's device."""
        weights = self.weights(params)
        deepest = deepest_layer(params.network, [*params.content_layers, *params.style_layers])
        key = (params.network, weights.flavour, params.pooling, deepest)
        if key not in self._encoders:
            encoder = VGGEncoder(params.network, deepest, weights.flavour, params.pooling)
            encoder.load_vgg_state_dict(weights.state_dict)
            encoder = encoder.to(self.device, dtype=self.dtype)
            if self.channels_last:
                encoder = encoder.to(memory_format=torch.channels_last)
            self._encoders[key] = encoder
        return self._encoders[key]

    def features(
        self, encoder: VGGEncoder, image: torch.Tensor, layers: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        image = image.to(self.dtype)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.precision == "bf16" and self.device.type in ("cuda", "cpu"):
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                feats = encoder(image, layers)
            return {name: f.float() for name, f in feats.items()}
        return encoder(image, layers)

    # -- targets ---------------------------------------------------------------------------
    def content_targets(
        self, params: StyleParams, content: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Content features of a (1, 3, H, W) image at the job's content layers."""
        layers = list(params.content_layers)
        return self._cached(
            "content", params, content, layers, lambda feats: {name: feats[name] for name in layers}
        )

    def style_targets(self, params: StyleParams, style: torch.Tensor) -> dict[str, torch.Tensor]:
        """Style statistics of a (1, 3, H, W) image at the job's style layers.

        Gram: ``{layer}`` -> (1, C, C). Mean-covariance: ``{layer}.mean`` (1, C) and
        ``{layer}.cov`` (1, C, C).
        """
        layers = list(params.style_layers)

        def statistics(feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            for name in layers:
                f = feats[name]
                if params.style_loss == "gram":
                    out[name] = losses.gram_matrix(f)
                else:
                    out[f"{name}.mean"], out[f"{name}.cov"] = losses.mean_covariance(f)
            return out

        return self._cached(f"style-{params.style_loss}", params, style, layers, statistics)

    def _cached(
        self,
        kind: str,
        params: StyleParams,
        image: torch.Tensor,
        layers: list[str],
        reduce: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        encoder = self.encoder(params)
        key = self.cache_key(
            image,
            kind,
            ENGINE_VERSION,
            self.weights_identity(params),
            params.network,
            params.pooling,
            str(self.dtype),
            self.precision,  # bf16's features differ from fp32's in their last bits
            ",".join(layers),
        )
        hit = self.cache_get(key)
        if hit is not None:
            return {name: t.to(self.device) for name, t in hit.items()}
        with torch.no_grad():
            value = reduce(self.features(encoder, image.to(self.device), layers))
        value = {name: t.detach() for name, t in value.items()}
        self.cache_put(key, {name: t.cpu() for name, t in value.items()})
        return value

    def cache_key(self, image: torch.Tensor, *parts: str) -> str | None:
        """The target cache's key for something computed from ``image``: its bytes and shape
        and the recipe ``parts``; None without a cache."""
        if self.target_cache is None:
            return None
        digest = hashlib.sha256()
        for part in (*parts, str(tuple(image.shape))):
            digest.update(part.encode() + b"\0")
        digest.update(image.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def cache_get(self, key: str | None) -> dict[str, torch.Tensor] | None:
        return self.target_cache.get(key) if self.target_cache is not None and key else None

    def cache_put(self, key: str | None, value: dict[str, torch.Tensor]) -> None:
        if self.target_cache is not None and key:
            self.target_cache.put(key, value)

    # -- what a job computes on its own -----------------------------------------------------
    def faces(self, content: torch.Tensor) -> list[Any]:
        """Faces in a (1, 3, H, W) photo (``faces.FaceBox``, fractions of the image), cached
        by the photo's pixels and the detector's version."""
        from .faces import FaceBox, FaceDetector

        key = self.cache_key(content, "faces", FACE_DETECTOR_VERSION)
        hit = self.cache_get(key)
        if hit is not None and "boxes" in hit:
            return [FaceBox(*map(float, row[:5])) for row in hit["boxes"].tolist()]
        if self._detector is None:
            self._detector = FaceDetector("cpu")  # small networks: the CPU is quick enough
        boxes = self._detector.detect(imaging.tensor_to_pil(content))
        rows = [[b.left, b.top, b.right, b.bottom, b.score] for b in boxes]
        self.cache_put(key, {"boxes": torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)})
        return boxes

    def laplacian(self, photo: torch.Tensor) -> Any:
        """The matting Laplacian of a (1, 3, H, W) photo at its size (``photoreal``), on this
        engine's device, cached by the photo's pixels."""
        import scipy.sparse

        from .photoreal import MattingLaplacian, sparse_device

        key = self.cache_key(photo, "laplacian", PHOTOREAL_VERSION, str(LAPLACIAN_EPS))
        hit = self.cache_get(key)
        height, width = photo.shape[-2:]
        if hit is not None and {"indptr", "indices", "data"} <= hit.keys():
            n = height * width
            matrix = scipy.sparse.csr_matrix(
                (hit["data"].numpy(), hit["indices"].numpy(), hit["indptr"].numpy()), shape=(n, n)
            )
            laplacian = MattingLaplacian.from_scipy(matrix, height, width)
        else:
            laplacian = MattingLaplacian.from_photo(photo.detach().cpu().double(), LAPLACIAN_EPS)
            m = laplacian.matrix
            self.cache_put(
                key,
                {"indptr": m.crow_indices(), "indices": m.col_indices(), "data": m.values()},
            )
        return laplacian.to(sparse_device(self.device), self.dtype)

    @property
    def judge(self) -> Any:
        """The quality judge (``quality.QualityJudge``), on this engine's device."""
        if self._judge is None:
            from .quality import QualityJudge

            self._judge = QualityJudge(self.device)
        return self._judge

    # -- running ---------------------------------------------------------------------------
    def stylize(
        self,
        content: Image.Image,
        style: Image.Image | Sequence[Image.Image],
        params: StyleParams | None = None,
        *,
        content_map: Image.Image | torch.Tensor | None = None,
        init_image: Image.Image | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> StylizeResult:
        """Paint ``content`` in the style of ``style`` (one image or several to blend)."""
        styles = [style] if isinstance(style, Image.Image) else list(style)
        job = StylizeJob(content, styles, params or StyleParams(), content_map, init_image)
        return self.stylize_batch([job], progress=progress, cancel=cancel)[0]

    def stylize_batch(
        self,
        jobs: Sequence[StylizeJob],
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> list[StylizeResult]:
        """Optimise jobs of one ``batch_signature`` together; each keeps its own losses.

        The results equal those of running each job alone (up to floating-point
        rounding): the optimisers keep separate state per image, a job that meets its
        early-stop rule or its iteration budget is frozen while the others go on, and the
        candidates of an automatic content weight are jobs of their own.
        """
        if not jobs:
            return []
        signatures = {batch_signature(job) for job in jobs}
        if len(signatures) > 1:
            raise ParameterError(
                "batch",
                "jobs differ in shape or network settings",
                "group jobs by batch_signature() first",
            )
        run = _Run(self, progress, cancel, self._most_iterations([job.params for job in jobs]))
        with precision_flags(self.device, self.runtime.precision):
            prepared = [self._prepare(job) for job in jobs]
            if jobs[0].params.method == "gatys":
                if any(job.params.content_weight == AUTO for job in prepared):
                    prepared = self._probe(prepared, run)
                x, histories, iterations, last = self._paint(prepared, run)
                painted = [x[i : i + 1].detach() for i in range(len(prepared))]
            else:  # feed-forward: one pass each, no loss to report
                painted = self._paint_instant(prepared, run)
                histories, iterations = [[] for _ in prepared], [1 for _ in prepared]
                last = [LossValues(0.0, 0.0, 0.0, 0.0) for _ in prepared]
            images = [job.finish(image) for job, image in zip(prepared, painted, strict=True)]
            scores = self._scores(prepared, images)
        seconds = time.perf_counter() - run.start
        return [
            StylizeResult(
                image=imaging.tensor_to_pil(images[i]),
                history=job.probe_history + histories[i],
                iterations=iterations[i] + job.probed,
                seconds=seconds,
                device=str(self.device),
                losses=last[i],
                metrics={**job.metrics, **scores[i]},
            )
            for i, job in enumerate(prepared)
        ]

    @property
    def instant(self) -> Any:
        """The feed-forward methods (``instant.InstantMethods``), their networks loaded on
        first use on this engine's device."""
        if self._instant is None:
            from .instant import InstantMethods

            self._instant = InstantMethods(self)
        return self._instant

    def _paint_instant(self, jobs: list[PreparedJob], run: _Run) -> list[torch.Tensor]:
        """Feed-forward jobs (``method: arbitrary`` or ``fast``): prepared and finished as
        Gatys' are, painted in one pass each (a fast job's cover network trained first,
        unless the target cache holds it)."""

        def report(stage: str, done: int, total: int) -> None:
            height, width = jobs[0].content.shape[-2:]
            run.report(
                Progress(
                    scale=0,
                    scales=1,
                    size=(width, height),
                    iteration=done,
                    iterations=total,
                    losses=(),
                    elapsed=time.perf_counter() - run.start,
                    stage=stage,
                )
            )

        return self.instant.paint(jobs, report, run.cancel)

    # -- stages ------------------------------------------------------------------------------
    def _prepare(self, job: StylizeJob) -> PreparedJob:
        prepared = PreparedJob.create(job)
        p = prepared.params
        if p.method == "gatys" and p.photorealism_weight() > 0:
            from .photoreal import check_laplacian_memory

            width, height = prepared.content.shape[-1], prepared.content.shape[-2]
            check_laplacian_memory(width, height)
        if p.protect_faces and p.face_weight > 1:
            from .faces import face_weight_map

            boxes = self.faces(prepared.photo)
            prepared.metrics["faces"] = len(boxes)
            if boxes:
                height, width = prepared.content.shape[-2:]
                faces = face_weight_map(boxes, width, height, p.face_weight, FACE_MEAN_CAP)
                current = prepared.content_map
                prepared.content_map = faces if current is None else current * faces
        if p.method == "gatys" and p.init == "arbitrary":
            # Gatys from the arbitrary painting (faces protected there too): the optimisation
            # starts near a painting instead of the photo.
            start = self.instant.arbitrary_painting(prepared)
            if prepared.colour_source is not None:
                start = imaging.luminance(start)
            prepared.init_image = start
        return prepared

    def _most_iterations(self, params: list[StyleParams]) -> int:
        """The most iterations a batch can report: every probe round, each coarse scale and
        the final one, each stage as long as its longest job (the batch shares its scales)."""
        scales = len(params[0].scale_sizes())
        return (
            len(self._probe_rounds()) * max(probe_iterations(p) for p in params)
            + (scales - 1) * max(p.coarse_iterations for p in params)
            + max(p.iterations for p in params)
        )

    def _probe_rounds(self) -> list[tuple[float, ...]]:
        """The candidate weights painted together, round by round (``probe_in_rounds``)."""
        if self.probe_in_rounds:
            return [(weight,) for weight in AUTO_CANDIDATES]
        return [AUTO_CANDIDATES]

    def _probe(self, jobs: list[PreparedJob], run: _Run) -> list[PreparedJob]:
        """Choose each automatic content weight: candidates are painted at the coarse scale
        for ``probe_iterations`` and judged; the lowest weight whose result keeps the subject
        recognisable wins, and its image carries on. All candidates go in one batch, or in
        rounds from the lowest weight, a job leaving the rounds once one of its candidates
        passes (``probe_in_rounds``); both choose the same weight."""
        auto = [i for i, job in enumerate(jobs) if job.params.content_weight == AUTO]
        sizes = jobs[0].params.scale_sizes()
        # The coarse scale when there is one (its image is kept); else half the size, but
        # not below 64 px, where the judge's network sees little (nor above the size).
        long_side = probe_long_side(jobs[0].params) or sizes[0]
        height, width = jobs[0].content.shape[-2:]
        width, height = imaging.fit_long_side(width, height, long_side)
        encoder = self.encoder(jobs[0].params)
        tried: dict[int, list[Candidate]] = {i: [] for i in auto}  # per job, in weight order
        pending = list(auto)
        longest = max(probe_iterations(jobs[i].params) for i in auto)
        for weights in self._probe_rounds():
            if not pending:  # the rounds not needed leave the progress total
                run.total -= longest
                continue
            candidates = [
                jobs[i].with_weight(weight, probe_iterations(jobs[i].params))
                for i in pending
                for weight in weights
            ]
            x = torch.cat([job.initial(width, height) for job in candidates]).to(
                self.device, self.dtype
            )
            budgets = [job.probe_budget for job in candidates]
            x, histories, counts, _ = self._optimise(
                candidates, encoder, x, width, height, budgets, run, stage="probe", scale=0
            )
            for n, i in enumerate(pending):
                rows = range(n * len(weights), (n + 1) * len(weights))
                images = [candidates[r].finish(x[r : r + 1]) for r in rows]
                scores = self.judge.score_many(
                    jobs[i].photo_at(width, height), jobs[i].cover_at(width, height), images
                )
                for weight, r, score in zip(weights, rows, scores, strict=True):
                    image = x[r : r + 1].detach().clone()
                    tried[i].append(Candidate(weight, score, image, counts[r], histories[r]))
            # A job with a candidate that passes has its lowest such weight: no more rounds.
            pending = [
                i for i in pending if not any(keeps_enough(c.scores.content_kept) for c in tried[i])
            ]
        out = list(jobs)
        for i in auto:
            choice = choose_content_weight([(c.weight, c.scores.content_kept) for c in tried[i]])
            winner = next(c for c in tried[i] if c.weight == choice)
            job = jobs[i].with_weight(choice)
            job.metrics["content_weight"] = choice
            job.metrics["candidates"] = {  # the candidates tried: content_kept, style_taken
                format(c.weight, "g"): list(_reported(c.scores).values()) for c in tried[i]
            }
            if len(sizes) > 1:  # the winner's coarse image carries on
                job.start = winner.image
                job.probed = winner.iterations
            job.probe_history = winner.history
            out[i] = job
        return out

    def _paint(
        self, jobs: list[PreparedJob], run: _Run
    ) -> tuple[torch.Tensor, list[list[dict[str, float]]], list[int], list[LossValues]]:
        params = [job.params for job in jobs]
        sizes = params[0].scale_sizes()
        encoder = self.encoder(params[0])
        histories: list[list[dict[str, float]]] = [[] for _ in jobs]
        counts = [0 for _ in jobs]
        last = [LossValues(0.0, 0.0, 0.0, 0.0) for _ in jobs]
        x: torch.Tensor | None = None
        for scale, long_side in enumerate(sizes):
            final = scale == len(sizes) - 1
            budgets = [p.iterations if final else p.coarse_iterations for p in params]
            if scale == 0:  # a probe's winner has done some of the first scale already
                budgets = [max(0, b - job.probed) for b, job in zip(budgets, jobs, strict=True)]
            if max(budgets) == 0 and not (scale == 0 and any(j.start is not None for j in jobs)):
                continue
            full_height, full_width = jobs[0].content.shape[-2:]
            width, height = imaging.fit_long_side(full_width, full_height, long_side)
            if x is None:
                x = torch.cat(
                    [
                        job.start if job.start is not None else job.initial(width, height)
                        for job in jobs
                    ]
                ).to(self.device, self.dtype)
            else:
                x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)
                x = x.clamp(0, 1)
            if max(budgets) == 0:
                continue
            x, scale_histories, scale_counts, scale_last = self._optimise(
                jobs, encoder, x, width, height, budgets, run, stage="paint", scale=scale
            )
            for i in range(len(jobs)):
                histories[i] += scale_histories[i]
                counts[i] += scale_counts[i]
                if scale_counts[i]:
                    last[i] = scale_last[i]
        if x is None:
            raise ParameterError(
                "iterations", "every scale has zero iterations", "set iterations to at least 1"
            )
        return x, histories, counts, last

    def _optimise(
        self,
        jobs: list[PreparedJob],
        encoder: VGGEncoder,
        x: torch.Tensor,
        width: int,
        height: int,
        budgets: list[int],
        run: _Run,
        *,
        stage: str,
        scale: int,
    ) -> tuple[torch.Tensor, list[list[dict[str, float]]], list[int], list[LossValues]]:
        """Optimise a batch at one size for up to ``budgets`` iterations each."""
        params = [job.params for job in jobs]
        first = params[0]
        scales = len(first.scale_sizes())
        histories: list[list[dict[str, float]]] = [[] for _ in jobs]
        counts = [0 for _ in jobs]
        last = [LossValues(0.0, 0.0, 0.0, 0.0) for _ in jobs]
        problem = self._problem(jobs, encoder, width, height)
        x = x.detach().requires_grad_(True)
        optimiser: BatchLBFGS | BatchAdam
        if first.optimizer == "lbfgs":
            optimiser = BatchLBFGS(x)
        else:
            optimiser = BatchAdam(x, lr=first.learning_rate, average=first.average)
        stopper = EarlyStop(params, budgets, self.device)
        for iteration in range(1, max(budgets) + 1):
            if run.cancel is not None and run.cancel():
                raise Cancelled("cancelled by the caller")
            active = stopper.active.clone()
            terms = problem.losses(x)
            total = terms["total"]
            (grad,) = torch.autograd.grad(total.sum(), x)
            values = {k: v.detach().cpu().tolist() for k, v in terms.items()}
            for i in range(len(jobs)):
                if not bool(active[i]):
                    continue
                counts[i] += 1
                row = {k: v[i] for k, v in values.items()}  # total, content, style, tv, photo
                last[i] = LossValues(**row)
                step = {"scale": -1 if stage == "probe" else scale, "iteration": iteration}
                histories[i].append({**step, **row})
            stopper.update(iteration, total.detach())
            optimiser.step(grad, active)
            event = Progress(
                scale=scale,
                scales=scales,
                size=(width, height),
                iteration=iteration,
                iterations=max(budgets),
                losses=tuple(last),
                elapsed=time.perf_counter() - run.start,
                stage=stage,
            )
            run.report(event)
            if self.observer is not None:
                current = optimiser.result() if isinstance(optimiser, BatchAdam) else x
                self.observer(event, current.detach())
            if not bool(stopper.active.any()):
                break
        if isinstance(optimiser, BatchAdam):
            x = optimiser.result()
        return x.detach().clamp(0, 1), histories, counts, last

    def _scores(self, jobs: list[PreparedJob], images: list[torch.Tensor]) -> list[dict]:
        """content_kept and style_taken of each result, by the judge, at the result's size."""
        out = []
        for job, image in zip(jobs, images, strict=True):
            height, width = image.shape[-2:]
            (score,) = self.judge.score_many(
                job.photo_at(width, height), job.cover_at(width, height), [image]
            )
            out.append(_reported(score))
        return out

    def _problem(
        self, jobs: list[PreparedJob], encoder: VGGEncoder, width: int, height: int
    ) -> Objective:
        """Targets and weights of every job at one scale, stacked along the batch."""
        params = [job.params for job in jobs]
        first = params[0]
        content: list[dict[str, torch.Tensor]] = []
        style: list[dict[str, torch.Tensor]] = []
        maps = []
        laplacians: list[Any] = []
        for job in jobs:
            content.append(self.content_targets(job.params, job.content_at(width, height)))
            style.append(self._blended_style(job, width, height))
            maps.append(job.weight_map(width, height))
            laplacians.append(
                self.laplacian(job.photo_at(width, height))
                if job.params.photorealism_weight() > 0
                else None
            )
        if all(m is None for m in maps):
            weight_map = None
        else:
            ones = torch.ones(1, 1, height, width)
            weight_map = torch.cat([ones if m is None else m for m in maps]).to(
                self.device, self.dtype
            )
        stacked_style = {name: torch.cat([s[name] for s in style]) for name in style[0]}
        if first.style_loss == "meancov":
            for name in first.style_layers:
                stacked_style[f"{name}.sqrt"] = losses.symmetric_sqrt(stacked_style[f"{name}.cov"])

        def column(values: list[list[float]]) -> torch.Tensor:
            return torch.tensor(values, dtype=self.dtype, device=self.device)

        return Objective(
            features=self.features,
            encoder=encoder,
            params=first,
            content_targets={n: torch.cat([c[n] for c in content]) for n in first.content_layers},
            style_targets=stacked_style,
            weight_map=weight_map,
            content_layer_weights=column([p.resolved_content_layer_weights() for p in params]),
            style_layer_weights=column([p.resolved_style_layer_weights() for p in params]),
            term_weights=column([term_weights(p) for p in params]),
            laplacians=laplacians,
        )

    def _blended_style(self, job: PreparedJob, width: int, height: int) -> dict[str, torch.Tensor]:
        """Style statistics of a job's covers at one scale, blended by ``style_blend``."""
        params = job.params
        long_side = max(8, round(max(width, height) * params.style_scale))
        per_style = [self.style_targets(params, style) for style in job.styles_at(long_side)]
        weighted = list(zip(job.blend, per_style, strict=True))
        if params.style_loss == "gram":
            return {name: sum(w * s[name] for w, s in weighted) for name in params.style_layers}
        # Moments of the mixture: blend means and second moments, then re-centre.
        out: dict[str, torch.Tensor] = {}
        for name in params.style_layers:
            m, c = f"{name}.mean", f"{name}.cov"
            mean = sum(w * s[m] for w, s in weighted)
            second = sum(w * (s[c] + s[m].unsqueeze(2) * s[m].unsqueeze(1)) for w, s in weighted)
            out[m], out[c] = mean, second - mean.unsqueeze(2) * mean.unsqueeze(1)
        return out


def _reported(score: Any) -> dict[str, float]:
    """The judge's two headline numbers (``quality.Scores``), as results report them."""
    return {k: round(getattr(score, k), 4) for k in ("content_kept", "style_taken")}


# The matting Laplacian's ε (Levin et al.'s regularisation of each window's colour model).
# 1e-7 (the papers'), 1e-5 (a popular port's) and 1e-4 give results within 0.03 of each
# other on every quality number at the draft size (docs/engine.md); 1e-5 is kept.
LAPLACIAN_EPS = 1e-5


@dataclass
class _Run:
    """One stylize_batch call: its callbacks, clock and overall iteration count."""

    engine: Engine
    progress: ProgressCallback | None
    cancel: CancelCheck | None
    total: int
    start: float = field(default_factory=time.perf_counter)
    done: int = 0

    def report(self, event: Progress) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(dataclasses.replace(event, done=self.done, total=self.total))
