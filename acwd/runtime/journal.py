"""The journal: SQLite in WAL mode, written from a worker thread with group commit.

Changes that arrive within ``commit_interval_ms`` share one transaction. A request that changed
something is answered only after the transaction holding its change has committed, so every
acknowledged submit, accept, end and wrap-up is on disk. The journal keeps the latest state of
each agent and work item (not a log to replay), plus wrap-up records and the event history.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from acwd.core.config import JournalConfig
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.events import Event
from acwd.core.records import load_record
from acwd.core.views import WrapupRecord, to_plain

log = structlog.get_logger("acwd.journal")

SCHEMA_VERSION = 1
# Each entry upgrades the schema from the version before it; applied in order at start.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE agents (agent_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
        "CREATE TABLE items (work_id TEXT PRIMARY KEY, state TEXT NOT NULL,"
        " updated_at REAL NOT NULL, data TEXT NOT NULL)",
        "CREATE INDEX items_state ON items (state, updated_at)",
        "CREATE TABLE wrapups (id INTEGER PRIMARY KEY, work_id TEXT NOT NULL,"
        " agent_id TEXT NOT NULL, queue TEXT NOT NULL, ended_at REAL NOT NULL, data TEXT NOT NULL)",
        "CREATE INDEX wrapups_work ON wrapups (work_id)",
        "CREATE INDEX wrapups_ended ON wrapups (ended_at)",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, at REAL NOT NULL, type TEXT NOT NULL,"
        " data TEXT NOT NULL)",
        "CREATE INDEX events_at ON events (at)",
    ),
}
FINISHED_KEPT_S = 86_400.0  # finished items reloaded at start, for work.get and idempotency


class JournalRefused(Exception):
    """The database cannot be used; the message says what to do."""


@dataclass(slots=True)
class Recovered:
    agents: list[dict[str, Any]]
    items: list[dict[str, Any]]
    seconds: float


@dataclass(slots=True)
class Commit:
    """One group commit; requests whose changes it holds wait for it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise DomainError(ErrorCode.INTERNAL, f"The change could not be stored: {self.error}.")


def _dumps(value: Any) -> str:
    # Never raises: a value JSON has no word for (NaN, an unexpected type) must not stop the
    # journal; Python's json reads NaN and Infinity back, and anything else is kept as text.
    return json.dumps(value, separators=(",", ":"), default=str)


