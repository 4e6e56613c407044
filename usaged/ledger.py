"""Ledger: the persisted state, one SQLite database (WAL) in the state directory.

Tables (schema version in PRAGMA user_version, see docs/state.md):
- files:    one row per transcript path: identity, committed offset, bad lines, last error.
- events:   one row per usage event, keyed by the source's 64-bit dedup key, with its price.
- buckets:  running sums per (quarter hour, source, agent, provider, model), kept in step with
            events inside the same transaction, so metrics never re-read all events.
- sessions: running sums per (source, agent, session).
- meta:     heartbeat and bookkeeping (key/value).

A batch of events and the new offset of the file they came from commit in ONE transaction:
a crash at any point neither loses nor double-counts. Spend is never taken back: nothing here
deletes events when their file shrinks, moves or disappears. Corrections made by the dedup rules
(a larger snapshot of a key; a Claude Code sidechain replay recognised when its parent row
arrives) change the events themselves, and the running sums move with them.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from usaged import failpoints
from usaged.errors import StateError
from usaged.values import CostSource, FileCursor, FileIdentity, PricedEvent, Tokens, UsageEvent

SCHEMA_VERSION = 3
QUARTER = 900  # seconds: every zone offset in use is a multiple of 15 minutes
UNDATED_Q = -(1 << 62)  # bucket of events without a usable timestamp (all-time only)

_DDL = """
CREATE TABLE files (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    head_hash BLOB NOT NULL, tail_hash BLOB NOT NULL, offset INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, bad_lines INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL DEFAULT 0, gone INTEGER NOT NULL DEFAULT 0, error TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX files_inode ON files (dev, ino);
CREATE TABLE events (
    key INTEGER PRIMARY KEY, source TEXT NOT NULL, ts REAL, agent TEXT NOT NULL,
    session TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_write INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL, web_search INTEGER NOT NULL,
    cost REAL, cost_source TEXT NOT NULL, line_cost REAL,
    msg_id TEXT, request_id TEXT, sidechain INTEGER NOT NULL DEFAULT 0, path TEXT NOT NULL
);
CREATE INDEX events_ts ON events (ts);
CREATE TABLE buckets (
    q INTEGER NOT NULL, source TEXT NOT NULL, agent TEXT NOT NULL, provider TEXT NOT NULL,
    model TEXT NOT NULL, calls INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,
    cache_read INTEGER NOT NULL, cache_write INTEGER NOT NULL, cost REAL NOT NULL,
    unpriced_calls INTEGER NOT NULL, unpriced_tokens INTEGER NOT NULL,
    PRIMARY KEY (q, source, agent, provider, model)
) WITHOUT ROWID;
CREATE TABLE sessions (
    source TEXT NOT NULL, agent TEXT NOT NULL, session TEXT NOT NULL, calls INTEGER NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_write INTEGER NOT NULL, cost REAL NOT NULL, unpriced_calls INTEGER NOT NULL,
    unpriced_tokens INTEGER NOT NULL, last_ts REAL,
    PRIMARY KEY (source, agent, session)
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

# Migrations: MIGRATIONS[n] brings a database from version n to n + 1.
MIGRATIONS: dict[int, str] = {
    0: _DDL,
    # v2: find the events of a Claude Code message id (sidechain replays) without a full scan.
    1: "CREATE INDEX events_msg_id ON events (msg_id) WHERE msg_id IS NOT NULL",
    # v3: events in arrival order (rowid) with the dedup key as a unique index: new events are
    # appended instead of landing on random pages (a cold scan writes half as many pages); and
    # the top sessions, the files with an error and the file counts are read from indexes
    # instead of sorting or scanning every row on every write.
    2: """
CREATE TABLE events_v3 (
    id INTEGER PRIMARY KEY, key INTEGER NOT NULL UNIQUE, source TEXT NOT NULL, ts REAL,
    agent TEXT NOT NULL, session TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_write INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL, web_search INTEGER NOT NULL,
    cost REAL, cost_source TEXT NOT NULL, line_cost REAL,
    msg_id TEXT, request_id TEXT, sidechain INTEGER NOT NULL DEFAULT 0, path TEXT NOT NULL
);
INSERT INTO events_v3 (key, source, ts, agent, session, provider, model, input, output,
    cache_read, cache_write, cache_write_1h, web_search, cost, cost_source, line_cost, msg_id,
    request_id, sidechain, path)
    SELECT key, source, ts, agent, session, provider, model, input, output, cache_read,
    cache_write, cache_write_1h, web_search, cost, cost_source, line_cost, msg_id, request_id,
    sidechain, path FROM events ORDER BY key;
DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_msg_id ON events (msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX sessions_total ON sessions ((input + output + cache_read + cache_write) DESC,
    session);
CREATE INDEX files_errors ON files (path) WHERE error IS NOT NULL;
CREATE INDEX files_figures ON files (gone, bad_lines, error)
""",
}

_EVENT_COLS = ("key, source, ts, agent, session, provider, model, input, output, cache_read, "
               "cache_write, cache_write_1h, web_search, cost, cost_source, line_cost, msg_id, "
               "request_id, sidechain, path")


@dataclass(frozen=True, slots=True)
class Sums:
    """Additive figures of a group of events (one bucket row, one session, a window)."""

    calls: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0
    unpriced_calls: int = 0
    unpriced_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def __add__(self, o: Sums) -> Sums:
        return Sums(self.calls + o.calls, self.input + o.input, self.output + o.output,
                    self.cache_read + o.cache_read, self.cache_write + o.cache_write,
                    self.cost + o.cost, self.unpriced_calls + o.unpriced_calls,
                    self.unpriced_tokens + o.unpriced_tokens)

    def __neg__(self) -> Sums:
        return Sums(-self.calls, -self.input, -self.output, -self.cache_read, -self.cache_write,
                    -self.cost, -self.unpriced_calls, -self.unpriced_tokens)

    @staticmethod
    def of(tokens: Tokens, cost: float | None) -> Sums:
        if cost is None:
            return Sums(1, tokens.input, tokens.output, tokens.cache_read, tokens.cache_write,
                        0.0, 1, tokens.total)
        return Sums(1, tokens.input, tokens.output, tokens.cache_read, tokens.cache_write, cost)


@dataclass(frozen=True, slots=True)
class ModelTotal:
    """All-time sums of one (source, provider, model): the Prometheus counters."""

    source: str
    provider: str
    model: str
    sums: Sums


@dataclass(frozen=True, slots=True)
class BucketRow:
    q: int
    source: str
    agent: str
    provider: str
    model: str
    sums: Sums


@dataclass(frozen=True, slots=True)
class EventRow:
    ts: float | None
    source: str
    agent: str
    provider: str
    model: str
    sums: Sums


@dataclass(frozen=True, slots=True)
class SessionRow:
    source: str
    agent: str
    session: str
    sums: Sums
    last_ts: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What metrics need, read in one read transaction. Figures after `now` are left out.

    `buckets` hold whole quarter hours ending at or before `now`; `edge_events` are the raw
    events of the quarter hours that `now` and each cut point fall into, so windows that start
    or end inside a quarter hour stay exact.
    """

    now: float
    buckets: tuple[BucketRow, ...]
    edge_events: tuple[EventRow, ...]
    edge_quarters: frozenset[int]
    sessions: tuple[SessionRow, ...]
    sessions_over: tuple[SessionRow, ...]


@dataclass(frozen=True, slots=True)
class CommitResult:
    new: int
    dup: int
    upgraded: int
    replays_removed: int = 0  # counted sidechain replays taken out when their parent arrived


# SQLite result codes of a write that may succeed later: busy, locked, I/O error, disk full.
TRANSIENT_CODES = frozenset({5, 6, 10, 13})


def transient(exc: BaseException) -> bool:
    """A failed state write worth retrying (the disk is full, an I/O error, a busy lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and isinstance(code, int) and (
        code & 0xFF) in TRANSIENT_CODES


def damaged(exc: sqlite3.DatabaseError) -> bool:
    """The file is not a sound database (SQLITE_CORRUPT, SQLITE_NOTADB): set it aside."""
    code = getattr(exc, "sqlite_errorcode", None)
    return not isinstance(code, int) or (code & 0xFF) in (11, 26)


# A few quick attempts for every write; past them the daemon backs off and rescans.
_retry_write = retry(retry=retry_if_exception(transient), stop=stop_after_attempt(3),
                     wait=wait_exponential(multiplier=0.05, max=0.5), reraise=True)


def quarter(ts: float | None) -> int:
    return UNDATED_Q if ts is None else math.floor(ts / QUARTER)


class Ledger:
    """The state database. Open with `Ledger.open` (read-write) or `Ledger.open_readonly`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.lowest_touched: int | None = None  # see take_lowest_touched

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (or create) read-write. StateError when the file cannot be a usable ledger
        (empty, damaged, foreign, newer): the caller may set it aside. Any other failure (disk
        full, locked, unopenable) is raised as it is: the file may be fine and must be kept."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists() and path.stat().st_size == 0:  # SQLite would take it for a new one
            raise StateError(f"{path}: an empty file, not a usaged state database")
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            ledger = cls(conn, path)
            ledger._migrate()
            ledger._check()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and damaged(exc):
                raise StateError(f"{path}: not a usable usaged state database ({exc})") from None
            raise
        return ledger

    @classmethod
    def open_readonly(cls, path: Path) -> Ledger:
        if not path.exists():
            raise StateError(f"{path}: no state database (the daemon has never run here)")
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   isolation_level=None, timeout=10, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: not a usable usaged state database ({exc})") from None
        if not 1 <= version <= SCHEMA_VERSION:  # older versions hold every column read here
            raise StateError(f"{path}: state schema version {version}, this usaged reads "
                             f"versions 1 to {SCHEMA_VERSION}")
        return cls(conn, path)

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(f"{self.path}: state schema version {version} is newer than this "
                             f"usaged ({SCHEMA_VERSION}); upgrade usaged or remove the file")
        if version == 0 and self.conn.execute(
                "SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StateError(f"{self.path}: a SQLite database, but not usaged's")
        while version < SCHEMA_VERSION:
            with self.transaction():
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                version += 1
                self.conn.execute(f"PRAGMA user_version = {version}")

    def _check(self) -> None:
        """Damaged pages behind a valid header would fail some later query: find them now."""
        found = [str(r[0]) for r in self.conn.execute("PRAGMA quick_check(5)")]
        if found != ["ok"]:
            raise StateError(f"{self.path}: damaged state database ({'; '.join(found)})")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: a failing COMMIT (disk full) rolls back too, leaving no half-open
        transaction behind for the next write."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            failpoints.hit("ledger_before_commit")
            failpoints.db_error("ledger_write")
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    # -- files -----------------------------------------------------------------------------

    def cursor(self, path: str) -> FileCursor | None:
        """Where reading `path` stopped; None for a path never read (a row that only records
        why it could not be read has inode 0)."""
        row = self.conn.execute(
            "SELECT path, source, dev, ino, head_hash, tail_hash, offset, size, mtime_ns, "
            "bad_lines, events FROM files WHERE path = ? AND ino != 0", (path,)).fetchone()
        return _cursor(row) if row else None

    def cursors(self) -> dict[str, FileCursor]:
        rows = self.conn.execute(
            "SELECT path, source, dev, ino, head_hash, tail_hash, offset, size, mtime_ns, "
            "bad_lines, events FROM files WHERE gone = 0").fetchall()
        return {r[0]: _cursor(r) for r in rows}

    def stat_marks(self) -> dict[str, tuple[int, int, int, int, int] | None]:
        """(device, inode, size, mtime_ns, offset) of every tracked file not gone, None for a
        file with an error: what a stat sweep compares with to skip unchanged files unopened."""
        return {r[0]: None if r[6] else (r[1], r[2], r[3], r[4], r[5]) for r in self.conn.execute(
            "SELECT path, dev, ino, size, mtime_ns, offset, error IS NOT NULL FROM files "
            "WHERE gone = 0")}

    def moved_from(self, dev: int, ino: int, exclude: str) -> FileCursor | None:
        """A tracked file with this identity whose path is gone: the file was renamed."""
        rows = self.conn.execute(
            "SELECT path, source, dev, ino, head_hash, tail_hash, offset, size, mtime_ns, "
            "bad_lines, events FROM files WHERE dev = ? AND ino = ? AND path != ?",
            (dev, ino, exclude)).fetchall()
        for row in rows:
            if _gone(str(row[0]), dev, ino):
                return _cursor(row)
        return None

    @_retry_write
    def mark_gone(self, paths: Iterable[str]) -> None:
        """Files no longer on disk: their usage stays; a path that is gone is no problem."""
        with self.transaction():
            self.conn.executemany(
                "UPDATE files SET gone = 1, error = NULL, updated_at = ? WHERE path = ?",
                [(time.time(), p) for p in paths])

    @_retry_write
    def clear_error(self, path: str) -> None:
        """`path` can be read again: no longer a problem. A row that only recorded the problem
        (never read: inode 0) goes away."""
        with self.transaction():
            self.conn.execute("DELETE FROM files WHERE path = ? AND ino = 0 AND events = 0",
                              (path,))
            self.conn.execute("UPDATE files SET error = NULL, updated_at = ? WHERE path = ?",
                              (time.time(), path))

    @_retry_write
    def set_file_error(self, path: str, source: str, error: str | None) -> None:
        with self.transaction():
            updated = self.conn.execute("UPDATE files SET error = ?, updated_at = ? WHERE path = ?",
                                        (error, time.time(), path)).rowcount
            if not updated and error is not None:
                self.conn.execute(
                    "INSERT INTO files (path, source, dev, ino, head_hash, tail_hash, offset, "
                    "size, mtime_ns, error, updated_at) VALUES (?, ?, 0, 0, x'', x'', 0, 0, 0, "
                    "?, ?)", (path, source, error, time.time()))

    # -- the one write path ----------------------------------------------------------------

    @_retry_write
    def commit_batch(self, cursor: FileCursor, events: Sequence[PricedEvent],
                     reset: bool = False) -> CommitResult:
        """Upsert the events and store the file's new cursor, in ONE transaction.

        `reset` says the file is being read again from 0: its bad-line count starts over.
        The largest snapshot of a key wins (on a tie, the earliest timestamp); a larger one
        arriving later replaces the row and the running sums move by the difference only.
        """
        rows = [event_values(p.event, p.cost, p.cost_source) for p in events]
        return self.commit_files([(cursor, rows, reset)])[0]

    def commit_files(self, batches: Sequence[tuple[FileCursor, Sequence[EventValues], bool]]
                     ) -> list[CommitResult]:
        """Several files' batches and their new cursors, in ONE transaction: the rules of
        `commit_batch` applied batch after batch, event after event. Events come as
        `event_values` tuples (what parse workers send)."""
        with self.transaction():
            book = _Book(self.conn)
            book.load(row for _, rows, _ in batches for row in rows)
            results = []
            for cursor, rows, _ in batches:
                result = book.apply(rows, cursor.path)
                results.append(result)
                if result.upgraded or result.replays_removed:
                    # a correction may empty a bucket or session row: drop it now, as a
                    # transaction of its own would, before later batches add to it again
                    self._apply(book.deltas, book.sdeltas)
                    self._drop_empty(book.deltas, book.sdeltas)
                    book.deltas, book.sdeltas = {}, {}
            book.flush()
            self._apply(book.deltas, book.sdeltas)
            for (cursor, _, reset), result in zip(batches, results, strict=True):
                self._store_cursor(cursor, result.new + result.upgraded, reset)
        return results

    def _drop_empty(self, deltas: dict[BucketKey, list[float]],
                    sdeltas: dict[SessionKey, list[Any]]) -> None:
        """Bucket and session rows left without calls by a correction hold nothing: drop them."""
        self.conn.executemany(
            "DELETE FROM buckets WHERE q = ? AND source = ? AND agent = ? AND provider = ? "
            "AND model = ? AND calls <= 0", list(deltas))
        self.conn.executemany(
            "DELETE FROM sessions WHERE source = ? AND agent = ? AND session = ? AND calls <= 0",
            list(sdeltas))

    def _store_cursor(self, c: FileCursor, counted: int, reset: bool) -> None:
        ident = c.identity
        self.conn.execute(
            "INSERT INTO files (path, source, dev, ino, head_hash, tail_hash, offset, size, "
            "mtime_ns, bad_lines, events, gone, error, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?) "
            "ON CONFLICT (path) DO UPDATE SET source = excluded.source, dev = excluded.dev, "
            "ino = excluded.ino, head_hash = excluded.head_hash, tail_hash = excluded.tail_hash, "
            "offset = excluded.offset, size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "bad_lines = CASE WHEN ? THEN excluded.bad_lines "
            "ELSE files.bad_lines + excluded.bad_lines END, "
            "events = files.events + excluded.events, gone = 0, error = NULL, "
            "updated_at = excluded.updated_at",
            (c.path, c.source, ident.dev, ident.ino, ident.head_hash, ident.tail_hash, c.offset,
             c.size, c.mtime_ns, c.bad_lines, counted, time.time(), int(reset)))

    def take_lowest_touched(self) -> int | None:
        """The earliest quarter hour whose running sums changed since the last call (None:
        none did). Lets a reader keep figures of older quarters (pipeline.FiguresCache)."""
        lowest, self.lowest_touched = self.lowest_touched, None
        return lowest

    def _touch(self, q: int) -> None:
        if self.lowest_touched is None or q < self.lowest_touched:
            self.lowest_touched = q

    def _apply(self, deltas: dict[BucketKey, list[float]],
               sdeltas: dict[SessionKey, list[Any]]) -> None:
        if deltas:
            self._touch(min(k[0] for k in deltas))
        self.conn.executemany(
            "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls, "
            "input = input + excluded.input, output = output + excluded.output, "
            "cache_read = cache_read + excluded.cache_read, "
            "cache_write = cache_write + excluded.cache_write, cost = cost + excluded.cost, "
            "unpriced_calls = unpriced_calls + excluded.unpriced_calls, "
            "unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens",
            [(*k, *acc) for k, acc in deltas.items()])
        self.conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls, "
            "input = input + excluded.input, output = output + excluded.output, "
            "cache_read = cache_read + excluded.cache_read, "
            "cache_write = cache_write + excluded.cache_write, cost = cost + excluded.cost, "
            "unpriced_calls = unpriced_calls + excluded.unpriced_calls, "
            "unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens, "
            "last_ts = max(coalesce(last_ts, excluded.last_ts), "
            "coalesce(excluded.last_ts, last_ts))",
            [(*k, *acc) for k, acc in sdeltas.items()])

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self, now: float, cut_points: Iterable[float], session_limit: int,
                 review_tokens: float | None, from_q: int = UNDATED_Q) -> Snapshot:
        """`from_q`: leave out the buckets of earlier quarter hours (metrics.Settled has them)."""
        q_now = quarter(now)
        edges = frozenset({q_now, *(quarter(t) for t in cut_points if t <= now)})
        self.conn.execute("BEGIN")
        try:
            buckets = tuple(
                BucketRow(r[0], r[1], r[2], r[3], r[4], Sums(*r[5:]))
                for r in self.conn.execute(
                    "SELECT q, source, agent, provider, model, calls, input, output, "
                    "cache_read, cache_write, cost, unpriced_calls, unpriced_tokens "
                    "FROM buckets WHERE q >= ? AND q < ?", (from_q, q_now)))
            edge_events = tuple(self._edge_events(edges, now))
            sessions, over = self._sessions(now, session_limit, review_tokens)
        finally:
            self.conn.execute("COMMIT")
        return Snapshot(now, buckets, edge_events, edges, sessions, over)

    def buckets_before(self, q: int) -> Iterator[BucketRow]:
        """The running sums of every quarter hour before `q` (undated ones included)."""
        for r in self.conn.execute(
                "SELECT q, source, agent, provider, model, calls, input, output, cache_read, "
                "cache_write, cost, unpriced_calls, unpriced_tokens FROM buckets WHERE q < ?",
                (q,)):
            yield BucketRow(r[0], r[1], r[2], r[3], r[4], Sums(*r[5:]))

    def _edge_events(self, edges: frozenset[int], now: float) -> Iterator[EventRow]:
        for q in sorted(edges):
            rows = self.conn.execute(
                "SELECT ts, source, agent, provider, model, input, output, cache_read, "
                "cache_write, cost FROM events WHERE ts >= ? AND ts < ? AND ts <= ?",
                (q * QUARTER, (q + 1) * QUARTER, now))
            for r in rows:
                tokens = Tokens(r[5], r[6], r[7], r[8])
                yield EventRow(r[0], r[1], r[2], r[3], r[4], Sums.of(tokens, r[9]))

    def _sessions(self, now: float, limit: int, review: float | None
                  ) -> tuple[tuple[SessionRow, ...], tuple[SessionRow, ...]]:
        latest = self.conn.execute("SELECT max(ts) FROM events").fetchone()[0]
        total = "(input + output + cache_read + cache_write)"
        cols = ("source, agent, session, calls, input, output, cache_read, cache_write, cost, "
                "unpriced_calls, unpriced_tokens, last_ts")
        if latest is None or latest <= now:
            source = f"SELECT {cols} FROM sessions"
        else:  # --now in the past: sum only what happened by then
            source = (
                "SELECT source, agent, session, count(*) AS calls, sum(input) AS input, "
                "sum(output) AS output, sum(cache_read) AS cache_read, "
                "sum(cache_write) AS cache_write, total(cost) AS cost, "
                "sum(cost IS NULL) AS unpriced_calls, sum(CASE WHEN cost IS NULL THEN "
                "input + output + cache_read + cache_write ELSE 0 END) AS unpriced_tokens, "
                "max(ts) AS last_ts FROM events WHERE ts IS NULL OR ts <= :now "
                "GROUP BY source, agent, session")
        top = self.conn.execute(
            f"SELECT * FROM ({source}) ORDER BY {total} DESC, session LIMIT :limit",
            {"now": now, "limit": limit})
        top_rows = tuple(_session(r) for r in top)
        over_rows: tuple[SessionRow, ...] = ()
        if review is not None:
            over = self.conn.execute(
                f"SELECT * FROM ({source}) WHERE {total} >= :review ORDER BY {total} DESC "
                "LIMIT 100", {"now": now, "review": review})
            over_rows = tuple(_session(r) for r in over)
        return top_rows, over_rows

    def totals(self) -> tuple[ModelTotal, ...]:
        """All-time sums per (source, provider, model), read from the running sums.

        Cost is added up as whole nano-dollars per bucket: an integer sum is exact whatever the
        row order, so while buckets only grow the total never drops by a rounding step (which
        Prometheus would take for a counter reset).
        """
        rows = self.conn.execute(
            "SELECT source, provider, model, sum(calls), sum(input), sum(output), "
            "sum(cache_read), sum(cache_write), sum(CAST(round(cost * 1e9) AS INTEGER)), "
            "sum(unpriced_calls), sum(unpriced_tokens) FROM buckets "
            "GROUP BY source, provider, model ORDER BY source, provider, model")
        return tuple(ModelTotal(r[0], r[1], r[2], Sums(int(r[3]), int(r[4]), int(r[5]),
                                                       int(r[6]), int(r[7]), int(r[8]) / 1e9,
                                                       int(r[9]), int(r[10])))
                     for r in rows)

    def stats(self) -> dict[str, int]:
        row = self.conn.execute(
            "SELECT count(*), coalesce(sum(bad_lines), 0), "
            "coalesce(sum(error IS NOT NULL), 0), coalesce(sum(gone), 0) FROM files").fetchone()
        events = self.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return {"files": row[0], "bad_lines": row[1], "unreadable": row[2], "gone": row[3],
                "events": events}

    def problems(self, limit: int = 20) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path LIMIT ?",
            (limit,))]

    def problems_for(self, path: str) -> str | None:
        row = self.conn.execute("SELECT error FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else row[0]

    # -- pricing changes and repairs -------------------------------------------------------

    def reprice(self, cost_of: Callable[[str, str, Tokens], tuple[float | None, CostSource]]
                ) -> int:
        """Price again every event without a cost of its own (the price config changed)."""
        changed = 0
        with self.transaction():
            rows = self.conn.execute(
                "SELECT key, provider, model, input, output, cache_read, cache_write, "
                "cache_write_1h, web_search, cost, cost_source FROM events "
                "WHERE cost_source != 'line'").fetchall()
            for r in rows:
                cost, source = cost_of(r[1], r[2], Tokens(*r[3:9]))
                if cost != r[9] or source != r[10]:
                    changed += 1
                    self.conn.execute("UPDATE events SET cost = ?, cost_source = ? WHERE key = ?",
                                      (cost, source, r[0]))
            if changed:
                self._rebuild_aggregates()
        return changed

    def _rebuild_aggregates(self) -> None:
        unpriced = ("CASE WHEN cost IS NULL THEN input + output + cache_read + cache_write "
                    "ELSE 0 END")
        self._touch(UNDATED_Q)  # every quarter hour may have changed
        self.conn.execute("DELETE FROM buckets")
        self.conn.execute("DELETE FROM sessions")
        self.conn.execute(
            "INSERT INTO buckets SELECT CASE WHEN ts IS NULL THEN ? ELSE CAST(ts / ? AS INTEGER) "
            "END AS q, source, agent, provider, model, count(*), sum(input), sum(output), "
            "sum(cache_read), sum(cache_write), total(cost), sum(cost IS NULL), "
            f"sum({unpriced}) FROM events GROUP BY q, source, agent, provider, model",
            (UNDATED_Q, QUARTER))
        self.conn.execute(
            "INSERT INTO sessions SELECT source, agent, session, count(*), sum(input), "
            "sum(output), sum(cache_read), sum(cache_write), total(cost), sum(cost IS NULL), "
            f"sum({unpriced}), max(ts) FROM events GROUP BY source, agent, session")

    # -- meta (heartbeat) ------------------------------------------------------------------

    @_retry_write
    def set_meta(self, values: dict[str, str]) -> None:
        with self.transaction():
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  list(values.items()))

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())


def _cursor(row: Sequence[Any]) -> FileCursor:
    (path, source, dev, ino, head, tail, offset, size, mtime, bad, events) = row
    return FileCursor(
        path=str(path), source=source,
        identity=FileIdentity(int(dev), int(ino), bytes(head), bytes(tail)),
        offset=int(offset), size=int(size), mtime_ns=int(mtime),
        bad_lines=int(bad), events=int(events))


def _session(r: Sequence[Any]) -> SessionRow:
    sums = Sums(int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]), float(r[8] or 0.0),
                int(r[9]), int(r[10]))
    return SessionRow(str(r[0]), str(r[1]), str(r[2]), sums,
                      None if r[11] is None else float(r[11]))


def _gone(path: str, dev: int, ino: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return True
    return (st.st_dev, st.st_ino) != (dev, ino)


# -- the write path's working set -------------------------------------------------------------

# An event as the events table holds it, path excluded (the order of _EVENT_COLS).
EventValues = tuple[Any, ...]
_KEY, _SOURCE, _TS, _AGENT, _SESSION, _PROVIDER, _MODEL = range(7)
_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _COST = 7, 8, 9, 10, 13
_MSG_ID, _REQUEST_ID, _SIDECHAIN = 16, 17, 18
BucketKey = tuple[int, str, str, str, str]
SessionKey = tuple[str, str, str]
_CHUNK = 500  # SQL variables per IN (...) list


def event_values(ev: UsageEvent, cost: float | None, cost_source: CostSource) -> EventValues:
    """A priced event as the events table holds it (path excluded)."""
    t = ev.tokens
    return (ev.key, ev.source, ev.ts, ev.agent, ev.session, ev.provider, ev.model, t.input,
            t.output, t.cache_read, t.cache_write, t.cache_write_1h, t.web_search, cost,
            cost_source, ev.line_cost, ev.msg_id, ev.request_id, int(ev.sidechain))


class _Book:
    """The events one transaction can touch, held in memory while its batches are applied.

    `load` reads every stored row a rule could consult (the same key; for Claude Code rows
    with a request id, every row of the same message id), so applying the rules here gives
    exactly what one SQL statement per event would, with a few bulk reads and writes.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.by_msg: dict[tuple[str, str], set[int]] = {}
        self.written: set[int] = set()
        self.deleted: set[int] = set()
        self.deltas: dict[BucketKey, list[float]] = {}
        self.sdeltas: dict[SessionKey, list[Any]] = {}

    def load(self, rows: Iterable[EventValues]) -> None:
        keys: set[int] = set()
        msgs: dict[str, set[str]] = {}
        for r in rows:
            keys.add(r[_KEY])
            if r[_MSG_ID] and r[_REQUEST_ID]:
                msgs.setdefault(r[_SOURCE], set()).add(r[_MSG_ID])
        for part in _chunks(sorted(keys)):
            self._keep_all(self.conn.execute(
                f"SELECT {_EVENT_COLS} FROM events WHERE key IN ({_marks(len(part))})", part))
        for source, ids in msgs.items():
            for part in _chunks(sorted(ids)):
                self._keep_all(self.conn.execute(
                    f"SELECT {_EVENT_COLS} FROM events WHERE source = ? AND msg_id IN "
                    f"({_marks(len(part))})", (source, *part)))

    def apply(self, rows: Iterable[EventValues], path: str) -> CommitResult:
        new = dup = upgraded = removed = 0
        for r in rows:
            key, msg_id, request_id = r[_KEY], r[_MSG_ID], r[_REQUEST_ID]
            chained = bool(msg_id and request_id)
            if r[_SIDECHAIN] and chained and self._main_row_of(r):
                dup += 1  # Claude Code rule 4: a replay of a main-chain message
                continue
            old = self.rows.get(key)
            if old is not None:
                total = r[_INPUT] + r[_OUTPUT] + r[_CACHE_READ] + r[_CACHE_WRITE]
                old_total = old[_INPUT] + old[_OUTPUT] + old[_CACHE_READ] + old[_CACHE_WRITE]
                earlier = (total == old_total and r[_TS] is not None and old[_TS] is not None
                           and r[_TS] < old[_TS])
                if not (total > old_total or earlier):
                    dup += 1
                    continue
                self._drop(old)
                upgraded += 1
            else:
                new += 1
            row = (*r, path)
            self._keep(row)
            self.written.add(key)
            self.deleted.discard(key)
            self._move(row, 1)
            if chained and not r[_SIDECHAIN]:
                removed += self._remove_replays_of(row)
        return CommitResult(new=new, dup=dup, upgraded=upgraded, replays_removed=removed)

    def flush(self) -> None:
        """Write the events that changed (the running sums are the ledger's to write)."""
        if self.deleted:
            self.conn.executemany("DELETE FROM events WHERE key = ?",
                                  [(k,) for k in sorted(self.deleted)])
        if self.written:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO events ({_EVENT_COLS}) VALUES ({_marks(20)})",
                [self.rows[k] for k in sorted(self.written)])

    # Claude Code rule 4: a sidechain row whose message id exists on a main-chain row under a
    # different request id is a replay (a side question re-sending a parent message).

    def _main_row_of(self, r: EventValues) -> bool:
        for k in self.by_msg.get((r[_SOURCE], r[_MSG_ID]), ()):
            o = self.rows[k]
            if not o[_SIDECHAIN] and o[_REQUEST_ID] is not None \
                    and o[_REQUEST_ID] != r[_REQUEST_ID]:
                return True
        return False

    def _remove_replays_of(self, parent: tuple[Any, ...]) -> int:
        """Take out sidechain replays of `parent` counted before it arrived."""
        gone = [o for k in self.by_msg.get((parent[_SOURCE], parent[_MSG_ID]), ())
                if (o := self.rows[k])[_SIDECHAIN] and o[_REQUEST_ID] is not None
                and o[_REQUEST_ID] != parent[_REQUEST_ID]]
        for o in gone:
            self._drop(o)
            del self.rows[o[_KEY]]
            self.written.discard(o[_KEY])
            self.deleted.add(o[_KEY])
        return len(gone)

    def _keep_all(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self._keep(tuple(row))

    def _keep(self, row: tuple[Any, ...]) -> None:
        self.rows[row[_KEY]] = row
        if row[_MSG_ID] is not None:
            self.by_msg.setdefault((row[_SOURCE], row[_MSG_ID]), set()).add(row[_KEY])

    def _drop(self, row: tuple[Any, ...]) -> None:
        """Forget a stored row about to be replaced or deleted; its sums move back."""
        if row[_MSG_ID] is not None:
            self.by_msg[(row[_SOURCE], row[_MSG_ID])].discard(row[_KEY])
        self._move(row, -1)

    def _move(self, r: tuple[Any, ...], sign: int) -> None:
        """Move the running sums by one event, forward (1) or back (-1)."""
        cost = r[_COST]
        tokens = (r[_INPUT], r[_OUTPUT], r[_CACHE_READ], r[_CACHE_WRITE])
        unpriced = (0, 0) if cost is not None else (1, sum(tokens))
        values = (1, *tokens, cost or 0.0, *unpriced)
        bucket = (quarter(r[_TS]), r[_SOURCE], r[_AGENT], r[_PROVIDER], r[_MODEL])
        acc = self.deltas.get(bucket)
        if acc is None:
            acc = self.deltas[bucket] = [0, 0, 0, 0, 0, 0.0, 0, 0]
        for i, v in enumerate(values):
            acc[i] += sign * v
        session = (r[_SOURCE], r[_AGENT], r[_SESSION])
        sacc = self.sdeltas.get(session)
        if sacc is None:
            sacc = self.sdeltas[session] = [0, 0, 0, 0, 0, 0.0, 0, 0, None]
        for i, v in enumerate(values):
            sacc[i] += sign * v
        ts = r[_TS] if sign > 0 else None
        if ts is not None and (sacc[8] is None or ts > sacc[8]):
            sacc[8] = ts


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)
