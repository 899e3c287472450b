"""The run log: every pair's outcome in every build, in SQLite; read by `status`, `list`,
`clean` and the site.

One row per pair per build (built, reused, failed, cancelled), so a pair's latest row says
what happened to it last and why. The columns are ``RunRecord``'s fields, listed once; rows
are checked when read, and a row that does not check out is skipped, never trusted.
Reading never writes: `status` works on a read-only cache and on no cache at all.

A full disk must not stop a build, nor make the next one forget: while a build holds the
log (``held``), space for its records is set aside in ``runs.journal`` first. When SQLite
cannot write (``database or disk is full``), that build's remaining records go to the
journal instead, in order, and the next build that holds the log adds them to the database
before anything else. Nothing is written to the database after the first record that went
to the journal, so the order of what happened is kept.

Several catalogs may share one cache (the sample catalog and ``samples/hard.yaml`` do), and
two of them may each have a pair called ``live``: every build row names its catalog (the
resolved path), and a ``RunLog`` opened for a catalog reads that catalog's rows only (and
rows from before catalogs were recorded, which any catalog may claim).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from .errors import CovergenError
from .outcome import RECORDED, BuildStatus
from .store import Check, Count, Duration, decode


@dataclass(frozen=True)
class RunRecord:
    """One pair's outcome in one build, as stored (and checked when read, by ``decode``)."""

    build: int
    kind: str  # of the build: build or rerun
    pair: str
    status: Annotated[str, Check(RECORDED.__contains__, "a run status")]  # see RECORDED
    key: str | None = None
    photo: str | None = None  # SHA-256 of the photo's bytes, when fetched
    cover: str | None = None  # SHA-256 of the cover's bytes, when fetched
    device: str | None = None
    iterations: Count | None = None
    seconds: Duration | None = None
    losses: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    # quality scores, values chosen automatically, faces protected (see ResultRecord.metrics)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    recorded: float = 0.0


# The columns of the runs table: every RunRecord field but those of the build it belongs to.
_JSON = ("losses", "params", "metrics")
_TYPES = {"build": "INTEGER", "iterations": "INTEGER", "seconds": "REAL", "recorded": "REAL"}
RUN_COLUMNS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name not in ("kind",))
# Rows as _record reads them: the build's kind, then RUN_COLUMNS.
_SELECT_RUNS = (
    f"SELECT b.kind, {', '.join(f'r.{name}' for name in RUN_COLUMNS)}"
    " FROM runs r JOIN builds b ON b.id = r.build"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- build or rerun
    started REAL NOT NULL,
    finished REAL,
    profile TEXT,
    status TEXT NOT NULL,          -- running, finished, interrupted, failed, killed
    summary TEXT,                  -- JSON counts
    catalog TEXT,                  -- the resolved path of the catalog built; NULL: older rows
    precision TEXT                 -- what the network ran in (bf16, fp32, tf32, fp64)
);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY);  -- columns: RUN_COLUMNS
"""


JOURNAL_BYTES = 4 * 1024 * 1024  # space set aside per build: some thousands of records


class _Journal:
    """Space set aside, before it is needed, for records the database cannot take.

    JSON lines written into a file allocated in advance (``posix_fallocate``: on a full
    disk the blocks are already ours), each flushed; the unused rest is zero bytes.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._offset = 0

    def reserve(self) -> bool:
        """Set the space aside (after what an earlier build left); False when it cannot be."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            # The entries end at the first zero byte (the unused rest), or at the file's end.
            written = os.pread(fd, os.fstat(fd).st_size, 0)
            self._offset = len(written.split(b"\0", 1)[0])
            size = self._offset + JOURNAL_BYTES
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            elif os.fstat(fd).st_size < size:
                os.pwrite(fd, b"\0" * (size - os.fstat(fd).st_size), os.fstat(fd).st_size)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def append(self, entry: Mapping[str, Any]) -> bool:
        """Write one entry; False when the space set aside is used up."""
        if self._fd is None:
            return False
        line = json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
        if self._offset + len(line) > os.fstat(self._fd).st_size:
            return False
        try:
            os.pwrite(self._fd, line, self._offset)
            os.fsync(self._fd)
        except OSError:
            return False
        self._offset += len(line)
        return True

    def close(self, *, keep: bool) -> None:
        """Close it; unless ``keep`` (entries to replay), give the space back."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not keep:
            with contextlib.suppress(OSError):
                self.path.unlink()


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The entries of a journal; a line cut short by a crash ends them."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    entries = []
    for line in data.split(b"\0", 1)[0].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            break
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


