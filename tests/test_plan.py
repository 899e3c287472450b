"""Planning: job keys name everything that decides a painting and nothing else; finished
results are reused, the rest is to run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from covergen.executors.painter import encode_png
from covergen.nst import StyleParams, params
from covergen.plan import ImageInput, job_key, make_job, plan_jobs
from covergen.store.results import ResultStore

PHOTO = ImageInput("a" * 64, 640, 480)
COVER = ImageInput("b" * 64, 500, 500)


def test_the_key_depends_on_inputs_parameters_weights_and_engine(monkeypatch):
    base = job_key(PHOTO.sha256, COVER.sha256, StyleParams(), "w1")
    assert base == job_key(PHOTO.sha256, COVER.sha256, StyleParams(), "w1")  # deterministic
    others = {
        job_key("c" * 64, COVER.sha256, StyleParams(), "w1"),
        job_key(PHOTO.sha256, "c" * 64, StyleParams(), "w1"),
        job_key(PHOTO.sha256, COVER.sha256, StyleParams(content_weight=2), "w1"),
        job_key(PHOTO.sha256, COVER.sha256, StyleParams(), "w2"),
    }
    assert base not in others and len(others) == 4
    monkeypatch.setattr("covergen.plan.ENGINE_VERSION", params.ENGINE_VERSION + "x")
    assert job_key(PHOTO.sha256, COVER.sha256, StyleParams(), "w1") != base


def test_labels_and_reruns_extras_are_not_part_of_the_key():
    one = make_job("pair-a", "Band — Album", PHOTO, COVER, StyleParams(), "w")
    two = make_job("pair-b", "Other — Title", PHOTO, COVER, StyleParams(), "w", {"x": 1})
    assert one.key == two.key  # same inputs, same painting: shared by content
    assert one.record_fields()["photo_sha256"] == PHOTO.sha256
    assert dataclasses.asdict(one)["photo"] == {"sha256": PHOTO.sha256, "width": 640, "height": 480}


def test_finished_results_are_reused_unless_forced(tmp_path: Path):
    from PIL import Image

    store = ResultStore(tmp_path / "results")
    done = make_job("a", "A", PHOTO, COVER, StyleParams(), "w")
    todo = make_job("b", "B", PHOTO, COVER, StyleParams(size=64), "w")
    figures = {"iterations": 1, "seconds": 1.0, "device": "cpu", "losses": {}}
    store.put(encode_png(Image.new("RGB", (8, 6))), 8, 6, {**done.record_fields(), **figures})
    plan = plan_jobs([done, todo], store)
    assert [j.pair for j in plan.to_run] == ["b"]
    assert [(j.pair, r.key) for j, r in plan.reused] == [("a", done.key)]
    forced = plan_jobs([done, todo], store, force=True)
    assert [j.pair for j in forced.to_run] == ["a", "b"] and not forced.reused


@pytest.mark.parametrize("tamper", ["png", "json"])
def test_a_damaged_result_is_planned_again(tmp_path: Path, tamper: str):
    from PIL import Image

    store = ResultStore(tmp_path / "results")
    job = make_job("a", "A", PHOTO, COVER, StyleParams(), "w")
    fields = {**job.record_fields(), "iterations": 1, "seconds": 1.0, "device": "cpu",
              "losses": {}}  # fmt: skip
    store.put(encode_png(Image.new("RGB", (8, 6))), 8, 6, fields)
    path = store.image_path(job.key)
    if tamper == "png":
        path.write_bytes(path.read_bytes()[:-3])
    else:
        meta = path.with_suffix(".json")
        meta.write_text(meta.read_text().replace('"width": 8', '"width": -8'))
    assert [j.pair for j in plan_jobs([job], store).to_run] == ["a"]


def test_a_result_many_pairs_share_is_read_and_verified_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from PIL import Image

    store = ResultStore(tmp_path / "results")
    jobs = [make_job(f"p{i}", "P", PHOTO, COVER, StyleParams(), "w") for i in range(50)]
    fields = {**jobs[0].record_fields(), "iterations": 1, "seconds": 1.0, "device": "cpu",
              "losses": {}}  # fmt: skip
    store.put(encode_png(Image.new("RGB", (8, 6))), 8, 6, fields)
    other = make_job("q", "Q", PHOTO, COVER, StyleParams(content_weight=3), "w")
    reads: list[str] = []
    get = ResultStore.get
    monkeypatch.setattr(ResultStore, "get", lambda self, key: reads.append(key) or get(self, key))
    plan = plan_jobs([*jobs, other, *jobs], store)
    assert [job.pair for job, _ in plan.reused] == [job.pair for job in jobs] * 2
    assert [job.pair for job in plan.to_run] == ["q"]
    assert sorted(reads) == sorted([jobs[0].key, other.key])


def test_the_key_carries_the_recipes_a_job_uses():
    """Face protection and auto weights are computed inside the job: their recipes' versions
    are in the key, so a new detector or judge repaints exactly the jobs that use them."""
    from covergen.nst.params import recipe_versions

    auto = StyleParams()  # auto weight and face protection, by default
    fixed = StyleParams(content_weight=1, protect_faces=False)
    assert set(recipe_versions(auto)) == {"faces", "judge", "auto"}
    assert recipe_versions(fixed) == {}
    assert set(recipe_versions(StyleParams(mode="photo"))) >= {"photoreal"}
    keys = {
        job_key(PHOTO.sha256, COVER.sha256, p, "w")
        for p in (auto, fixed, auto.replace(protect_faces=False), auto.replace(content_weight=4))
    }
    assert len(keys) == 4


def test_changing_how_auto_chooses_changes_the_key(monkeypatch: pytest.MonkeyPatch):
    """The candidates, the probe's length and the aim decide the weight: each is in the key."""
    from covergen.nst import params as P

    auto = StyleParams(protect_faces=False)
    keys = {job_key(PHOTO.sha256, COVER.sha256, auto, "w")}
    for name, value in (
        ("AUTO_AIM", 0.3),
        ("PROBE_ITERATIONS", 30),
        ("AUTO_CANDIDATES", (1.0, 3.0)),
    ):
        monkeypatch.setattr(P, name, value)
        keys.add(job_key(PHOTO.sha256, COVER.sha256, auto, "w"))
    assert len(keys) == 4
    protected = auto.replace(protect_faces=True)
    before = job_key(PHOTO.sha256, COVER.sha256, protected, "w")
    monkeypatch.setattr(P, "FACE_MEAN_CAP", 3.0)
    assert job_key(PHOTO.sha256, COVER.sha256, protected, "w") != before
