"""metrics.compute with a fixed `now`, on a real ledger: windows, budget, capacity, balance, alerts.

Every test commits PricedEvents through Ledger.commit_batch (the one write path), takes a
snapshot at `now` exactly as pipeline.build_document does, and calls the pure metrics.compute.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usaged import metrics
from usaged.ledger import Ledger
from usaged.metrics import Health, Settings
from usaged.values import FileCursor, FileIdentity, PricedEvent, Tokens, UsageEvent

_keys = itertools.count(1)
H = 3600.0


def ts_of(when: str | float) -> float:
    if isinstance(when, (int, float)):
        return float(when)
    return dt.datetime.fromisoformat(when).timestamp()


def ev(when: str | float | None, tokens: int = 100, cost: float | None = 0.0, *,
       session: str = "s1", agent: str = "main", model: str = "claude-opus-4-5",
       provider: str = "anthropic", source: str = "openclaw") -> PricedEvent:
    """One priced event; `tokens` are all input tokens unless given as a Tokens."""
    toks = Tokens(input=tokens)
    event = UsageEvent(key=next(_keys), source=source,  # type: ignore[arg-type]
                       ts=None if when is None else ts_of(when), agent=agent, session=session,
                       provider=provider, model=model, tokens=toks, line_cost=cost)
    return PricedEvent(event, cost, "line" if cost is not None else "none")


def mixed(when: str | float, input: int, output: int, cache_read: int, cache_write: int,
          cost: float | None) -> PricedEvent:
    event = UsageEvent(key=next(_keys), source="openclaw", ts=ts_of(when), agent="main",
                       session="s1", provider="anthropic", model="claude-opus-4-5",
                       tokens=Tokens(input, output, cache_read, cache_write), line_cost=cost)
    return PricedEvent(event, cost, "line" if cost is not None else "none")


class Book:
    """A real ledger plus the snapshot -> compute step of pipeline.build_document."""

    def __init__(self, path: Path) -> None:
        self.ledger = Ledger.open(path)
        self.files = itertools.count(1)

    def add(self, *events: PricedEvent) -> Book:
        cursor = FileCursor(path=f"/transcripts/{next(self.files)}.jsonl", source="openclaw",
                            identity=FileIdentity(0, 0, b"", b""), offset=0, size=0,
                            mtime_ns=0)
        self.ledger.commit_batch(cursor, list(events))
        return self

    def figures(self, now: str | dt.datetime, zone: str = "UTC", health: Health | None = None,
                **settings: Any) -> dict[str, Any]:
        st_ = Settings(zone=ZoneInfo(zone), **settings)
        moment = dt.datetime.fromisoformat(now) if isinstance(now, str) else now
        ts = moment.timestamp()
        snap = self.ledger.snapshot(ts, metrics.cut_points(st_, ts), st_.top_sessions,
                                    st_.session_review_tokens)
        return metrics.compute(snap, st_, health or Health(), moment)


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    b = Book(tmp_path / "x.db")
    yield b
    b.ledger.close()


def alert(doc: dict[str, Any], id_: str) -> dict[str, Any] | None:
    found = [a for a in doc["alerts"] if a["id"] == id_]
    assert len(found) <= 1
    return found[0] if found else None


def daily(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["date"]: d for d in doc["daily"]}


def total(figures: dict[str, Any]) -> int:
    value: int = figures["tokens"]["total"]
    return value


# -- budget ---------------------------------------------------------------------------------

APRIL_2 = "2026-04-02T00:00:00+00:00"


@pytest.mark.parametrize(("spent", "level"), [
    (39.99, "ok"), (40.0, "warning"), (40.01, "warning"),
    (49.99, "warning"), (50.0, "critical"), (50.01, "critical"),
])
def test_budget_level_at_warn_and_critical_edges(spent: float, level: str, book: Book) -> None:
    doc = book.add(ev("2026-04-01T12:00:00+00:00", cost=spent)).figures(APRIL_2,
                                                                        monthly_usd=50)
    assert doc["budget"]["level"] == level
    assert doc["budget"]["ratio"] == spent / 50
    found = alert(doc, "budget")
    if level == "ok":
        assert found is None
    else:
        assert found is not None
        assert found["level"] == level
        assert found["value"] == spent / 50
        assert found["threshold"] == (1.0 if level == "critical" else 0.8)


def test_budget_over_reports_the_overage(book: Book) -> None:
    doc = book.add(ev("2026-04-01T12:00:00+00:00", cost=62.5)).figures(APRIL_2, monthly_usd=50)
    assert doc["budget"]["over_usd"] == 12.5
    assert doc["budget"]["spent_usd"] == 62.5


def test_budget_thresholds_come_from_the_settings(book: Book) -> None:
    book.add(ev("2026-04-01T12:00:00+00:00", cost=25))
    assert book.figures(APRIL_2, monthly_usd=50, warn_ratio=0.5)["budget"]["level"] == "warning"
    doc = book.figures(APRIL_2, monthly_usd=50, warn_ratio=0.3, critical_ratio=0.5)
    assert doc["budget"]["level"] == "critical"


def test_budget_counts_only_this_month_in_the_configured_zone(book: Book) -> None:
    # 2026-03-31T23:30-07:00 is April in UTC but March in Los Angeles
    book.add(ev("2026-04-01T06:30:00+00:00", cost=30), ev("2026-04-01T08:00:00+00:00", cost=5))
    doc = book.figures("2026-04-10T00:00:00+00:00", "America/Los_Angeles", monthly_usd=50)
    assert doc["budget"]["spent_usd"] == 5
    assert book.figures("2026-04-10T00:00:00+00:00", monthly_usd=50)["budget"]["spent_usd"] == 35


def test_budget_unset_has_spend_but_no_ratio_or_alert(book: Book) -> None:
    doc = book.add(ev("2026-04-01T12:00:00+00:00", cost=500)).figures(APRIL_2)
    assert doc["budget"] == {"monthly_usd": None, "spent_usd": 500.0, "ratio": None,
                             "over_usd": None, "projected_month_usd": None, "level": "ok"}
    assert doc["alerts"] == []


# -- month-end projection -------------------------------------------------------------------


@pytest.mark.parametrize(("month", "days"), [
    ("2026-02", 28), ("2028-02", 29), ("2026-04", 30), ("2026-01", 31), ("2026-12", 31),
])
def test_projection_is_spend_over_elapsed_fraction_of_the_month(month: str, days: int,
                                                                book: Book) -> None:
    start = dt.datetime.fromisoformat(f"{month}-01T00:00:00+00:00")
    book.add(ev(start.timestamp() + 3600, cost=14.0))
    now = start + dt.timedelta(days=7)
    doc = book.figures(now, monthly_usd=1000)
    assert doc["budget"]["projected_month_usd"] == pytest.approx(14.0 * days / 7, rel=1e-12)
    end = (start + dt.timedelta(days=days)).isoformat()
    assert doc["budget"]["month_end"] == end


@pytest.mark.parametrize(("zone", "start", "now", "elapsed_h", "length_h"), [
    # spring forward inside the month: 743 real hours
    ("America/Los_Angeles", "2026-03-01T00:00:00-08:00", "2026-03-16T00:00:00-07:00", 359, 743),
    # fall back inside the month: 721 real hours
    ("America/Los_Angeles", "2026-11-01T00:00:00-07:00", "2026-11-16T00:00:00-08:00", 361, 721),
    ("Europe/Berlin", "2026-03-01T00:00:00+01:00", "2026-03-31T00:00:00+02:00", 719, 743),
    ("Europe/Berlin", "2026-10-01T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 601, 745),
])
def test_projection_counts_real_hours_in_a_month_with_a_dst_change(
        zone: str, start: str, now: str, elapsed_h: int, length_h: int, book: Book) -> None:
    book.add(ev(ts_of(start) + 7200, cost=100.0))
    doc = book.figures(now, zone, monthly_usd=1000)
    assert doc["budget"]["projected_month_usd"] == pytest.approx(100.0 * length_h / elapsed_h,
                                                                 rel=1e-12)


def test_no_projection_in_the_first_six_hours(book: Book) -> None:
    book.add(ev("2026-04-01T00:10:00+00:00", cost=1.0))
    early = book.figures("2026-04-01T05:59:59+00:00", monthly_usd=50)
    assert early["budget"]["projected_month_usd"] is None
    assert alert(early, "budget_projection") is None
    at_six = book.figures("2026-04-01T06:00:00+00:00", monthly_usd=50)
    assert at_six["budget"]["projected_month_usd"] == pytest.approx(30 * 24 / 6)


def test_no_projection_in_the_first_six_local_hours(book: Book) -> None:
    book.add(ev("2026-04-01T07:10:00+00:00", cost=1.0))  # 00:10 in Los Angeles
    doc = book.figures("2026-04-01T12:59:00+00:00", "America/Los_Angeles", monthly_usd=50)
    assert doc["budget"]["projected_month_usd"] is None
    doc = book.figures("2026-04-01T13:00:00+00:00", "America/Los_Angeles", monthly_usd=50)
    assert doc["budget"]["projected_month_usd"] is not None


MID_APRIL = "2026-04-16T00:00:00+00:00"  # exactly half of April has passed


@pytest.mark.parametrize(("spent", "alerted"), [(49.5, False), (50.0, False), (50.5, True)])
def test_projection_alert_only_when_the_month_would_end_over_budget(
        spent: float, alerted: bool, book: Book) -> None:
    doc = book.add(ev("2026-04-02T00:00:00+00:00", cost=spent)).figures(MID_APRIL,
                                                                        monthly_usd=100)
    assert doc["budget"]["projected_month_usd"] == pytest.approx(spent * 2)
    assert doc["budget"]["level"] == "ok"
    found = alert(doc, "budget_projection")
    assert (found is not None) == alerted
    if found:
        assert found["level"] == "warning"
        assert found["value"] == pytest.approx(101.0)
        assert found["threshold"] == 100


def test_projection_alert_is_dropped_once_the_budget_is_spent(book: Book) -> None:
    doc = book.add(ev("2026-04-02T00:00:00+00:00", cost=100)).figures(MID_APRIL,
                                                                      monthly_usd=100)
    assert alert(doc, "budget")["level"] == "critical"  # type: ignore[index]
    assert alert(doc, "budget_projection") is None


def test_projection_alert_beside_a_budget_warning(book: Book) -> None:
    doc = book.add(ev("2026-04-02T00:00:00+00:00", cost=85)).figures(MID_APRIL,
                                                                     monthly_usd=100)
    assert alert(doc, "budget")["level"] == "warning"  # type: ignore[index]
    assert alert(doc, "budget_projection") is not None


# -- capacity -------------------------------------------------------------------------------

NOW = "2026-04-20T12:00:00+00:00"


@pytest.mark.parametrize(("used", "level"), [
    (799, "ok"), (800, "warning"), (801, "warning"), (999, "warning"), (1000, "critical"),
    (1001, "critical"),
])
def test_capacity_level_at_its_edges(used: int, level: str, book: Book) -> None:
    doc = book.add(ev("2026-04-18T12:00:00+00:00", used)).figures(NOW, weekly_tokens=1000)
    cap = doc["capacity"]
    assert cap["level"] == level
    assert cap["used_tokens"] == used
    found = alert(doc, "capacity")
    assert (found is None) == (level == "ok")
    if found:
        assert found["level"] == level
        assert found["threshold"] == (1.0 if level == "critical" else 0.8)


@pytest.mark.parametrize("used", [0, 1, 333, 799, 800, 999, 1000])
def test_used_and_left_ratio_add_up_to_one_until_capacity_is_exceeded(used: int,
                                                                      book: Book) -> None:
    if used:
        book.add(ev("2026-04-18T12:00:00+00:00", used))
    cap = book.figures(NOW, weekly_tokens=1000)["capacity"]
    assert cap["used_ratio"] + cap["left_ratio"] == pytest.approx(1.0, abs=1e-15)
    assert cap["left_tokens"] == 1000 - used
    assert cap["left_ratio"] == pytest.approx((1000 - used) / 1000)


def test_exceeded_capacity_has_nothing_left(book: Book) -> None:
    cap = book.add(ev("2026-04-18T12:00:00+00:00", 1500)).figures(
        NOW, weekly_tokens=1000)["capacity"]
    assert cap["used_ratio"] == 1.5
    assert cap["left_ratio"] == 0
    assert cap["left_tokens"] == 0


def test_hours_to_exhaustion_at_the_burn_window_pace(book: Book) -> None:
    book.add(ev("2026-04-16T08:00:00+00:00", 300),  # in the 7 days, not in the last 24 h
             ev("2026-04-19T12:00:00+00:00", 120),  # exactly 24 h ago: in the burn window
             ev("2026-04-20T11:00:00+00:00", 120))
    doc = book.figures(NOW, weekly_tokens=1000)
    cap = doc["capacity"]
    assert cap["burn_tokens_per_hour"] == 10.0
    assert cap["left_tokens"] == 460
    assert cap["hours_to_exhaustion"] == 46.0
    assert cap["level"] == "ok"
    assert alert(doc, "capacity") is None
    doc = book.figures(NOW, weekly_tokens=600)
    assert doc["capacity"]["hours_to_exhaustion"] == 6.0
    assert "~6 h left at the last 24 h's pace" in alert(doc, "capacity")["message"]  # type: ignore


def test_burn_window_length_is_configurable(book: Book) -> None:
    book.add(ev("2026-04-20T05:59:59+00:00", 600), ev("2026-04-20T06:00:00+00:00", 60))
    cap = book.figures(NOW, weekly_tokens=1000, burn_window_hours=6)["capacity"]
    assert cap["burn_tokens_per_hour"] == 10.0
    assert cap["hours_to_exhaustion"] == pytest.approx(340 / 10)


def test_no_recent_use_means_no_time_to_exhaustion(book: Book) -> None:
    cap = book.add(ev("2026-04-15T12:00:00+00:00", 10)).figures(
        NOW, weekly_tokens=1000)["capacity"]
    assert cap["burn_tokens_per_hour"] == 0
    assert cap["hours_to_exhaustion"] is None


def test_capacity_unset_reports_use_without_ratios(book: Book) -> None:
    cap = book.add(ev("2026-04-18T12:00:00+00:00", 5)).figures(NOW)["capacity"]
    assert cap["weekly_tokens"] is None and cap["used_ratio"] is None
    assert cap["used_tokens"] == 5
    assert cap["level"] == "ok"


# -- balance --------------------------------------------------------------------------------


def test_balance_unset_is_not_tracked_never_zero(book: Book) -> None:
    bal = book.add(ev("2026-04-18T12:00:00+00:00", cost=3)).figures(NOW)["balance"]
    assert bal == {"tracked": False, "credit_usd": None, "since": None, "spent_usd": None,
                   "balance_usd": None, "level": "ok"}


@pytest.mark.parametrize(("spent", "level"), [
    (89.99, "ok"), (90.0, "ok"), (90.01, "warning"), (99.99, "warning"), (100.0, "critical"),
    (120.0, "critical"),
])
def test_balance_low_below_threshold_depleted_at_or_below_zero(spent: float, level: str,
                                                               book: Book) -> None:
    doc = book.add(ev("2026-04-18T12:00:00+00:00", cost=spent)).figures(
        NOW, credit_usd=100, balance_since=dt.date(2026, 4, 1))
    bal = doc["balance"]
    assert bal["tracked"] is True
    assert bal["balance_usd"] == pytest.approx(100 - spent)
    assert bal["level"] == level
    found = alert(doc, "balance")
    assert (found is None) == (level == "ok")
    if found:
        assert found["level"] == level
        assert found["title"] == ("Balance depleted" if level == "critical" else "Balance low")
        assert found["threshold"] == (0 if level == "critical" else 10.0)


def test_balance_since_a_date_inside_the_month(book: Book) -> None:
    book.add(ev("2026-04-09T23:59:59+02:00", cost=5.0),  # before local midnight: not counted
             ev("2026-04-10T00:00:00+02:00", cost=7.0),
             ev("2026-04-12T09:00:00+02:00", cost=1.0),
             ev("2026-04-20T12:00:01+02:00", cost=50.0))  # after now: not yet
    doc = book.figures("2026-04-20T12:00:00+02:00", "Europe/Berlin", credit_usd=20,
                       balance_since=dt.date(2026, 4, 10), monthly_usd=100)
    bal = doc["balance"]
    assert bal["since"] == "2026-04-10T00:00:00+02:00"
    assert bal["spent_usd"] == 8.0
    assert bal["balance_usd"] == 12.0
    assert doc["budget"]["spent_usd"] == 13.0


def test_balance_since_spans_months(book: Book) -> None:
    book.add(ev("2026-03-15T12:00:00+00:00", cost=30), ev("2026-04-15T12:00:00+00:00", cost=20))
    bal = book.figures(NOW, credit_usd=100, balance_since=dt.date(2026, 3, 1))["balance"]
    assert bal["spent_usd"] == 50 and bal["balance_usd"] == 50


def test_balance_since_a_future_date_has_spent_nothing(book: Book) -> None:
    bal = book.add(ev("2026-04-18T12:00:00+00:00", cost=3)).figures(
        NOW, credit_usd=100, balance_since=dt.date(2026, 5, 1))["balance"]
    assert bal["spent_usd"] == 0 and bal["balance_usd"] == 100 and bal["level"] == "ok"


def test_balance_counts_unpriced_calls_separately(book: Book) -> None:
    bal = book.add(ev("2026-04-18T12:00:00+00:00", cost=None), ev("2026-04-18T13:00:00+00:00",
                                                                  cost=4)).figures(
        NOW, credit_usd=100, balance_since=dt.date(2026, 4, 1))["balance"]
    assert bal["spent_usd"] == 4 and bal["unpriced_calls"] == 1


# -- unpriced, sessions, bad input, stale ---------------------------------------------------


def test_no_unpriced_alert_when_everything_is_priced(book: Book) -> None:
    assert alert(book.add(ev("2026-04-18T12:00:00+00:00", cost=0.0)).figures(NOW),
                 "unpriced") is None


def test_one_unpriced_call_this_month_is_a_warning_naming_the_model(book: Book) -> None:
    doc = book.add(ev("2026-04-18T12:00:00+00:00", 70, cost=None, provider="ollama",
                      model="llama3"),
                   ev("2026-04-18T12:00:01+00:00", 30, cost=1.0)).figures(NOW)
    found = alert(doc, "unpriced")
    assert found is not None and found["level"] == "warning" and found["value"] == 1
    assert "ollama/llama3" in found["message"]
    month = doc["windows"]["month"]
    assert month["unpriced_calls"] == 1 and month["unpriced_tokens"] == 70
    assert month["cost_usd"] == 1.0


def test_unpriced_calls_of_last_month_raise_no_alert(book: Book) -> None:
    doc = book.add(ev("2026-03-31T23:59:59+00:00", cost=None)).figures(NOW)
    assert doc["windows"]["last_month"]["unpriced_calls"] == 1
    assert alert(doc, "unpriced") is None


@pytest.mark.parametrize(("tokens", "flagged"), [(999, False), (1000, True), (1001, True)])
def test_session_review_flags_sessions_that_reach_the_threshold(tokens: int, flagged: bool,
                                                                book: Book) -> None:
    book.add(ev("2026-04-18T12:00:00+00:00", tokens - 1, session="big"),
             ev("2026-04-18T12:00:01+00:00", 1, session="big"),
             ev("2026-04-18T12:00:02+00:00", 998, session="small"))
    doc = book.figures(NOW, session_review_tokens=1000)
    found = alert(doc, "session_review")
    assert (found is not None) == flagged
    if found:
        assert found["level"] == "warning"
        assert found["value"] == 1
        assert found["threshold"] == 1000
        assert "main/big" in found["message"] and "small" not in found["message"]


@pytest.mark.parametrize(("bad", "unreadable", "value"), [(0, 0, None), (1, 0, 1), (0, 1, 1),
                                                         (3, 2, 5)])
def test_bad_lines_or_unreadable_files_raise_a_warning(bad: int, unreadable: int,
                                                       value: int | None, book: Book) -> None:
    doc = book.figures(NOW, health=Health(bad_lines=bad, unreadable=unreadable))
    found = alert(doc, "bad_input")
    assert (found and found["value"]) == value
    if found:
        assert found["level"] == "warning"


@pytest.mark.parametrize(("age", "stale"), [(None, False), (10.0, False), (179.999, False),
                                            (180.0, False), (180.001, True), (86400.0, True)])
def test_stale_after_more_than_three_scan_intervals(age: float | None, stale: bool,
                                                    book: Book) -> None:
    doc = book.figures(NOW, health=Health(last_scan_age=age, scan_interval=60.0))
    found = alert(doc, "stale")
    assert (found is not None) == stale
    if found:
        assert found["level"] == "critical"
        assert found["value"] == age and found["threshold"] == 180.0


def test_alerts_list_critical_first(book: Book) -> None:
    doc = book.add(ev("2026-04-18T12:00:00+00:00", 900, cost=None)).figures(
        NOW, weekly_tokens=1000, health=Health(bad_lines=1, last_scan_age=1e6))
    levels = [a["level"] for a in doc["alerts"]]
    assert levels == sorted(levels, key=lambda lv: lv != "critical")
    assert {a["id"] for a in doc["alerts"]} == {"capacity", "unpriced", "bad_input", "stale"}
    for a in doc["alerts"]:
        assert set(a) == {"id", "level", "title", "message", "value", "threshold"}


# -- windows: DST, odd offsets, edges -------------------------------------------------------


@pytest.mark.parametrize(("zone", "day", "start", "next_start", "hours"), [
    ("America/Los_Angeles", "2026-03-08", "2026-03-08T00:00:00-08:00",
     "2026-03-09T00:00:00-07:00", 23),
    ("America/Los_Angeles", "2026-11-01", "2026-11-01T00:00:00-07:00",
     "2026-11-02T00:00:00-08:00", 25),
    ("Europe/Berlin", "2026-03-29", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00",
     23),
    ("Europe/Berlin", "2026-10-25", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00",
     25),
])
def test_a_day_window_on_a_dst_day_spans_its_real_hours(zone: str, day: str, start: str,
                                                        next_start: str, hours: int,
                                                        book: Book) -> None:
    first, nxt = ts_of(start), ts_of(next_start)
    assert nxt - first == hours * H
    book.add(ev(first - 1, 1), ev(first, 10), ev(first + 2.5 * H, 100), ev(nxt - 1, 1000),
             ev(nxt, 10000))
    last_second = dt.datetime.fromtimestamp(nxt - 1, ZoneInfo(zone))
    doc = book.figures(last_second, zone)
    today = doc["windows"]["today"]
    assert today["start"] == start
    assert total(today) == 1110
    assert dt.datetime.fromisoformat(today["end"]).timestamp() - first == hours * H - 1
    later = book.figures(dt.datetime.fromtimestamp(nxt + 3 * H, dt.UTC), zone)
    days = daily(later)
    assert total(days[day]) == 1110
    assert total(later["windows"]["today"]) == 10000
    assert later["windows"]["today"]["start"] == next_start


def test_both_repeated_hours_of_a_fall_back_day_count_on_that_day(book: Book) -> None:
    la = ZoneInfo("America/Los_Angeles")
    first = dt.datetime(2026, 11, 1, 1, 30, tzinfo=la, fold=0)  # 01:30 PDT
    second = dt.datetime(2026, 11, 1, 1, 30, tzinfo=la, fold=1)  # 01:30 PST, an hour later
    assert second.timestamp() - first.timestamp() == H
    book.add(ev(first.timestamp(), 1), ev(second.timestamp(), 2))
    doc = book.figures("2026-11-01T12:00:00-08:00", "America/Los_Angeles")
    assert total(doc["windows"]["today"]) == 3
    assert total(daily(doc)["2026-11-01"]) == 3


def test_a_missing_local_midnight_starts_the_day_at_the_first_valid_instant(book: Book) -> None:
    # Santiago springs forward at midnight: 2026-09-06 begins at 01:00 -03
    book.add(ev("2026-09-05T23:59:59-04:00", 1), ev("2026-09-06T01:00:00-03:00", 10))
    doc = book.figures("2026-09-06T12:00:00-03:00", "America/Santiago")
    assert doc["windows"]["today"]["start"] == "2026-09-06T01:00:00-03:00"
    assert total(doc["windows"]["today"]) == 10
    assert total(daily(doc)["2026-09-05"]) == 1


@pytest.mark.parametrize(("zone", "now", "week_start", "inside", "outside"), [
    # the week of the fall-back Sunday starts on Monday in summer time
    ("America/Los_Angeles", "2026-11-01T12:00:00-08:00", "2026-10-26T00:00:00-07:00",
     "2026-10-26T00:00:00-07:00", "2026-10-25T23:59:59-07:00"),
    # the week after it starts in winter time
    ("America/Los_Angeles", "2026-11-02T12:00:00-08:00", "2026-11-02T00:00:00-08:00",
     "2026-11-02T00:00:00-08:00", "2026-11-01T23:59:59-08:00"),
    ("America/Los_Angeles", "2026-03-08T12:00:00-07:00", "2026-03-02T00:00:00-08:00",
     "2026-03-02T00:00:00-08:00", "2026-03-01T23:59:59-08:00"),
    ("Europe/Berlin", "2026-03-29T12:00:00+02:00", "2026-03-23T00:00:00+01:00",
     "2026-03-23T00:00:00+01:00", "2026-03-22T23:59:59+01:00"),
])
def test_iso_week_across_a_dst_change_starts_at_local_monday_midnight(
        zone: str, now: str, week_start: str, inside: str, outside: str, book: Book) -> None:
    book.add(ev(outside, 1), ev(inside, 10), ev(now, 100))
    doc = book.figures(now, zone)
    week = doc["windows"]["week"]
    assert week["start"] == week_start
    assert total(week) == 110
    assert dt.date.fromisoformat(week_start[:10]).isoweekday() == 1


@pytest.mark.parametrize(("zone", "midnight"), [
    ("Asia/Kolkata", "2026-04-18T18:30:00+00:00"),  # +05:30
    ("Asia/Kathmandu", "2026-04-18T18:15:00+00:00"),  # +05:45
    ("Australia/Lord_Howe", "2026-04-18T13:30:00+00:00"),  # +10:30 in April (30-min DST)
])
def test_zones_with_30_and_45_minute_offsets_bucket_by_local_day(zone: str, midnight: str,
                                                                 book: Book) -> None:
    m = ts_of(midnight)
    local = dt.datetime.fromtimestamp(m, ZoneInfo(zone))
    assert (local.hour, local.minute, local.second) == (0, 0, 0)
    # quarter hours on both sides of local midnight, far from `now` and every cut point
    book.add(ev(m - 900, 1), ev(m - 1, 10), ev(m, 100), ev(m + 899, 1000), ev(m + 900, 10000))
    now = dt.datetime.fromtimestamp(m + 14 * H, dt.UTC)
    doc = book.figures(now, zone)
    days = daily(doc)
    assert total(days["2026-04-18"]) == 11
    assert total(days["2026-04-19"]) == 11100
    assert total(doc["windows"]["today"]) == 11100
    assert doc["windows"]["today"]["start"] == local.isoformat()


@pytest.mark.parametrize("now", ["2026-04-20T12:00:00+00:00", "2026-04-20T12:07:30.250+00:00"])
def test_last_7_days_is_exactly_168_hours_with_both_ends_inclusive(now: str,
                                                                   book: Book) -> None:
    n = ts_of(now)
    start = n - 168 * H
    book.add(ev(start - 0.001, 1), ev(start, 10), ev(start + 1, 100), ev(n - 1, 1000),
             ev(n, 10000), ev(n + 0.001, 100000))
    doc = book.figures(now)
    win = doc["windows"]["last_7_days"]
    assert total(win) == 11110
    assert ts_of(win["end"]) == n
    assert ts_of(win["start"]) == start
    assert total(doc["windows"]["all_time"]) == 11111  # the event after `now` is not yet


def test_last_7_days_across_dst_is_168_real_hours(book: Book) -> None:
    doc = book.figures("2026-03-10T12:00:00-07:00", "America/Los_Angeles")
    assert doc["windows"]["last_7_days"]["start"] == "2026-03-03T11:00:00-08:00"


def test_events_right_before_and_after_local_midnight(book: Book) -> None:
    book.add(ev("2026-04-19T23:59:59.999-07:00", 1), ev("2026-04-20T00:00:00-07:00", 10))
    doc = book.figures("2026-04-20T08:00:00-07:00", "America/Los_Angeles")
    assert total(doc["windows"]["today"]) == 10
    assert total(daily(doc)["2026-04-19"]) == 1
    assert total(daily(doc)["2026-04-20"]) == 10


def test_last_month_ends_where_this_month_starts(book: Book) -> None:
    book.add(ev("2026-02-28T23:59:59-08:00", 1), ev("2026-03-01T00:00:00-08:00", 10),
             ev("2026-01-31T23:59:59-08:00", 100), ev("2026-02-01T00:00:00-08:00", 1000))
    doc = book.figures("2026-03-05T12:00:00-08:00", "America/Los_Angeles")
    assert total(doc["windows"]["last_month"]) == 1001
    assert doc["windows"]["last_month"]["start"] == "2026-02-01T00:00:00-08:00"
    assert doc["windows"]["last_month"]["end"] == "2026-03-01T00:00:00-08:00"
    assert total(doc["windows"]["month"]) == 10


def test_last_month_of_january_is_december(book: Book) -> None:
    book.add(ev("2025-12-31T23:00:00+00:00", 7))
    doc = book.figures("2026-01-10T00:00:00+00:00")
    assert doc["windows"]["last_month"]["start"] == "2025-12-01T00:00:00+00:00"
    assert total(doc["windows"]["last_month"]) == 7


def test_undated_events_count_in_all_time_only(book: Book) -> None:
    book.add(ev(None, 5, cost=1.0), ev("2026-04-20T11:00:00+00:00", 7, cost=2.0))
    doc = book.figures(NOW)
    assert total(doc["windows"]["all_time"]) == 12
    assert doc["windows"]["all_time"]["cost_usd"] == 3.0
    assert total(doc["windows"]["today"]) == 7
    assert sum(total(d) for d in doc["daily"]) == 7


def test_a_local_now_gives_the_same_figures_as_utc(book: Book) -> None:
    book.add(ev("2026-03-02T10:00:00-08:00", 3, cost=2.0), ev("2026-03-09T10:00:00-07:00", 5,
                                                              cost=4.0))
    zone = "America/Los_Angeles"
    kw: dict[str, Any] = {"monthly_usd": 10, "weekly_tokens": 100}
    utc = book.figures(dt.datetime(2026, 3, 10, 3, 30, tzinfo=dt.UTC), zone, **kw)
    local = book.figures(dt.datetime(2026, 3, 9, 20, 30, tzinfo=ZoneInfo(zone)), zone, **kw)
    assert local == utc


def test_token_kinds_add_up_to_the_total(book: Book) -> None:
    book.add(mixed("2026-04-20T10:00:00+00:00", 1, 20, 300, 4000, 0.5))
    tokens = book.figures(NOW)["windows"]["today"]["tokens"]
    assert tokens == {"input": 1, "output": 20, "cache_read": 300, "cache_write": 4000,
                      "total": 4321}


def test_every_window_states_its_start_end_and_zone(book: Book) -> None:
    doc = book.figures("2026-04-20T12:00:00+02:00", "Europe/Berlin")
    assert doc["timezone"] == "Europe/Berlin"
    assert doc["now"] == "2026-04-20T12:00:00+02:00"
    for name, win in doc["windows"].items():
        if name != "last_month":
            assert win["end"] == "2026-04-20T12:00:00+02:00", name
        if name != "all_time":
            assert dt.datetime.fromisoformat(win["start"]).tzinfo is not None, name
    assert doc["windows"]["all_time"]["start"] is None
    assert doc["windows"]["month"]["start"] == "2026-04-01T00:00:00+02:00"
    assert doc["windows"]["last_month"]["start"] == "2026-03-01T00:00:00+01:00"


# -- every figure agrees with the others ----------------------------------------------------

ZONES = ["UTC", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham"]
BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
SPAN = 75 * 86400


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[str, float, list[tuple[float | None, int, float | None]]]:
    zone = draw(st.sampled_from(ZONES))
    now = BASE + draw(st.integers(20 * 86400, SPAN)) + draw(st.sampled_from([0, 0.5, 431.25]))
    anchors = [now, now - 168 * H, now - 24 * H]
    when = st.one_of(
        st.integers(0, SPAN * 1000).map(lambda ms: BASE + ms / 1000),
        st.tuples(st.sampled_from(anchors), st.integers(-2000, 2000)).map(lambda t: t[0] + t[1]),
        st.none())
    events = draw(st.lists(st.tuples(when, st.integers(1, 10**6),
                                     st.one_of(st.none(), st.floats(0, 5, allow_nan=False))),
                           max_size=60))
    return zone, now, events


def _local_day(ts: float, zone: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(ts, zone).date()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledgers())
def test_every_window_agrees_with_the_daily_series_and_a_brute_force_count(
        case: tuple[str, float, list[tuple[float | None, int, float | None]]]) -> None:
    zone_name, now, events = case
    zone = ZoneInfo(zone_name)
    with tempfile.TemporaryDirectory() as folder:
        book = Book(Path(folder) / "x.db")
        try:
            book.add(*(ev(t, n, cost=c, session=f"s{i % 7}") for i, (t, n, c) in
                       enumerate(events)))
            doc = book.figures(dt.datetime.fromtimestamp(now, dt.UTC), zone_name,
                               credit_usd=100, balance_since=dt.date(2026, 3, 20),
                               monthly_usd=50, weekly_tokens=10**7)
        finally:
            book.ledger.close()
    today = _local_day(now, zone)
    monday = today - dt.timedelta(days=today.weekday())
    first = today.replace(day=1)
    prev_first = (first - dt.timedelta(days=1)).replace(day=1)
    dated = [(t, n, c) for t, n, c in events if t is not None and t <= now]
    expected = {
        "all_time": [(n, c) for t, n, c in events if t is None or t <= now],
        "today": [(n, c) for t, n, c in dated if _local_day(t, zone) == today],
        "week": [(n, c) for t, n, c in dated if monday <= _local_day(t, zone)],
        "month": [(n, c) for t, n, c in dated if first <= _local_day(t, zone)],
        "last_month": [(n, c) for t, n, c in dated if prev_first <= _local_day(t, zone) < first],
        "last_7_days": [(n, c) for t, n, c in dated if t >= now - 168 * H],
    }
    days = daily(doc)
    for name, rows in expected.items():
        win = doc["windows"][name]
        assert total(win) == sum(n for n, _ in rows), name
        assert win["calls"] == len(rows), name
        assert win["unpriced_calls"] == sum(c is None for _, c in rows), name
        assert math.isclose(win["cost_usd"], math.fsum(c for _, c in rows if c),
                            rel_tol=1e-12, abs_tol=1e-9), name
    # the daily series is the same events, by local date
    by_day: dict[str, int] = {}
    for t, n, _ in dated:
        key = _local_day(t, zone).isoformat()
        by_day[key] = by_day.get(key, 0) + n
    assert {d: total(f) for d, f in days.items()} == by_day

    def span(lo: dt.date, hi: dt.date) -> tuple[int, int, float]:
        rows = [f for d, f in days.items() if lo <= dt.date.fromisoformat(d) <= hi]
        return (sum(total(f) for f in rows), sum(f["calls"] for f in rows),
                math.fsum(f["cost_usd"] for f in rows))

    for name, lo in (("today", today), ("week", monday), ("month", first)):
        tokens, calls, cost = span(lo, today)
        win = doc["windows"][name]
        assert (total(win), win["calls"]) == (tokens, calls), name
        assert math.isclose(win["cost_usd"], cost, rel_tol=1e-12, abs_tol=1e-9), name
    month_key = first.strftime("%Y-%m")
    monthly = {m["month"]: m for m in doc["monthly"]}
    if month_key in monthly:
        assert total(monthly[month_key]) == total(doc["windows"]["month"])
    assert sum(total(m) for m in doc["monthly"]) == sum(by_day.values())
    all_time = total(doc["windows"]["all_time"])
    for group in ("sources", "models", "agents"):
        assert sum(total(g) for g in doc[group]) == all_time, group
    assert doc["capacity"]["used_tokens"] == total(doc["windows"]["last_7_days"])
    assert doc["budget"]["spent_usd"] == doc["windows"]["month"]["cost_usd"]
    since = dt.date(2026, 3, 20)
    spent = math.fsum(c for t, _, c in dated if c and _local_day(t, zone) >= since)
    assert math.isclose(doc["balance"]["spent_usd"], spent, rel_tol=1e-12, abs_tol=1e-9)
    assert math.isclose(doc["balance"]["balance_usd"], 100 - spent, rel_tol=1e-12,
                        abs_tol=1e-9)


def test_every_alert_id_and_figure_is_defined_in_docs_metrics() -> None:
    import re

    from conftest import REPO

    source = (REPO / "usaged" / "metrics.py").read_text()
    ids = set(re.findall(r'add\("([a-z_]+)"', source))
    assert ids == {"budget", "budget_projection", "capacity", "balance", "unpriced",
                   "session_review", "bad_input", "stale"}
    text = (REPO / "docs" / "metrics.md").read_text()
    for id_ in ids:
        assert f"| `{id_}` |" in text, id_
    for figure in ("projected_month_usd", "used_ratio", "left_ratio", "left_tokens",
                   "burn_tokens_per_hour", "hours_to_exhaustion", "balance_usd", "over_usd",
                   "spent_usd", "unpriced_calls", "unpriced_tokens", "last_7_days"):
        assert f"`{figure}`" in text, figure
