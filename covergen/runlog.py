"""The run log: every job's record in SQLite, read by `covergen status` and by the site.

One row per pair per build (built, reused, failed, cancelled, or skipped before planning),
so the latest row of a pair says what the site should show for it and why.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CovergenError

SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- build or rerun
    started REAL NOT NULL,
    finished REAL,
    profile TEXT,
    status TEXT NOT NULL,          -- running, finished, interrupted, failed, killed
    summary TEXT                   -- JSON counts
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    build INTEGER NOT NULL REFERENCES builds(id),
    pair TEXT NOT NULL,
    key TEXT,
    photo TEXT,                    -- SHA-256 of the photo's bytes, when fetched
    cover TEXT,                    -- SHA-256 of the cover's bytes, when fetched
    status TEXT NOT NULL,          -- built, reused, failed, cancelled
    device TEXT,
    iterations INTEGER,
    seconds REAL,
    losses TEXT,                   -- JSON
    params TEXT,                   -- JSON
    error TEXT,
    recorded REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_pair ON runs(pair, id);
"""

STATUSES = ("built", "reused", "failed", "cancelled")
COLUMNS = (
    "r.build, b.kind, r.pair, r.key, r.photo, r.cover, r.status, r.device, r.iterations,"
    " r.seconds, r.losses, r.params, r.error, r.recorded"
)


@dataclass(frozen=True)
class RunRecord:
    build: int
    kind: str
    pair: str
    key: str | None
    photo: str | None
    cover: str | None
    status: str
    device: str | None
    iterations: int | None
    seconds: float | None
    losses: dict[str, float]
    params: dict[str, Any]
    error: str | None
    recorded: float


class RunLog:
    """A small SQLite database; each call opens its own connection (safe across processes)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction; SQLite's errors (a full disk, a damaged file)
        become one clear CovergenError (SQLite rolls the transaction back)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from None
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
            with connection:
                yield connection
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            connection.close()

    def _error(self, exc: BaseException) -> CovergenError:
        return CovergenError(
            f"the run log {self.path} cannot be written ({exc})",
            field="runlog",
            hint="free disk space (or fix the folder's permissions) and build again; a damaged "
            "run log can be deleted: it only records history",
        )

    def start_build(self, kind: str = "build", profile: str | None = None) -> int:
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO builds (kind, started, profile, status) VALUES (?, ?, ?, 'running')",
                (kind, time.time(), profile),
            )
            return int(cursor.lastrowid or 0)

    def close_abandoned(self) -> int:
        """Mark builds still "running" as killed; return how many.

        Call it only while holding the cache's build lock: then no other build is running,
        so such a row belongs to a process that died without a word (SIGKILL, power loss).
        """
        if not self.path.exists():
            return 0
        with self._connect() as db:
            cursor = db.execute("UPDATE builds SET status = 'killed' WHERE status = 'running'")
            return cursor.rowcount

    def finish_build(self, build: int, status: str, summary: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE builds SET finished = ?, status = ?, summary = ? WHERE id = ?",
                (time.time(), status, json.dumps(summary), build),
            )

    def record(
        self,
        build: int,
        pair: str,
        status: str,
        *,
        key: str | None = None,
        photo: str | None = None,
        cover: str | None = None,
        device: str | None = None,
        iterations: int | None = None,
        seconds: float | None = None,
        losses: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (build, pair, key, photo, cover, status, device, iterations,"
                " seconds, losses, params, error, recorded)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    build,
                    pair,
                    key,
                    photo,
                    cover,
                    status,
                    device,
                    iterations,
                    seconds,
                    json.dumps(losses or {}),
                    json.dumps(params or {}),
                    error,
                    time.time(),
                ),
            )

    def latest(
        self, kind: str | None = "build", *, succeeded: bool = False
    ) -> dict[str, RunRecord]:
        """The newest record of each pair (from builds of ``kind``; None: any kind).

        ``succeeded``: the newest record that left a result (built or reused).
        """
        where = []
        if kind:
            where.append("b2.kind = ?")
        if succeeded:
            where.append("r2.status IN ('built', 'reused')")
        query = (
            f"SELECT {COLUMNS} FROM runs r JOIN builds b ON b.id = r.build"
            " WHERE r.id IN (SELECT MAX(r2.id) FROM runs r2 JOIN builds b2 ON b2.id = r2.build"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY r2.pair)"
        )
        if not self.path.exists():
            return {}
        with self._connect() as db:
            rows = db.execute(query, (kind,) if kind else ()).fetchall()
        return {row[2]: _record(row) for row in rows}

    def history(self, pair: str, limit: int | None = 20) -> list[RunRecord]:
        """A pair's records, newest first (``limit`` None: all of them)."""
        if not self.path.exists():
            return []
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM runs r"
                " JOIN builds b ON b.id = r.build WHERE r.pair = ? ORDER BY r.id DESC LIMIT ?",
                (pair, -1 if limit is None else limit),
            ).fetchall()
        return [_record(row) for row in rows]

    def last_build(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT id, kind, started, finished, profile, status, summary"
                " FROM builds ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        keys = ("id", "kind", "started", "finished", "profile", "status", "summary")
        out = dict(zip(keys, row, strict=True))
        out["summary"] = json.loads(out["summary"] or "{}")
        return out


def _record(row: tuple[Any, ...]) -> RunRecord:
    (
        build,
        kind,
        pair,
        key,
        photo,
        cover,
        status,
        device,
        iterations,
        seconds,
        losses,
        params,
        error,
        at,
    ) = row
    return RunRecord(
        build=build,
        kind=kind,
        pair=pair,
        key=key,
        photo=photo,
        cover=cover,
        status=status,
        device=device,
        iterations=iterations,
        seconds=seconds,
        losses=json.loads(losses or "{}"),
        params=json.loads(params or "{}"),
        error=error,
        recorded=at,
    )
