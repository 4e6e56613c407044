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

from usaged.errors import StateError
from usaged.values import CostSource, FileCursor, FileIdentity, PricedEvent, Tokens, UsageEvent

SCHEMA_VERSION = 2
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


def quarter(ts: float | None) -> int:
    return UNDATED_Q if ts is None else math.floor(ts / QUARTER)


class Ledger:
    """The state database. Open with `Ledger.open` (read-write) or `Ledger.open_readonly`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Ledger:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            ledger = cls(conn, path)
            ledger._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: not a usable usaged state database ({exc})") from None
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

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- files -----------------------------------------------------------------------------

    def cursor(self, path: str) -> FileCursor | None:
        row = self.conn.execute(
            "SELECT path, source, dev, ino, head_hash, tail_hash, offset, size, mtime_ns, "
            "bad_lines, events FROM files WHERE path = ?", (path,)).fetchone()
        return _cursor(row) if row else None

    def cursors(self) -> dict[str, FileCursor]:
        rows = self.conn.execute(
            "SELECT path, source, dev, ino, head_hash, tail_hash, offset, size, mtime_ns, "
            "bad_lines, events FROM files WHERE gone = 0").fetchall()
        return {r[0]: _cursor(r) for r in rows}

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

    def mark_gone(self, paths: Iterable[str]) -> None:
        with self.transaction():
            self.conn.executemany("UPDATE files SET gone = 1, updated_at = ? WHERE path = ?",
                                  [(time.time(), p) for p in paths])

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

    def commit_batch(self, cursor: FileCursor, events: Sequence[PricedEvent],
                     reset: bool = False) -> CommitResult:
        """Upsert the events and store the file's new cursor, in ONE transaction.

        `reset` says the file is being read again from 0: its bad-line count starts over.
        The largest snapshot of a key wins (on a tie, the earliest timestamp); a larger one
        arriving later replaces the row and the running sums move by the difference only.
        """
        new = dup = upgraded = removed = 0
        deltas: dict[tuple[int, str, str, str, str], Sums] = {}
        sdeltas: dict[tuple[str, str, str], tuple[Sums, float | None]] = {}
        with self.transaction():
            for priced in events:
                ev = priced.event
                if ev.sidechain and self._is_replay(ev):
                    dup += 1
                    continue
                old = self.conn.execute(
                    "SELECT ts, source, agent, session, provider, model, input, output, "
                    "cache_read, cache_write, cost FROM events WHERE key = ?", (ev.key,)
                ).fetchone()
                if old is not None:
                    old_total = old[6] + old[7] + old[8] + old[9]
                    bigger = ev.tokens.total > old_total
                    earlier = (ev.tokens.total == old_total and ev.ts is not None
                               and old[0] is not None and ev.ts < old[0])
                    if not (bigger or earlier):
                        dup += 1
                        continue
                    _subtract(deltas, sdeltas, old)
                    upgraded += 1
                else:
                    new += 1
                self.conn.execute(
                    f"INSERT OR REPLACE INTO events ({_EVENT_COLS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ev.key, ev.source, ev.ts, ev.agent, ev.session, ev.provider, ev.model,
                     ev.tokens.input, ev.tokens.output, ev.tokens.cache_read,
                     ev.tokens.cache_write, ev.tokens.cache_write_1h, ev.tokens.web_search,
                     priced.cost, priced.cost_source, ev.line_cost, ev.msg_id, ev.request_id,
                     int(ev.sidechain), cursor.path))
                sums = Sums.of(ev.tokens, priced.cost)
                _add(deltas, (quarter(ev.ts), ev.source, ev.agent, ev.provider, ev.model), sums)
                _add_session(sdeltas, (ev.source, ev.agent, ev.session), sums, ev.ts)
                if not ev.sidechain and ev.msg_id and ev.request_id:
                    removed += self._remove_replays_of(ev, deltas, sdeltas)
            self._apply(deltas, sdeltas)
            if upgraded or removed:
                self._drop_empty(deltas, sdeltas)
            self._store_cursor(cursor, new + upgraded, reset)
        return CommitResult(new=new, dup=dup, upgraded=upgraded, replays_removed=removed)

    # Claude Code rule 4: a sidechain row whose message id exists on a main-chain row under a
    # different request id is a replay (a side question re-sending a parent message).

    def _is_replay(self, ev: UsageEvent) -> bool:
        if not ev.msg_id or not ev.request_id:
            return False
        return self.conn.execute(
            "SELECT 1 FROM events WHERE msg_id = ? AND source = ? AND request_id IS NOT NULL "
            "AND request_id != ? AND sidechain = 0 LIMIT 1",
            (ev.msg_id, ev.source, ev.request_id)).fetchone() is not None

    def _remove_replays_of(self, parent: UsageEvent,
                           deltas: dict[tuple[int, str, str, str, str], Sums],
                           sdeltas: dict[tuple[str, str, str], tuple[Sums, float | None]]
                           ) -> int:
        """Take out sidechain replays of `parent` counted before it arrived."""
        rows = self.conn.execute(
            "SELECT ts, source, agent, session, provider, model, input, output, cache_read, "
            "cache_write, cost, key FROM events WHERE msg_id = ? AND source = ? "
            "AND request_id IS NOT NULL AND request_id != ? AND sidechain = 1",
            (parent.msg_id, parent.source, parent.request_id)).fetchall()
        for row in rows:
            _subtract(deltas, sdeltas, row)
            self.conn.execute("DELETE FROM events WHERE key = ?", (row[11],))
        return len(rows)

    def _drop_empty(self, deltas: dict[tuple[int, str, str, str, str], Sums],
                    sdeltas: dict[tuple[str, str, str], tuple[Sums, float | None]]) -> None:
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

    def _apply(self, deltas: dict[tuple[int, str, str, str, str], Sums],
               sdeltas: dict[tuple[str, str, str], tuple[Sums, float | None]]) -> None:
        self.conn.executemany(
            "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET calls = calls + excluded.calls, "
            "input = input + excluded.input, output = output + excluded.output, "
            "cache_read = cache_read + excluded.cache_read, "
            "cache_write = cache_write + excluded.cache_write, cost = cost + excluded.cost, "
            "unpriced_calls = unpriced_calls + excluded.unpriced_calls, "
            "unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens",
            [(*k, s.calls, s.input, s.output, s.cache_read, s.cache_write, s.cost,
              s.unpriced_calls, s.unpriced_tokens) for k, s in deltas.items()])
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
            [(*k, s.calls, s.input, s.output, s.cache_read, s.cache_write, s.cost,
              s.unpriced_calls, s.unpriced_tokens, ts) for k, (s, ts) in sdeltas.items()])

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self, now: float, cut_points: Iterable[float], session_limit: int,
                 review_tokens: float | None) -> Snapshot:
        q_now = quarter(now)
        edges = frozenset({q_now, *(quarter(t) for t in cut_points if t <= now)})
        self.conn.execute("BEGIN")
        try:
            buckets = tuple(
                BucketRow(r[0], r[1], r[2], r[3], r[4], Sums(*r[5:]))
                for r in self.conn.execute(
                    "SELECT q, source, agent, provider, model, calls, input, output, "
                    "cache_read, cache_write, cost, unpriced_calls, unpriced_tokens "
                    "FROM buckets WHERE q < ?", (q_now,)))
            edge_events = tuple(self._edge_events(edges, now))
            sessions, over = self._sessions(now, session_limit, review_tokens)
        finally:
            self.conn.execute("COMMIT")
        return Snapshot(now, buckets, edge_events, edges, sessions, over)

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


def _subtract(deltas: dict[tuple[int, str, str, str, str], Sums],
              sdeltas: dict[tuple[str, str, str], tuple[Sums, float | None]],
              row: Sequence[Any]) -> None:
    """Move the running sums back by one stored event (ts, source, agent, session, provider,
    model, input, output, cache_read, cache_write, cost, ...)."""
    total = row[6] + row[7] + row[8] + row[9]
    priced = row[10] is not None
    sums = Sums(1, row[6], row[7], row[8], row[9], row[10] or 0.0, 0 if priced else 1,
                0 if priced else total)
    _add(deltas, (quarter(row[0]), row[1], row[2], row[4], row[5]), -sums)
    _add_session(sdeltas, (row[1], row[2], row[3]), -sums, None)


def _add(d: dict[tuple[int, str, str, str, str], Sums],
         k: tuple[int, str, str, str, str], s: Sums) -> None:
    d[k] = d[k] + s if k in d else s


def _add_session(d: dict[tuple[str, str, str], tuple[Sums, float | None]],
                 k: tuple[str, str, str], s: Sums, ts: float | None) -> None:
    if k in d:
        old, old_ts = d[k]
        d[k] = (old + s, max((t for t in (old_ts, ts) if t is not None), default=None))
    else:
        d[k] = (s, ts)
