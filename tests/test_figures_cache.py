"""The daemon's settled figures give the same document as adding up every bucket."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from usaged import metrics, pipeline
from usaged.config import load
from usaged.ledger import QUARTER, UNDATED_Q, BucketRow, Ledger, Snapshot, Sums
from usaged.values import FileCursor, FileIdentity, PricedEvent, Tokens, UsageEvent

NOW = dt.datetime(2026, 3, 10, 12, 7, tzinfo=dt.UTC)
_q_now = int(NOW.timestamp() // QUARTER)
_bucket = st.builds(
    lambda back, src, model, calls, tokens, cost: BucketRow(
        UNDATED_Q if back is None else _q_now - back, src, "a", "p", model,
        Sums(calls, *tokens, cost or 0.0, 0 if cost else calls, 0 if cost else sum(tokens))),
    back=st.one_of(st.none(), st.integers(1, 96 * 150)),
    src=st.sampled_from(["openclaw", "claude_code"]), model=st.sampled_from(["m1", "m2"]),
    calls=st.integers(1, 3), tokens=st.tuples(*(st.integers(0, 50) for _ in range(4))),
    cost=st.sampled_from([None, 0.1, 0.2, 1e-7, 3.3]))


def _unique(rows: list[BucketRow]) -> list[BucketRow]:
    return list({(b.q, b.source, b.agent, b.provider, b.model): b for b in rows}.values())


def _snap(rows: list[BucketRow], from_q: int) -> Snapshot:
    live = tuple(b for b in rows if from_q <= b.q < _q_now)
    return Snapshot(NOW.timestamp(), live, (), frozenset({_q_now}), (), ())


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(_bucket, max_size=40).map(_unique),
       zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
       since=st.one_of(st.none(), st.dates(dt.date(2025, 8, 1), dt.date(2026, 3, 10))),
       burn=st.sampled_from([24.0, 24.0 * 60]))
def test_settled_figures_merge_to_the_full_computation(rows: list[BucketRow], zone: str,
                                                        since: dt.date | None,
                                                        burn: float) -> None:
    st_ = metrics.Settings(zone=ZoneInfo(zone), balance_since=since, credit_usd=100.0,
                           burn_window_hours=burn)
    health = metrics.Health()
    full = metrics.compute(_snap(rows, UNDATED_Q), st_, health, NOW)
    until = metrics.settled_until(st_, NOW)
    settled = metrics.settle([b for b in rows if b.q < until], st_, until)
    assert metrics.compute(_snap(rows, until), st_, health, NOW, settled) == full


def _event(key: int, ts: float, tokens: int) -> PricedEvent:
    ev = UsageEvent(key=key, source="openclaw", ts=ts, agent="a", session=f"s{key % 3}",
                    provider="p", model="m", tokens=Tokens(tokens, 1), line_cost=0.01 * key)
    return PricedEvent(ev, ev.line_cost, "line")


def _doc(cfg: Any, ledger: Ledger, cache: pipeline.FiguresCache | None) -> dict[str, Any]:
    doc = pipeline.build_document(cfg, ledger, NOW, {"state": "test"}, None, cache)
    doc.pop("generated_at")
    return doc


def test_a_commit_into_an_old_quarter_refreshes_the_cache(tmp_path: Path,
                                                          make_config: Any) -> None:
    cfg = load(make_config(openclaw=[tmp_path]))
    ledger = Ledger.open(tmp_path / "l.db")
    cursor = FileCursor("/x", "openclaw", FileIdentity(1, 1, b"", b""), 0, 0, 0)
    old = (NOW - dt.timedelta(days=90)).timestamp()
    try:
        ledger.commit_batch(cursor, [_event(1, old, 10), _event(2, NOW.timestamp() - 60, 5)])
        cache = pipeline.FiguresCache()
        assert _doc(cfg, ledger, cache) == _doc(cfg, ledger, None)
        first = cache.settled
        ledger.commit_batch(cursor, [_event(3, NOW.timestamp() - 30, 7)])  # recent: kept
        assert _doc(cfg, ledger, cache) == _doc(cfg, ledger, None)
        assert cache.settled is first
        ledger.commit_batch(cursor, [_event(4, old + 3600, 9)])  # old: rebuilt
        assert _doc(cfg, ledger, cache) == _doc(cfg, ledger, None)
        assert cache.settled is not first
        assert _doc(cfg, ledger, cache)["windows"]["all_time"]["calls"] == 4
    finally:
        ledger.close()
