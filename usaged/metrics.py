"""Metrics: every figure of the dashboard, a pure function of (snapshot, settings, health, now).

Definitions (docs/metrics.md):
- tokens = input + output + cache_read + cache_write; cost sums priced events only, and
  `unpriced_calls` / `unpriced_tokens` say what is missing from it.
- today / week (ISO, Monday) / month / last_month are calendar windows in the configured zone;
  last_7_days is the rolling last 168 hours; all windows end at `now` (inclusive).
- budget, capacity, balance and alerts follow from those windows and the thresholds.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from usaged.ledger import QUARTER, UNDATED_Q, BucketRow, Snapshot, Sums, quarter

Level = Literal["ok", "warning", "critical"]
PROJECTION_MIN_HOURS = 6.0  # no month-end projection before this much of the month has passed
REVIEW_ACTIVE = 168 * 3600.0  # session_review flags sessions active in the last 7 days


@dataclass(frozen=True, slots=True)
class Settings:
    """The slice of the config metrics read (see config.SCHEMA for meanings)."""

    zone: ZoneInfo
    top_sessions: int = 20
    monthly_usd: float | None = None
    weekly_tokens: float | None = None
    burn_window_hours: float = 24.0
    credit_usd: float | None = None
    balance_since: dt.date | None = None
    warn_ratio: float = 0.8
    critical_ratio: float = 1.0
    balance_low_usd: float = 10.0
    session_review_tokens: float = 10_000_000


@dataclass(frozen=True, slots=True)
class Health:
    """What the ledger and the daemon know about themselves (for the data-quality alerts)."""

    files: int = 0
    events: int = 0
    bad_lines: int = 0
    unreadable: int = 0
    last_scan_age: float | None = None  # seconds since the last completed scan
    scan_interval: float = 60.0
    problems: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    start: dt.datetime | None  # None: since the beginning
    end: dt.datetime  # the window holds [start, end] (or [start, end) when `open_end`)
    open_end: bool = False

    def holds(self, ts: float) -> bool:
        lo, hi = self.bounds()
        return lo <= ts and (ts < hi if self.open_end else ts <= hi)

    def bounds(self) -> tuple[float, float]:
        """[start, end] as epoch seconds (start -inf when the window has none)."""
        return (-math.inf if self.start is None else self.start.timestamp(),
                self.end.timestamp())


@dataclass(slots=True)
class _Acc:
    """Running figures of a group of events: additive counts, and every cost (summed exactly,
    with math.fsum, only when read, so a figure does not depend on the order of adding)."""

    # calls, input, output, cache_read, cache_write, unpriced_calls, unpriced_tokens
    n: list[int] = field(default_factory=lambda: [0] * 7)
    costs: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, s: Sums) -> _Acc:
        acc = cls()
        acc.add(s)
        return acc

    def add(self, s: Sums) -> None:
        n = self.n
        n[0] += s.calls
        n[1] += s.input
        n[2] += s.output
        n[3] += s.cache_read
        n[4] += s.cache_write
        n[5] += s.unpriced_calls
        n[6] += s.unpriced_tokens
        if s.cost:
            self.costs.append(s.cost)

    def merge(self, other: _Acc) -> None:
        self.n = [a + b for a, b in zip(self.n, other.n, strict=True)]
        self.costs.extend(other.costs)

    @property
    def total(self) -> int:
        n = self.n
        return n[1] + n[2] + n[3] + n[4]

    @property
    def cost(self) -> float:
        return math.fsum(self.costs)


@dataclass(slots=True)
class Settled:
    """The figures of every quarter hour before `until_q`, which no window but all-time reaches
    (nor the balance, unless it started earlier): the days, the tables, all-time. Built once by
    `settle` and merged into `compute` while none of those quarter hours changes, so a write
    reads only the recent buckets (the daemon keeps one: pipeline.FiguresCache)."""

    until_q: int
    zone: str
    balance_from: float
    all_time: _Acc = field(default_factory=_Acc)
    daily: dict[dt.date, _Acc] = field(default_factory=dict)
    models: dict[tuple[str, str, str], _Acc] = field(default_factory=dict)
    sources: dict[str, _Acc] = field(default_factory=dict)
    agents: dict[tuple[str, str], _Acc] = field(default_factory=dict)
    balance: _Acc = field(default_factory=_Acc)


def settled_until(settings: Settings, now: dt.datetime) -> int:
    """The first quarter hour any window other than all-time can reach: the earliest window
    start (usually the start of last month)."""
    starts = [w.start.timestamp() for w in windows(now, settings.zone).values() if w.start]
    return quarter(min([*starts, now.timestamp() - settings.burn_window_hours * 3600]))


def settle(rows: Iterable[BucketRow], settings: Settings, until_q: int) -> Settled:
    """The settled figures of `rows` (buckets before `until_q`). Costs are kept as exact
    partial sums, so merging them gives what adding every bucket's cost would."""
    zone = settings.zone
    out = Settled(until_q, zone.key, balance_start_ts(settings))
    days: dict[int, dt.date] = {}
    for b in rows:
        if b.q >= until_q:
            raise ValueError(f"bucket {b.q} is not before {until_q}")
        out.all_time.add(b.sums)
        _acc(out.models, (b.source, b.provider, b.model)).add(b.sums)
        _acc(out.sources, b.source).add(b.sums)
        _acc(out.agents, (b.source, b.agent)).add(b.sums)
        if b.q == UNDATED_Q:
            continue
        day = days.get(b.q)
        if day is None:
            day = days[b.q] = dt.datetime.fromtimestamp(b.q * QUARTER, zone).date()
        _acc(out.daily, day).add(b.sums)
        if b.q * QUARTER >= out.balance_from:
            out.balance.add(b.sums)
    for acc in (out.all_time, out.balance, *out.daily.values(), *out.models.values(),
                *out.sources.values(), *out.agents.values()):
        acc.costs = _partials(acc.costs)
    return out


