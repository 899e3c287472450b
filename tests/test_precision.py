"""`precision: auto` is decided once per machine, kept, shown, and part of a result's key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covergen import cli, precision
from covergen.build import BuildOptions, build
from covergen.nst import StyleParams
from covergen.plan import job_key


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("COVERGEN_CACHE_HOME", str(folder))
    return folder


@pytest.fixture
def speedups(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The bf16 measurement, scripted: the n-th call gives the n-th value (cycling)."""
    values: list[float] = []
    calls = 0

    def measured(repeats: int = 3) -> float:
        nonlocal calls
        calls += 1
        return values[(calls - 1) % len(values)]

    monkeypatch.setattr("covergen.nst.precision.cpu_bf16_speedup", measured)
    return values


def test_a_cpu_near_the_cut_off_gets_one_answer_for_good(home: Path, speedups: list[float]):
    speedups.extend([1.55, 1.45, 1.55, 1.45])  # a busy moment flips a measurement
    first = precision.resolve_precision("auto", "cpu")
    assert first == "bf16"
    assert [precision.resolve_precision("auto", "cpu") for _ in range(5)] == ["bf16"] * 5
    record = precision.recorded_cpu_precision()
    assert record is not None and record.speedup == 1.55 and "bf16" in record.describe()
    assert (home / precision.MACHINE_FILE).is_file()


def test_another_cpu_or_torch_build_is_measured_anew(
    home: Path, speedups: list[float], monkeypatch: pytest.MonkeyPatch
):
    speedups.extend([3.0, 0.8])
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_identity", lambda: "another CPU | torch 9")
    assert precision.resolve_precision("auto", "cpu") == "fp32"


@pytest.mark.parametrize(
    "damage",
    [
        b"not json",
        b"[]",
        b'{"cpu_precision": "bf16"}',
        b'{"cpu_precision": {"choice": "fp16"}}',  # not an answer, and fields missing
        b'{"cpu_precision": {"choice": "bf16", "speedup": "9", "cpu": "?", "measured_at": 0}}',
    ],
)
def test_a_damaged_machine_record_is_measured_again_and_replaced(
    home: Path, speedups: list[float], damage: bytes
):
    home.mkdir()
    (home / precision.MACHINE_FILE).write_bytes(damage)
    assert precision.recorded_cpu_precision() is None
    speedups.append(0.9)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    record = precision.recorded_cpu_precision()
    assert record is not None and record.choice == "fp32" and record.speedup == 0.9


def test_a_record_with_fields_a_newer_covergen_adds_is_still_this_machines_answer(
    home: Path, speedups: list[float]
):
    speedups.append(2.0)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    path = home / precision.MACHINE_FILE
    data = json.loads(path.read_text())
    data["cpu_precision"]["threads"] = 8
    path.write_text(json.dumps(data))
    speedups[:] = [0.5]  # a measurement now would say fp32
    assert precision.resolve_precision("auto", "cpu") == "bf16"


def test_what_auto_means_elsewhere_needs_no_measurement(home: Path, speedups: list[float]):
    speedups.append(5.0)
    assert precision.resolve_precision("fp64", "cpu") == "fp64"
    assert precision.resolve_precision("auto", "gpu") == "tf32"
    assert precision.resolve_precision("auto", "cpu", measure=False) == "fp32"  # a dry run
    assert precision.recorded_cpu_precision() is None


def test_the_precision_is_part_of_a_result_key_and_fp32_keys_are_kept():
    params = StyleParams()
    args = ("a" * 64, "b" * 64, params, "weights")
    assert job_key(*args) == job_key(*args, "fp32")
    assert len({job_key(*args, p) for p in ("fp32", "bf16", "tf32")}) == 3


def test_the_engine_and_the_machine_record_share_one_cut_off():
    from covergen.nst import precision as engine_precision

    assert engine_precision.CPU_BF16_GAIN == precision.CPU_BF16_GAIN


def test_builds_in_any_process_use_the_recorded_answer_and_status_shows_it(
    project: Path, home: Path, speedups: list[float], capsys
):
    speedups.extend([1.2])  # fp32 here
    options = BuildOptions(
        catalog=project / "catalog.yaml", cache_dir=project / "cache", device="cpu",
        render_site=False, only=("alpha-one",),
    )  # fmt: skip
    first = build(options)
    speedups[:] = [9.0]  # later measurements would say bf16: none is made
    again = build(options)
    assert [o.status for o in first.outcomes] == ["built"]
    assert [o.status for o in again.outcomes] == ["reused"]
    assert first.outcomes[0].key == again.outcomes[0].key
    assert cli.main(["status", "--catalog", str(options.catalog), "--cache-dir",
                     str(options.cache_dir)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "precision fp32" in out and "precision auto on this machine's CPU: fp32" in out