class Journal:
    def __init__(self, config: JournalConfig, inline: bool | None = None) -> None:
        self.config = config
        self.path = config.path
        # In-memory journals write on the event loop: no disk wait, and no worker thread, whose
        # wait a mock clock would otherwise fill by jumping to the next timer.
        self.inline = config.path == ":memory:" if inline is None else inline
        self.interval = config.commit_interval_ms / 1000.0
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)  # one statement at a time on the connection
        self._agents: dict[str, Callable[[], dict[str, Any]]] = {}
        self._item_source: Callable[[], Iterable[dict[str, Any]]] | None = None
        self._items_dirty = False
        self._retry_items: dict[str, tuple[str, str, float, str]] = {}
        self._wrapups: list[WrapupRecord] = []
        self._events: list[Event] = []  # encoded in the worker thread, off the event loop
        self._next = Commit()
        self._wake = anyio.Event()
        self.on_commit: Callable[[float], None] | None = None
        self.failing: str | None = None  # the reason writes fail now, for health and logs

    # -- opening and recovery ------------------------------------------------------------------

    def open(self) -> Recovered:
        """Open (creating) the database, upgrade its schema, and read back what it holds."""
        started = time.perf_counter()
        if self.path != ":memory:":
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.config.synchronous.upper()}")
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            self._migrate(db)
            agents = [json.loads(r[0]) for r in db.execute("SELECT data FROM agents")]
            horizon = time.time() - FINISHED_KEPT_S
            items = [
                json.loads(r[0])
                for r in db.execute(
                    "SELECT data FROM items WHERE state NOT IN ('completed', 'cancelled')"
                    " OR updated_at >= ?",
                    (horizon,),
                )
            ]
        except sqlite3.DatabaseError as exc:
            raise JournalRefused(
                f"{self.path} is not a usable acwd journal ({exc}). Restore it from a backup "
                "(acwd backup), or move it aside to start empty."
            ) from None
        self._db = db
        self.prune()
        return Recovered(agents, items, time.perf_counter() - started)

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise JournalRefused(
                f"{self.path} has schema version {version}, newer than this acwd knows "
                f"({SCHEMA_VERSION}); run the acwd release that wrote it, or a newer one."
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN")
            for statement in MIGRATIONS[target]:
                db.execute(statement)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version VALUES (?)", (target,))
            db.execute("COMMIT")

    def prune(self) -> int:
        """Drop events older than the retention period (wrap-up records are kept)."""
        days = self.config.retention_days
        if not days or self._db is None:
            return 0
        cur = self._db.execute("DELETE FROM events WHERE at < ?", (time.time() - days * 86400,))
        return cur.rowcount

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- what to store -------------------------------------------------------------------------

    def track_items(self, source: Callable[[], Iterable[dict[str, Any]]]) -> None:
        """``source`` gives the changed items as records when a commit is being prepared."""
        self._item_source = source

    def agent_changed(self, agent_id: str, dump: Callable[[], dict[str, Any]]) -> Commit:
        self._agents[agent_id] = dump
        return self._pending()

    def items_changed(self) -> Commit:
        self._items_dirty = True
        return self._pending()

    def wrapup(self, record: WrapupRecord) -> Commit:
        self._wrapups.append(record)
        return self._pending()

    def event(self, event: Event) -> None:
        self._events.append(event)
        self._wake.set()

    def _pending(self) -> Commit:
        self._wake.set()
        return self._next

    # -- writing -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._prune_daily)
            task_status.started()
            await self._commit_loop()

    async def _prune_daily(self) -> None:
        while True:
            await anyio.sleep(86_400)
            try:
                removed = await anyio.to_thread.run_sync(self.prune, limiter=self._limiter)
                log.info("pruned old events", removed=removed)
            except sqlite3.Error as exc:
                log.error("pruning events failed", reason=str(exc))

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.interval > 0:
                await anyio.sleep(self.interval)  # the group-commit window
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything changed so far, now."""
        commit, self._next = self._next, Commit()
        agents, self._agents = self._agents, {}
        wrapups, self._wrapups = self._wrapups, []
        events, self._events = self._events, []
        dirty, self._items_dirty = self._items_dirty, False
        rows_agents = [(agent_id, _dumps(dump())) for agent_id, dump in agents.items()]
        retry, self._retry_items = self._retry_items, {}
        if dirty and self._item_source is not None:
            now = time.time()
            for r in self._item_source():
                retry[r["work_id"]] = (r["work_id"], r["state"], now, _dumps(r))
        rows_items = list(retry.values())
        rows_wrapups = [
            (r.work_id, r.agent_id, r.queue, r.acw_ended_at, _dumps(to_plain(r))) for r in wrapups
        ]
        started = time.perf_counter()
        try:
            rows = (rows_agents, rows_items, rows_wrapups, events)
            if self.inline:
                self._write(*rows)
            else:
                await anyio.to_thread.run_sync(self._write, *rows, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            if self.failing is None:
                log.error("journal write failed; will retry", path=self.path, reason=reason)
            self.failing = reason
            # Keep what was not stored for the next attempt (newer changes win).
            for agent_id, dump in agents.items():
                self._agents.setdefault(agent_id, dump)
            self._wrapups[:0] = wrapups
            self._events[:0] = events
            self._retry_items = {row[0]: row for row in rows_items}
            commit.error = reason
            commit.done.set()
            await anyio.sleep(0.5)
            self._wake.set()
            return
        if self.failing is not None:
            log.info("journal writes succeed again", path=self.path)
            self.failing = None
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)
        commit.done.set()

    def _write(
        self,
        agents: list[tuple[str, str]],
        items: list[tuple[str, str, float, str]],
        wrapups: list[tuple[str, str, str, float, str]],
        events: list[Event],
    ) -> None:
        db = self._db
        assert db is not None, "journal is not open"
        history = [(e.at, e.type, _dumps(to_plain(e.to_wire()))) for e in events]
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO agents VALUES (?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET data = excluded.data",
                agents,
            )
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?) ON CONFLICT(work_id) DO UPDATE SET "
                "state = excluded.state, updated_at = excluded.updated_at, data = excluded.data",
                items,
            )
            db.executemany(
                "INSERT INTO wrapups (work_id, agent_id, queue, ended_at, data) "
                "VALUES (?, ?, ?, ?, ?)",
                wrapups,
            )
            db.executemany("INSERT INTO events (at, type, data) VALUES (?, ?, ?)", history)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- reading -------------------------------------------------------------------------------

    async def wrapups_of(self, work_id: str) -> list[WrapupRecord]:
        rows = await self._query(
            "SELECT data FROM wrapups WHERE work_id = ? ORDER BY id", (work_id,)
        )
        return [load_record(json.loads(r[0])) for r in rows]

    async def wrapup_list(
        self,
        since: float | None = None,
        until: float | None = None,
        agent_id: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
    ) -> list[WrapupRecord]:
        """Records whose ACW ended in [since, until), oldest first."""
        sql, args = self._wrapup_filter(since, until, agent_id, queue)
        sql += " ORDER BY ended_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = await self._query(sql, tuple(args))
        return [load_record(json.loads(r[0])) for r in rows]

    @staticmethod
    def _wrapup_filter(
        since: float | None, until: float | None, agent_id: str | None, queue: str | None
    ) -> tuple[str, list[Any]]:
        sql, args = "SELECT data FROM wrapups WHERE 1 = 1", []
        for clause, value in (
            (" AND ended_at >= ?", since),
            (" AND ended_at < ?", until),
            (" AND agent_id = ?", agent_id),
            (" AND queue = ?", queue),
        ):
            if value is not None:
                sql += clause
                args.append(value)
        return sql, args

    async def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            assert self._db is not None
            return self._db.execute(sql, args).fetchall()

        try:
            if self.inline:
                return run()
            return await anyio.to_thread.run_sync(run, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise DomainError(
                ErrorCode.INTERNAL, f"The journal could not be read: {exc}."
            ) from None


# -- offline tools: backup and export ------------------------------------------------------------


def backup(path: str, dest: str) -> int:
    """Copy the journal with SQLite's online backup (safe while the daemon runs); returns pages."""
    if not os.path.exists(path):
        raise JournalRefused(f"{path} does not exist; check [journal] path.")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
        return int(target.execute("PRAGMA page_count").fetchone()[0])
    finally:
        target.close()
        source.close()


EXPORT_COLUMNS = (
    "work_id",
    "agent_id",
    "queue",
    "channel",
    "disposition",
    "notes",
    "fields",
    "follow_ups",
    "talk_s",
    "acw_started_at",
    "acw_ended_at",
    "acw_seconds",
    "extensions",
    "reason",
)


def export_wrapups(
    path: str,
    out: Any,
    fmt: str = "jsonl",
    since: float | None = None,
    until: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Stream wrap-up records ended in [since, until) to ``out`` as CSV or JSON lines."""
    import csv

    if not os.path.exists(path):
        raise JournalRefused(f"{path} does not exist; check [journal] path.")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sql, args = Journal._wrapup_filter(since, until, None, None)
        total = db.execute(sql.replace("SELECT data", "SELECT count(*)"), args).fetchone()[0]
        writer = csv.DictWriter(out, EXPORT_COLUMNS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        done = 0
        for (data,) in db.execute(sql + " ORDER BY ended_at, id", args):
            if writer is not None:
                row = json.loads(data)
                row["fields"] = _dumps(row["fields"])
                row["follow_ups"] = _dumps(row["follow_ups"])
                writer.writerow(row)
            else:
                out.write(data + "\n")
            done += 1
            if progress is not None and (done % 1000 == 0 or done == total):
                progress(done, total)
        return done
    finally:
        db.close()