class RunLog:
    """A small SQLite database; each call opens its own connection (safe across processes).

    ``catalog``: the catalog file whose builds are recorded and read; None reads every
    catalog's rows (tools and tests that know there is one).
    """

    def __init__(self, path: Path, catalog: Path | None = None):
        self.path = Path(path)
        self.catalog = catalog_identity(catalog) if catalog is not None else None
        self._held: sqlite3.Connection | None = None
        self._journal: _Journal | None = None
        # Once a write went to the journal, every later one does (their order is kept).
        self.journaled = 0
        self.lost = 0  # records neither the database nor the journal could take
        self.failure = ""  # why the database could not be written
        self._next_temporary = -1  # build ids handed out while the database is unwritable
        self._moved: tuple[str, ...] | None = None  # see _scope

    # ----------------------------------------------------------------- connections

    @contextmanager
    def held(self) -> Iterator[RunLog]:
        """Keep one connection open for a whole build: opening, migrating and closing a
        database per record costs tens of milliseconds each (the close checkpoints the WAL).

        Also: what an earlier build could only journal is added first, and space is set
        aside for this build's records, should the disk fill up.
        """
        connection = self._open()
        self._held = connection
        self._replay_journal(connection)
        journal = _Journal(self.journal_path)
        self._journal = journal if journal.reserve() else None
        try:
            yield self
        finally:
            self._held = None
            connection.close()
            if self._journal is not None:
                self._journal.close(keep=self.journaled > 0)
                self._journal = None

    @property
    def journal_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".journal")

    def _replay_journal(self, connection: sqlite3.Connection) -> None:
        """Add what earlier builds journaled to the database, then remove the journal."""
        entries = _read_journal(self.journal_path)
        if not entries:
            with contextlib.suppress(OSError):
                self.journal_path.unlink()
            return
        builds: dict[int, int] = {}
        try:
            with connection:
                for entry in entries:
                    self._apply(connection, entry, builds)
        except sqlite3.Error as exc:
            # Still no space: this build's records follow the journaled ones, in order.
            self.failure = str(exc)
            self.journaled = len(entries)
            return
        except (KeyError, TypeError, ValueError):
            pass  # a damaged journal only records history: dropped, as a damaged row is
        self.journal_path.unlink()

    def _apply(
        self, db: sqlite3.Connection, entry: Mapping[str, Any], builds: dict[int, int]
    ) -> int:
        """Carry out one write (as journaled); ``builds`` maps temporary build ids to real
        ones. Returns the build id of a start."""
        op = entry.get("op")
        build = int(entry.get("build") or 0)
        build = builds.get(build, build)
        if op == "start":
            cursor = db.execute(
                "INSERT INTO builds (kind, started, profile, status, catalog, precision)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (
                    entry["kind"],
                    entry["started"],
                    entry.get("profile"),
                    entry.get("catalog"),
                    entry.get("precision"),
                ),
            )
            real = int(cursor.lastrowid or 0)
            if int(entry.get("build") or 0) < 0:
                builds[int(entry["build"])] = real
            return real
        if op == "finish":
            db.execute(
                "UPDATE builds SET finished = ?, status = ?, summary = ? WHERE id = ?",
                (entry["finished"], entry["status"], entry["summary"], build),
            )
        elif op == "runs":
            names = ", ".join(RUN_COLUMNS)
            marks = ", ".join("?" for _ in RUN_COLUMNS)
            rows = [(build, *row[1:]) for row in entry["rows"]]
            db.executemany(f"INSERT INTO runs ({names}) VALUES ({marks})", rows)
        return build

    def _perform(self, entry: dict[str, Any]) -> int:
        """Write to the database, or, once it has failed during a held build, to the journal
        (a build never stops for its log). Returns the build id of a start."""
        if not self.journaled:
            try:
                with self._write() as db:
                    return self._apply(db, entry, {})
            except CovergenError as exc:
                if self._journal is None:
                    raise
                self.failure = str(exc.message)
        if entry["op"] == "start":
            entry["build"] = self._next_temporary
            self._next_temporary -= 1
        if self._journal is not None and self._journal.append(entry):
            self.journaled += 1
        else:
            self.lost += 1
        return int(entry.get("build") or 0)

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc, writing=True) from None
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL sync never corrupts the log; a power cut may lose its last
            # records, which only record history.
            connection.execute("PRAGMA synchronous=NORMAL")
            _migrate(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise self._error(exc, writing=True) from None
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction, the schema made current; SQLite's errors (a full
        disk, a damaged file, a read-only folder) become one clear CovergenError."""
        connection = self._held or self._open()
        try:
            with connection:
                yield connection
        except sqlite3.Error as exc:
            raise self._error(exc, writing=True) from None
        finally:
            if connection is not self._held:
                connection.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection, or None when there is no run log yet.

        Reading a WAL database normally needs its shared-memory file, which a user who may
        not write the cache folder cannot create; then the log is read as an immutable
        snapshot instead (a build writing at that very moment may not show yet).
        """
        if not self.path.is_file():
            yield None
            return
        uri = self.path.resolve().as_uri()
        for mode in ("mode=ro", "immutable=1"):
            connection = None
            try:
                connection = sqlite3.connect(f"{uri}?{mode}", uri=True)
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
                break
            except sqlite3.Error as exc:
                if connection is not None:
                    connection.close()
                if mode == "immutable=1":
                    raise self._error(exc, writing=False) from None
        try:
            yield connection
        except sqlite3.Error as exc:
            raise self._error(exc, writing=False) from None
        finally:
            connection.close()

    def _error(self, exc: BaseException, *, writing: bool) -> CovergenError:
        done, fix = "written", "free disk space (or fix the folder's permissions) and build again"
        if not writing:
            done, fix = "read", "check the file's permissions"
        return CovergenError(
            f"the run log {self.path} cannot be {done} ({exc})",
            field="runlog",
            hint=f"{fix}; a damaged run log can be moved aside (the next build starts a new one; "
            "`covergen clean` waits until every catalog using the cache has built)",
        )

    # ----------------------------------------------------------------- builds

    def start_build(
        self, kind: str = "build", profile: str | None = None, precision: str | None = None
    ) -> int:
        return self._perform(
            {
                "op": "start",
                "kind": kind,
                "started": time.time(),
                "profile": profile,
                "catalog": self.catalog,
                "precision": precision,
            }
        )

    def close_abandoned(self) -> int:
        """Mark builds still "running" as killed; return how many.

        Call it only while holding the cache's build lock: then no other build is running,
        so such a row belongs to a process that died without a word (SIGKILL, power loss).
        """
        if not self.path.exists() or self.journaled:
            return 0
        try:
            with self._write() as db:
                cursor = db.execute("UPDATE builds SET status = 'killed' WHERE status = 'running'")
                return cursor.rowcount
        except CovergenError:
            if self._journal is None:
                raise
            return 0  # tried again by the next build

    def finish_build(self, build: int, status: str, summary: Mapping[str, Any]) -> None:
        if status not in BuildStatus.__members__.values():
            raise ValueError(f"unknown build status {status!r}")
        self._perform(
            {
                "op": "finish",
                "build": build,
                "finished": time.time(),
                "status": status,
                "summary": json.dumps(dict(summary)),
            }
        )

    def last_build(self) -> dict[str, Any] | None:
        with self._read() as db:
            if db is None:
                return None
            scope, args = self._scope("builds", db)
            precision = "precision" if "precision" in _columns(db) else "NULL"
            row = db.execute(
                f"SELECT id, kind, started, finished, profile, status, summary, {precision}"
                f" FROM builds WHERE {scope} ORDER BY id DESC LIMIT 1",
                args,
            ).fetchone()
        if row is None:
            return None
        keys = ("id", "kind", "started", "finished", "profile", "status", "summary", "precision")
        out = dict(zip(keys, row, strict=True))
        if not isinstance(out["precision"], str):
            out["precision"] = None
        try:
            summary = json.loads(out["summary"] or "{}")
        except ValueError:
            summary = {}
        out["summary"] = {
            k: v for k, v in summary.items() if isinstance(k, str) and isinstance(v, int)
        } if isinstance(summary, dict) else {}  # fmt: skip
        if out["status"] not in BuildStatus.__members__.values():
            out["status"] = "unknown"
        return out

    # ----------------------------------------------------------------- pairs

    def record(self, build: int, pair: str, status: str, **values: Any) -> None:
        """Append one pair's outcome; ``values`` are other RunRecord fields (unknown ones
        are ignored, so an outcome's own fields can be passed as they are)."""
        self.record_many(build, [{**values, "pair": pair, "status": status}])

    def record_many(self, build: int, outcomes: Sequence[Mapping[str, Any]]) -> None:
        """Append several pairs' outcomes (each a mapping of RunRecord fields) at once."""
        rows = []
        now = time.time()
        for values in outcomes:
            if values.get("status") not in RECORDED:
                raise ValueError(f"unknown run status {values.get('status')!r}")
            row = {name: values.get(name) for name in RUN_COLUMNS}
            row["build"] = build
            row["recorded"] = now
            for name in _JSON:
                row[name] = json.dumps(dict(values.get(name) or {}), sort_keys=True)
            rows.append(tuple(row[name] for name in RUN_COLUMNS))
        self._perform({"op": "runs", "build": build, "rows": rows})

    def latest(
        self, kind: str | None = "build", *, succeeded: bool = False
    ) -> dict[str, RunRecord]:
        """The newest record of each pair of this catalog (from builds of ``kind``; None:
        any kind). ``succeeded``: the newest record that left a result (built or reused)."""
        records = self._latest(kind, succeeded, lambda db: self._scope("b2", db))
        return {record.pair: record for record in records}

    def latest_elsewhere(
        self, kind: str | None = "build", *, succeeded: bool = False
    ) -> list[RunRecord]:
        """The newest record of each pair of every *other* catalog sharing this cache:
        what ``clean`` must keep although this catalog does not know those pairs."""
        if self.catalog is None:
            return []

        def scope(db: sqlite3.Connection) -> tuple[str, tuple[Any, ...]]:
            if "catalog" not in _columns(db):
                return "0", ()
            mine = self._mine(db)
            marks = ", ".join("?" for _ in mine)
            return f"b2.catalog IS NOT NULL AND b2.catalog NOT IN ({marks})", mine

        return self._latest(kind, succeeded, scope, per_catalog=True)

    def _latest(
        self,
        kind: str | None,
        succeeded: bool,
        scope: Callable[[sqlite3.Connection], tuple[str, tuple[Any, ...]]],
        *,
        per_catalog: bool = False,
    ) -> list[RunRecord]:
        def query(db: sqlite3.Connection) -> tuple[str, tuple[Any, ...]]:
            condition, scoped = scope(db)
            where, args = [condition], list(scoped)
            if kind:
                where.append("b2.kind = ?")
                args.append(kind)
            if succeeded:
                where.append("r2.status IN ('built', 'reused')")
            group = "b2.catalog, r2.pair" if per_catalog else "r2.pair"
            sql = (
                f"{_SELECT_RUNS} WHERE r.id IN (SELECT MAX(r2.id) FROM runs r2"
                f" JOIN builds b2 ON b2.id = r2.build WHERE {' AND '.join(where)}"
                f" GROUP BY {group})"
            )
            return sql, tuple(args)

        return self._query(query)

    def history(self, pair: str, limit: int | None = 20) -> list[RunRecord]:
        """A pair's records in this catalog, newest first (``limit`` None: all of them)."""

        def query(db: sqlite3.Connection) -> tuple[str, tuple[Any, ...]]:
            scope, args = self._scope("b", db)
            sql = f"{_SELECT_RUNS} WHERE r.pair = ? AND {scope} ORDER BY r.id DESC LIMIT ?"
            return sql, (pair, *args, -1 if limit is None else limit)

        return self._query(query)

    def _scope(self, table: str, db: sqlite3.Connection) -> tuple[str, tuple[Any, ...]]:
        """The SQL condition (on the builds table named ``table``) for this catalog's rows;
        a log from before catalogs were recorded (read, never migrated) has only shared rows.

        A catalog that has no rows of its own yet also claims the rows of catalogs whose
        file no longer exists: the same catalog, moved (with its folder) or renamed."""
        if self.catalog is None or "catalog" not in _columns(db):
            return "1", ()
        mine = self._mine(db)
        marks = ", ".join("?" for _ in mine)
        return f"({table}.catalog IS NULL OR {table}.catalog IN ({marks}))", mine

    def _mine(self, db: sqlite3.Connection) -> tuple[str, ...]:
        """This catalog and those whose rows it takes as its own history (see ``_scope``)."""
        if self._moved is None:
            own = db.execute("SELECT 1 FROM builds WHERE catalog = ? LIMIT 1", (self.catalog,))
            if own.fetchone() is not None:
                self._moved = ()
            else:
                others = db.execute(
                    "SELECT DISTINCT catalog FROM builds WHERE catalog IS NOT NULL"
                ).fetchall()
                self._moved = tuple(c for (c,) in others if not Path(c).exists())
        return (str(self.catalog), *self._moved)

    def _query(
        self, make: Callable[[sqlite3.Connection], tuple[str, tuple[Any, ...]]]
    ) -> list[RunRecord]:
        """The checked records a query gives; ``make`` writes it for the open database."""
        with self._read() as db:
            if db is None:
                return []
            try:
                rows = db.execute(*make(db)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such" in str(exc):  # a log from before a column existed: nothing yet
                    return []
                raise
        return [record for record in map(_record, rows) if record is not None]


def _columns(db: sqlite3.Connection, table: str = "builds") -> set[str]:
    """The columns of a table (a log read, never migrated, may lack the newer ones)."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def catalog_identity(catalog: Path) -> str:
    """How the run log names a catalog: its resolved path (two spellings, one catalog)."""
    return str(Path(catalog).resolve())


def _migrate(db: sqlite3.Connection) -> None:
    """Create the tables, and add the columns a newer RunRecord has to an older log."""
    db.executescript(SCHEMA)
    builds = _columns(db)
    for name in ("catalog", "precision"):
        if name not in builds:
            db.execute(f"ALTER TABLE builds ADD COLUMN {name} TEXT")
    have = _columns(db, "runs")
    for name in RUN_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE runs ADD COLUMN {name} {_TYPES.get(name, 'TEXT')}")
    db.execute("CREATE INDEX IF NOT EXISTS runs_pair ON runs(pair, id)")


def _record(row: tuple[Any, ...]) -> RunRecord | None:
    """A checked RunRecord from a row (kind first, then RUN_COLUMNS), or None."""
    kind, *rest = row
    values = dict(zip(RUN_COLUMNS, rest, strict=True), kind=kind)
    try:
        for name in _JSON:
            values[name] = json.loads(values[name] or "{}")
        return decode(RunRecord, values)
    except (TypeError, ValueError, RecursionError):  # a RecordError is a ValueError
        return None
