"""The run log: a full disk never stops a build, and the next build knows what happened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from covergen.build import BuildOptions, build
from covergen.runlog import RunLog


def run_build(project: Path, **options):
    return build(
        BuildOptions(
            catalog=project / "catalog.yaml",
            cache_dir=project / "cache",
            device="cpu",
            render_site=False,
            **options,
        )
    )


@pytest.fixture
def full_database(monkeypatch: pytest.MonkeyPatch):
    """From now on the run log's database cannot grow: SQLite's own 'database or disk is
    full', as on a full disk (its file stays as it is; the journal was set aside before)."""
    opened = RunLog._open

    def full(self: RunLog) -> sqlite3.Connection:
        connection = opened(self)
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
        return connection

    def make_full() -> None:
        monkeypatch.setattr(RunLog, "_open", full)

    return make_full


def test_a_full_disk_under_the_run_log_stops_no_pair_and_the_next_build_knows(
    project: Path, full_database, monkeypatch
):
    run_build(project, only=("alpha-one",))  # the database exists, with a little in it
    full_database()
    (project / "catalog.yaml").write_text(
        (project / "catalog.yaml").read_text().replace("content_weight: 2", "content_weight: 3")
    )
    summary = run_build(project)
    statuses = {o.pair: o.status for o in summary.outcomes}
    assert statuses == {"alpha-one": "reused", "beta-two": "built", "gamma-three": "built"}
    assert summary.notes and "full" in summary.notes[0] and "runs.journal" in summary.notes[0]
    journal = project / "cache" / "runs.journal"
    assert journal.is_file()
    # A reader meanwhile sees what the database holds (the build's start), never a crash.
    assert RunLog(project / "cache" / "runs.sqlite").last_build()["status"] == "running"

    # Space again: the next build adds what was journaled first, in order.
    monkeypatch.undo()
    log = RunLog(project / "cache" / "runs.sqlite", project / "catalog.yaml")
    with log.held():
        pass
    assert not journal.exists()
    latest = log.latest()
    assert {pair: r.status for pair, r in latest.items()} == {
        "alpha-one": "reused",
        "beta-two": "built",
        "gamma-three": "built",
    }
    assert latest["beta-two"].params["content_weight"] == 3
    last = log.last_build()
    assert last["status"] == "finished" and last["summary"]["built"] == 2


def test_a_build_started_while_the_database_was_full_is_replayed_whole(
    project: Path, full_database, monkeypatch
):
    run_build(project, only=("alpha-one",))
    full_database()
    # Nothing of the next build fits, its start included.
    monkeypatch.setattr(RunLog, "_write", _failing_write)
    summary = run_build(project, only=("beta-two",))
    assert [o.status for o in summary.outcomes] == ["built"] and summary.notes
    monkeypatch.undo()
    log = RunLog(project / "cache" / "runs.sqlite", project / "catalog.yaml")
    with log.held():
        pass
    assert log.latest()["beta-two"].status == "built"
    builds = (
        sqlite3.connect(project / "cache" / "runs.sqlite")
        .execute("SELECT id, status FROM builds ORDER BY id")
        .fetchall()
    )
    assert [status for _, status in builds] == ["finished", "finished"]


def _failing_write(self: RunLog):
    from covergen.errors import CovergenError

    raise CovergenError("database or disk is full", field="runlog")