def _partials(costs: list[float]) -> list[float]:
    """Non-overlapping floats whose exact sum is the exact sum of `costs` (Shewchuk), so that
    math.fsum(partials + more) == math.fsum(costs + more)."""
    partials: list[float] = []
    for x in costs:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]
    return partials


def balance_start_ts(settings: Settings) -> float:
    """Where the balance starts counting (local midnight of `balance_since`), as epoch s."""
    if settings.balance_since is None:
        return math.inf
    return _midnight(settings.balance_since, settings.zone).timestamp()


def cut_points(settings: Settings, now: float) -> list[float]:
    """Instants inside quarter hours where a window starts: the ledger returns raw events there."""
    return [now - 168 * 3600, now - settings.burn_window_hours * 3600]


def windows(now: dt.datetime, zone: ZoneInfo) -> dict[str, Window]:
    now = now.astimezone(dt.UTC)  # arithmetic on an aware local time would be wall-clock time
    local = now.astimezone(zone)
    midnight = _midnight(local.date(), zone)
    week_start = _midnight(local.date() - dt.timedelta(days=local.weekday()), zone)
    month_start = _midnight(local.date().replace(day=1), zone)
    prev = (local.date().replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    return {
        "all_time": Window("all_time", None, now),
        "today": Window("today", midnight, now),
        "last_7_days": Window("last_7_days", now - dt.timedelta(hours=168), now),
        "week": Window("week", week_start, now),
        "month": Window("month", month_start, now),
        "last_month": Window("last_month", _midnight(prev, zone), month_start, open_end=True),
    }


def _midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """Local midnight of `day` (DST-safe: a missing midnight resolves forward)."""
    naive = dt.datetime.combine(day, dt.time(0, 0))
    aware = naive.replace(tzinfo=zone)
    back = aware.astimezone(dt.UTC).astimezone(zone)
    return aware if back.replace(tzinfo=None) == naive else back


def compute(snap: Snapshot, settings: Settings, health: Health, now: dt.datetime,
            settled: Settled | None = None) -> dict[str, Any]:
    """All figures of usage.json except `generated_at` and daemon state (added by render).

    With `settled`, the snapshot holds only the buckets from `settled.until_q` on and the
    settled figures stand for the older ones: the result is the same."""
    now = now.astimezone(dt.UTC)
    zone = settings.zone
    wins = windows(now, zone)
    # 1. Group the rows by instant (a quarter-hour bucket, or one raw edge event) and by
    #    (source, agent, provider, model): the windows only need the first, the tables the second.
    points: dict[float | None, _Acc] = {}
    groups: dict[tuple[str, str, str, str], _Acc] = {}
    unpriced_at: dict[float | None, set[str]] = {}
    for ts, src, agent, provider, model, sums in _rows(snap):
        _acc(points, ts).add(sums)
        _acc(groups, (src, agent, provider, model)).add(sums)
        if sums.unpriced_calls:
            unpriced_at.setdefault(ts, set()).add(f"{provider}/{model}")

    # 2. Each instant into its windows, its local day, the burn window and the balance.
    accs = {name: _Acc() for name in wins}
    bounds = [(accs[name], *w.bounds(), w.open_end) for name, w in wins.items()]
    daily: dict[dt.date, _Acc] = {}
    burn = _Acc()
    burn_start = snap.now - settings.burn_window_hours * 3600
    balance_start = (None if settings.balance_since is None
                     else _midnight(settings.balance_since, zone))
    balance_from = math.inf if balance_start is None else balance_start.timestamp()
    balance = _Acc()
    for ts, acc in points.items():
        if ts is None:  # undated events: all time only
            accs["all_time"].merge(acc)
            continue
        for target, lo, hi, open_end in bounds:
            if lo <= ts and (ts < hi if open_end else ts <= hi):
                target.merge(acc)
        _acc(daily, dt.datetime.fromtimestamp(ts, zone).date()).merge(acc)
        if ts >= burn_start:
            burn.merge(acc)
        if ts >= balance_from:
            balance.merge(acc)
    if settled is not None:
        accs["all_time"].merge(settled.all_time)
        balance.merge(settled.balance)
        for day, acc in settled.daily.items():
            _acc(daily, day).merge(acc)
    month = wins["month"]
    month_unpriced_models = {m for ts, names in unpriced_at.items()
                             if ts is not None and month.holds(ts) for m in names}

    models: dict[tuple[str, str, str], _Acc] = {}
    sources: dict[str, _Acc] = {}
    agents: dict[tuple[str, str], _Acc] = {}
    if settled is not None:
        for table, done in ((models, settled.models), (sources, settled.sources),
                            (agents, settled.agents)):
            for key, acc in done.items():
                _acc(table, key).merge(acc)
    for (src, agent, provider, model), acc in groups.items():
        _acc(models, (src, provider, model)).merge(acc)
        _acc(sources, src).merge(acc)
        _acc(agents, (src, agent)).merge(acc)

    out: dict[str, Any] = {
        "timezone": zone.key,
        "now": now.astimezone(zone).isoformat(),
        "windows": {n: {"start": w.start.astimezone(zone).isoformat() if w.start else None,
                        "end": w.end.astimezone(zone).isoformat(), **figures(accs[n])}
                    for n, w in wins.items()},
        "daily": [{"date": d.isoformat(), **figures(a)} for d, a in sorted(daily.items())],
        "monthly": _monthly(daily),
        "sources": [{"source": s, **figures(a)} for s, a in _by_total(sources)],
        "models": [{"source": k[0], "provider": k[1], "model": k[2], **figures(a)}
                   for k, a in _by_total(models)],
        "agents": [{"source": k[0], "agent": k[1], **figures(a)} for k, a in _by_total(agents)],
        "sessions": [_session(r, zone) for r in snap.sessions[: settings.top_sessions]],
    }
    out["budget"] = _budget(settings, accs["month"], wins["month"], now)
    out["capacity"] = _capacity(settings, accs["last_7_days"], burn)
    out["balance"] = _balance(settings, balance, balance_start)
    out["alerts"] = alerts(out, settings, health, sorted(month_unpriced_models),
                           [_session(r, zone) for r in snap.sessions_over
                            if r.last_ts is not None and r.last_ts >= snap.now - REVIEW_ACTIVE])
    return out


def _rows(snap: Snapshot) -> Iterable[tuple[float | None, str, str, str, str, Sums]]:
    for b in snap.buckets:
        if b.q in snap.edge_quarters:
            continue
        yield (None if b.q == UNDATED_Q else float(b.q * QUARTER), b.source, b.agent,
               b.provider, b.model, b.sums)
    for e in snap.edge_events:
        yield e.ts, e.source, e.agent, e.provider, e.model, e.sums


def _acc(d: dict[Any, _Acc], key: Any) -> _Acc:
    acc = d.get(key)
    if acc is None:
        acc = d[key] = _Acc()
    return acc


def _by_total(d: dict[Any, _Acc]) -> list[tuple[Any, _Acc]]:
    return sorted(d.items(), key=lambda kv: (-kv[1].total, str(kv[0])))


def figures(acc: _Acc) -> dict[str, Any]:
    calls, input_, output, cache_read, cache_write, unpriced_calls, unpriced_tokens = acc.n
    return {
        "calls": calls,
        "tokens": {"input": input_, "output": output, "cache_read": cache_read,
                   "cache_write": cache_write, "total": acc.total},
        "cost_usd": acc.cost,
        "unpriced_calls": unpriced_calls,
        "unpriced_tokens": unpriced_tokens,
    }


def _monthly(daily: dict[dt.date, _Acc]) -> list[dict[str, Any]]:
    months: dict[str, _Acc] = {}
    for day, acc in daily.items():
        _acc(months, day.strftime("%Y-%m")).merge(acc)
    return [{"month": k, **figures(a)} for k, a in sorted(months.items())]


def _session(r: Any, zone: ZoneInfo) -> dict[str, Any]:
    acc = _Acc.of(r.sums)
    last = dt.datetime.fromtimestamp(r.last_ts, zone).isoformat() if r.last_ts else None
    return {"source": r.source, "agent": r.agent, "session": r.session, **figures(acc),
            "last_activity": last}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def level_of(ratio: float | None, settings: Settings) -> Level:
    if ratio is None:
        return "ok"
    if ratio >= settings.critical_ratio:
        return "critical"
    if ratio >= settings.warn_ratio:
        return "warning"
    return "ok"


def _budget(st: Settings, month: _Acc, win: Window, now: dt.datetime) -> dict[str, Any]:
    spent = month.cost
    if st.monthly_usd is None:
        return {"monthly_usd": None, "spent_usd": spent, "ratio": None, "over_usd": None,
                "projected_month_usd": None, "level": "ok"}
    assert win.start is not None
    local = win.start.astimezone(st.zone)
    next_month = (local.date().replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    month_end = _midnight(next_month, st.zone)
    # Real seconds (timestamps): subtracting two datetimes of the same zone would count wall-clock
    # time and get a month with a DST change an hour wrong.
    elapsed = now.timestamp() - win.start.timestamp()
    length = month_end.timestamp() - win.start.timestamp()
    projected = spent * length / elapsed if elapsed >= PROJECTION_MIN_HOURS * 3600 else None
    ratio = spent / st.monthly_usd
    return {"monthly_usd": st.monthly_usd, "spent_usd": spent, "ratio": ratio,
            "over_usd": max(0.0, spent - st.monthly_usd), "projected_month_usd": projected,
            "month_end": month_end.astimezone(st.zone).isoformat(),
            "level": level_of(ratio, st)}


def _capacity(st: Settings, week: _Acc, burn: _Acc) -> dict[str, Any]:
    used = week.total
    rate = burn.total / st.burn_window_hours
    if st.weekly_tokens is None:
        return {"weekly_tokens": None, "used_tokens": used, "used_ratio": None,
                "left_ratio": None, "left_tokens": None, "burn_tokens_per_hour": rate,
                "burn_window_hours": st.burn_window_hours, "hours_to_exhaustion": None,
                "level": "ok"}
    used_ratio = used / st.weekly_tokens
    left = max(0.0, st.weekly_tokens - used)
    return {"weekly_tokens": st.weekly_tokens, "used_tokens": used, "used_ratio": used_ratio,
            "left_ratio": max(0.0, 1.0 - used_ratio), "left_tokens": left,
            "burn_tokens_per_hour": rate, "burn_window_hours": st.burn_window_hours,
            "hours_to_exhaustion": (left / rate) if rate > 0 else None,
            "level": level_of(used_ratio, st)}


def _balance(st: Settings, acc: _Acc, start: dt.datetime | None) -> dict[str, Any]:
    """`acc` holds what was spent from `start` (local midnight of `since`) to now."""
    if st.credit_usd is None or start is None:
        return {"tracked": False, "credit_usd": None, "since": None, "spent_usd": None,
                "balance_usd": None, "level": "ok"}
    balance = st.credit_usd - acc.cost
    level: Level = "critical" if balance <= 0 else (
        "warning" if balance < st.balance_low_usd else "ok")
    return {"tracked": True, "credit_usd": st.credit_usd, "since": start.isoformat(),
            "spent_usd": acc.cost, "balance_usd": balance, "unpriced_calls": acc.n[5],
            "level": level}


def alerts(out: dict[str, Any], st: Settings, health: Health, unpriced_models: list[str],
           over: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every alert that is not ok, critical first."""
    found: list[dict[str, Any]] = []

    def add(id_: str, level: Level, title: str, message: str, value: Any, threshold: Any
            ) -> None:
        if level != "ok":
            found.append({"id": id_, "level": level, "title": title, "message": message,
                          "value": value, "threshold": threshold})

    b, c, bal = out["budget"], out["capacity"], out["balance"]
    if b["ratio"] is not None:
        add("budget", b["level"], "Monthly budget",
            f"${b['spent_usd']:.2f} of ${b['monthly_usd']:.2f} spent this month "
            f"({b['ratio']:.0%})", b["ratio"],
            st.critical_ratio if b["level"] == "critical" else st.warn_ratio)
        proj = b["projected_month_usd"]
        if proj is not None and proj > b["monthly_usd"] and b["level"] != "critical":
            add("budget_projection", "warning", "Projected overrun",
                f"at this pace the month ends at ${proj:.2f}, over the ${b['monthly_usd']:.2f} "
                "budget", proj, b["monthly_usd"])
    if c["used_ratio"] is not None:
        eta = c["hours_to_exhaustion"]
        tail = f"; ~{eta:.0f} h left at the last {c['burn_window_hours']:g} h's pace" \
            if eta is not None and c["left_tokens"] else ""
        add("capacity", c["level"], "Weekly capacity",
            f"{c['used_ratio']:.0%} of the weekly capacity used in the last 7 days{tail}",
            c["used_ratio"], st.critical_ratio if c["level"] == "critical" else st.warn_ratio)
    if bal["tracked"]:
        add("balance", bal["level"], "Balance depleted" if bal["level"] == "critical"
            else "Balance low", f"${bal['balance_usd']:.2f} left of ${bal['credit_usd']:.2f}",
            bal["balance_usd"], 0 if bal["level"] == "critical" else st.balance_low_usd)
    month = out["windows"]["month"]
    if month["unpriced_calls"]:
        add("unpriced", "warning", "Unpriced usage",
            f"{_n(month['unpriced_calls'], 'call')} this month without a known price "
            f"({', '.join(unpriced_models) or 'unknown models'}): not in the cost totals; "
            "add [[prices]] to the config", month["unpriced_calls"], 0)
    if over:
        names = ", ".join(f"{s['agent']}/{s['session']}" for s in over[:3])
        add("session_review", "warning", "Sessions to review",
            f"{_n(len(over), 'session')} active in the last 7 days reached "
            f"{st.session_review_tokens:,.0f} tokens: {names}",
            len(over), st.session_review_tokens)
    if health.bad_lines or health.unreadable:
        add("bad_input", "warning", "Unreadable input",
            f"{health.bad_lines} bad line(s), {health.unreadable} unreadable file(s); see "
            "`usaged status`", health.bad_lines + health.unreadable, 0)
    age = health.last_scan_age
    if age is not None and age > 3 * health.scan_interval:
        add("stale", "critical", "Data is stale",
            f"no successful scan for {age / 60:.0f} min", age, 3 * health.scan_interval)
    return sorted(found, key=lambda a: a["level"] != "critical")
