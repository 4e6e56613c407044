"""Ledger.commit_files applies the dedup rules in memory: it must agree, row for row, with the
rules applied one SQL statement per event (the reference below, the ledger's first version)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usaged.ledger import (
    _EVENT_COLS,
    CommitResult,
    Ledger,
    Sums,
    event_values,
    quarter,
)
from usaged.values import FileCursor, FileIdentity, PricedEvent, Tokens, UsageEvent

# -- the reference: one statement per event -------------------------------------------------

Deltas = dict[tuple[Any, ...], list[Any]]


def _add(deltas: Deltas, sdeltas: Deltas, row: Sequence[Any], sign: int,
         ts: float | None) -> None:
    """row: ts, source, agent, session, provider, model, input, output, cache_read,
    cache_write, cost."""
    priced = row[10] is not None
    total = row[6] + row[7] + row[8] + row[9]
    sums = Sums(1, row[6], row[7], row[8], row[9], row[10] or 0.0, 0 if priced else 1,
                0 if priced else total)
    if sign < 0:
        sums = -sums
    bucket = (quarter(row[0]), row[1], row[2], row[4], row[5])
    deltas[bucket] = [deltas[bucket][0] + sums] if bucket in deltas else [sums]
    session = (row[1], row[2], row[3])
    if session in sdeltas:
        old, old_ts = sdeltas[session]
        sdeltas[session] = [old + sums,
                            max((t for t in (old_ts, ts) if t is not None), default=None)]
    else:
        sdeltas[session] = [sums, ts]


def reference_commit(ledger: Ledger, cursor: FileCursor, events: Sequence[PricedEvent],
                     reset: bool) -> CommitResult:
    conn = ledger.conn
    new = dup = upgraded = removed = 0
    deltas: Deltas = {}
    sdeltas: Deltas = {}
    with ledger.transaction():
        for priced in events:
            ev = priced.event
            if ev.sidechain and ev.msg_id and ev.request_id and conn.execute(
                    "SELECT 1 FROM events WHERE msg_id = ? AND source = ? AND request_id IS NOT "
                    "NULL AND request_id != ? AND sidechain = 0 LIMIT 1",
                    (ev.msg_id, ev.source, ev.request_id)).fetchone() is not None:
                dup += 1
                continue
            old = conn.execute(
                "SELECT ts, source, agent, session, provider, model, input, output, "
                "cache_read, cache_write, cost FROM events WHERE key = ?", (ev.key,)).fetchone()
            if old is not None:
                old_total = old[6] + old[7] + old[8] + old[9]
                bigger = ev.tokens.total > old_total
                earlier = (ev.tokens.total == old_total and ev.ts is not None
                           and old[0] is not None and ev.ts < old[0])
                if not (bigger or earlier):
                    dup += 1
                    continue
                _add(deltas, sdeltas, old, -1, None)
                upgraded += 1
            else:
                new += 1
            conn.execute(f"INSERT OR REPLACE INTO events ({_EVENT_COLS}) VALUES "
                         f"({', '.join('?' * 20)})",
                         (*event_values(ev, priced.cost, priced.cost_source), cursor.path))
            t = ev.tokens
            _add(deltas, sdeltas, (ev.ts, ev.source, ev.agent, ev.session, ev.provider,
                                   ev.model, t.input, t.output, t.cache_read, t.cache_write,
                                   priced.cost), 1, ev.ts)
            if not ev.sidechain and ev.msg_id and ev.request_id:
                rows = conn.execute(
                    "SELECT ts, source, agent, session, provider, model, input, output, "
                    "cache_read, cache_write, cost, key FROM events WHERE msg_id = ? AND "
                    "source = ? AND request_id IS NOT NULL AND request_id != ? AND "
                    "sidechain = 1", (ev.msg_id, ev.source, ev.request_id)).fetchall()
                for row in rows:
                    _add(deltas, sdeltas, row, -1, None)
                    conn.execute("DELETE FROM events WHERE key = ?", (row[11],))
                removed += len(rows)
        flat = {k: _flat(v[0]) for k, v in deltas.items()}
        sflat = {k: [*_flat(v[0]), v[1]] for k, v in sdeltas.items()}
        ledger._apply(flat, sflat)
        if upgraded or removed:
            ledger._drop_empty(flat, sflat)
        ledger._store_cursor(cursor, new + upgraded, reset)
    return CommitResult(new=new, dup=dup, upgraded=upgraded, replays_removed=removed)


def _flat(s: Sums) -> list[Any]:
    return [s.calls, s.input, s.output, s.cache_read, s.cache_write, s.cost, s.unpriced_calls,
            s.unpriced_tokens]


# -- generated events -----------------------------------------------------------------------

_event = st.builds(
    lambda msg, req, side, session, model, tokens, ts, cost, source: PricedEvent(
        UsageEvent(key=zlib.crc32(repr((source, msg, req if msg else session)).encode()),
                   source=source, ts=ts, agent="p", session=session, provider="anthropic",
                   model=model, tokens=Tokens(*tokens), line_cost=None,
                   msg_id=msg, request_id=req, sidechain=side),
        cost, "table" if cost is not None else "none"),
    msg=st.sampled_from([None, "m1", "m2", "m3"]),
    req=st.sampled_from([None, "r1", "r2", "r3"]),
    side=st.booleans(),
    session=st.sampled_from(["s1", "s2"]),
    model=st.sampled_from(["claude-opus-4-5", "claude-sonnet-4-5"]),
    tokens=st.tuples(*(st.integers(0, 3) for _ in range(4))),
    ts=st.sampled_from([None, 1_000.0, 1_500.0, 2_000.0]),
    cost=st.sampled_from([None, 0.0, 0.25, 1.5]),
    source=st.sampled_from(["claude_code", "openclaw"]),
)
_batches = st.lists(st.tuples(st.sampled_from(["/a.jsonl", "/b.jsonl"]),
                              st.lists(_event, max_size=8), st.booleans()),
                    min_size=1, max_size=6)


def _cursor(path: str, n: int) -> FileCursor:
    return FileCursor(path=path, source="claude_code",
                      identity=FileIdentity(1, 2, b"h", b"t"), offset=n, size=n, mtime_ns=n)


def _state(ledger: Ledger) -> tuple[list[Any], ...]:
    q = ledger.conn.execute
    return (q(f"SELECT {_EVENT_COLS} FROM events ORDER BY key").fetchall(),
            q("SELECT q, source, agent, provider, model, calls, input, output, cache_read, "
              "cache_write, round(cost, 9), unpriced_calls, unpriced_tokens FROM buckets "
              "ORDER BY 1, 2, 3, 4, 5").fetchall(),
            q("SELECT source, agent, session, calls, input, output, cache_read, cache_write, "
              "round(cost, 9), unpriced_calls, unpriced_tokens, last_ts FROM sessions "
              "ORDER BY 1, 2, 3").fetchall(),
            q("SELECT path, offset, bad_lines, events FROM files ORDER BY path").fetchall())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_batches, group=st.integers(1, 4))
def test_bulk_commit_matches_one_statement_per_event(tmp_path_factory: Any,
                                                     batches: list[Any], group: int) -> None:
    folder: Path = tmp_path_factory.mktemp("commit")
    ours, ref = Ledger.open(folder / "ours.db"), Ledger.open(folder / "ref.db")
    try:
        got: list[CommitResult] = []
        want: list[CommitResult] = []
        cursors = [(_cursor(path, i), events, reset)
                   for i, (path, events, reset) in enumerate(batches)]
        for i in range(0, len(cursors), group):  # several files per transaction, in order
            part = cursors[i:i + group]
            got += ours.commit_files([(c, [event_values(p.event, p.cost, p.cost_source)
                                           for p in evs], r)
                                      for c, evs, r in part])
        for c, evs, r in cursors:
            want.append(reference_commit(ref, c, evs, r))
        assert got == want
        assert _state(ours) == _state(ref)
    finally:
        ours.close()
        ref.close()


def test_a_fresh_ledger_takes_a_batch_of_new_events(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.db")
    try:
        ev = UsageEvent(key=7, source="openclaw", ts=1.0, agent="a", session="s",
                        provider="p", model="m", tokens=Tokens(1, 2, 3, 4), line_cost=0.5)
        result = ledger.commit_batch(_cursor("/x.jsonl", 10), [PricedEvent(ev, 0.5, "line")])
        assert result == CommitResult(new=1, dup=0, upgraded=0)
        assert ledger.conn.execute("SELECT calls, cost FROM sessions").fetchone() == (1, 0.5)
    finally:
        ledger.close()

