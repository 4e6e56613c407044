"""Render: the outputs as bytes, pure functions of the document built by metrics.

- usage.json: `document()` adds schema, generation time and daemon state to the metrics.
- usage.html: one self-contained page from templates/dashboard.html.j2 (Jinja2, autoescaped).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import jinja2

SCHEMA = 1


def document(figures: dict[str, Any], generated_at: dt.datetime, daemon: dict[str, Any]
             ) -> dict[str, Any]:
    """The usage.json document: versioned, every timestamp ISO-8601 with an offset."""
    return {"schema": SCHEMA, "generated_at": generated_at.isoformat(), **figures,
            "daemon": daemon}


def render_json(doc: dict[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


# The page's only script: keeps "updated N min ago" current between refreshes and flags a page
# the daemon has stopped rewriting. Allowed by its hash in the page's Content-Security-Policy.
_AGE_SCRIPT = (
    "(function(){var e=document.getElementById('age');if(!e)return;"
    "var g=Number(e.getAttribute('data-generated')),"
    "w=Number(e.getAttribute('data-stale-after'));"
    "function t(){var s=Math.max(0,(Date.now()-g)/1000);"
    "e.textContent=s<90?'just now':s<5400?Math.round(s/60)+' min ago':"
    "s<172800?Math.round(s/3600)+' h ago':Math.round(s/86400)+' days ago';"
    "e.className=s>w?'age stale':'age';}t();setInterval(t,15000);})();"
)
_CHART_W, _CHART_H = 960, 220  # SVG user units (about 1.2 px each on a desktop page)
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 8, 56, 12, 26  # y labels on the right
_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


@functools.cache
def _environment() -> jinja2.Environment:
    """Built once per process: compiling the template costs far more than rendering it.
    (jinja2 is imported here, not above: `usaged status` renders no page.)"""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("usaged", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(tokens=fmt_tokens, count=fmt_count, usd=fmt_usd, pct=fmt_pct,
                       when=fmt_when, day=fmt_day, hours=fmt_hours, ago=fmt_ago,
                       cost_text=fmt_cost_text, width=_width)
    return env


def render_html(doc: dict[str, Any], refresh_seconds: int = 60, chart_days: int = 30) -> str:
    """The dashboard page: self-contained (inline CSS, SVG and one hashed script), autoescaped."""
    script_hash = base64.b64encode(hashlib.sha256(_AGE_SCRIPT.encode()).digest()).decode()
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'")
    import markupsafe

    script = markupsafe.Markup(_AGE_SCRIPT)  # noqa: S704 (our constant, never data)
    template = _environment().get_template("dashboard.html.j2")
    return template.render(
        doc=doc, refresh_seconds=refresh_seconds, chart=_chart(doc, chart_days),
        daemon=doc.get("daemon") or {}, csp=csp, script=script,
        generated_ms=_epoch_ms(doc["generated_at"]),
        stale_after=max(3 * refresh_seconds, 900))


# -- number and time formatting (Jinja filters) ---------------------------------------------


def fmt_tokens(n: float | None) -> str:
    """Compact token count: 950, 12.3k, 1.2M, 4.56B (three significant digits at most)."""
    if n is None:
        return "—"
    if abs(n) < 999.5:
        return f"{n:,.0f}"
    for unit, suffix in _UNITS:
        if abs(n) >= unit * 0.9995:
            v = n / unit
            text = f"{v:.{max(0, 2 - int(math.log10(abs(v))))}f}" if abs(v) < 1000 \
                else f"{v:,.0f}"
            return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix
    return f"{n:,.0f}"  # pragma: no cover (unreachable: every |n| >= 999.5 has a unit)


def fmt_count(n: float | None) -> str:
    return "—" if n is None else f"{n:,.0f}"


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "—"
    sign = "-" if v < 0 else ""
    a = abs(v)
    if 0 < a < 0.005:
        return f"{sign}<$0.01"
    return f"{sign}${a:,.0f}" if a >= 10_000 else f"{sign}${a:,.2f}"


def fmt_pct(r: float | None) -> str:
    if r is None:
        return "—"
    return "<1%" if 0 < r < 0.005 else f"{r:.0%}"


def fmt_cost_text(b: dict[str, Any]) -> str:
    """A bucket's cost as plain text: "unknown" when nothing in it is priced."""
    unpriced = b.get("unpriced_calls") or 0
    cost = b.get("cost_usd") or 0.0
    if unpriced and not cost:
        return "unknown"
    return f"{fmt_usd(cost)} + {unpriced:,} unpriced" if unpriced else fmt_usd(cost)


def fmt_when(iso: Any) -> str:
    """An ISO timestamp as the wall time it was written in ("2025-03-14 09:30")."""
    t = _parse(iso)
    if t is None:
        return "—" if iso is None or iso == "" else str(iso)
    return t.strftime("%Y-%m-%d %H:%M")


def fmt_day(iso: Any) -> str:
    """An ISO timestamp's local date, short ("Mon Mar 10")."""
    t = _parse(iso)
    return fmt_when(iso) if t is None else f"{t:%a %b} {t.day}"


def fmt_ago(iso: Any, now_iso: str) -> str:
    t, now = _parse(iso), _parse(now_iso)
    if t is None or now is None:
        return "—"
    s = (now - t).total_seconds()
    if s < 90:
        return "just now"
    if s < 90 * 60:
        return f"{s / 60:.0f} min ago"
    if s < 48 * 3600:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} days ago"


def fmt_hours(h: float | None) -> str:
    if h is None:
        return "—"
    if h < 1:
        return "<1 h"
    return f"{h:.0f} h" if h < 48 else f"{h / 24:.1f} days"


def _width(ratio: float | None) -> str:
    """A progress bar's CSS width: the ratio clamped to [0, 100] %."""
    r = 0.0 if ratio is None or math.isnan(ratio) else min(1.0, max(0.0, ratio))
    return f"{r * 100:.1f}%"


def _parse(iso: Any) -> dt.datetime | None:
    if not iso or not isinstance(iso, str):
        return None
    try:
        return dt.datetime.fromisoformat(iso)
    except ValueError:
        return None


def _epoch_ms(iso: str) -> int:
    t = _parse(iso)
    return 0 if t is None or t.tzinfo is None else int(t.timestamp() * 1000)


# -- daily chart ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bar:
    day: dt.date
    figures: dict[str, Any]
    x: float
    y: float
    w: float
    h: float
    slot_x: float
    slot_w: float
    label: str | None


@dataclass(frozen=True, slots=True)
class _Chart:
    bars: list[_Bar]
    ticks: list[tuple[float, str]]  # (y, label) of the horizontal grid lines
    width: int
    height: int
    left: int
    right: float
    baseline: float
    total: dict[str, Any]  # the chart period's sums: tokens.total, calls, cost, unpriced


def _chart(doc: dict[str, Any], days: int) -> _Chart:
    """Bars of total tokens for the `days` local dates ending at `now`'s, missing days as 0."""
    days = max(1, days)
    last = dt.datetime.fromisoformat(doc["now"]).date()  # `now` is local to the zone
    by_date = {d["date"]: d for d in doc.get("daily", [])}
    dates = [last - dt.timedelta(days=days - 1 - i) for i in range(days)]
    rows = [by_date.get(d.isoformat()) or _empty(d) for d in dates]
    top, ticks = _scale(max(r["tokens"]["total"] for r in rows))
    plot_h = _CHART_H - _PAD_TOP - _PAD_BOTTOM
    baseline = _CHART_H - _PAD_BOTTOM
    slot = (_CHART_W - _PAD_LEFT - _PAD_RIGHT) / days
    every = max(1, math.ceil(days / 7))
    bars = []
    for i, (d, r) in enumerate(zip(dates, rows, strict=True)):
        total = r["tokens"]["total"]
        h = total / top * plot_h if total else 0.0
        h = max(h, 1.5) if total else 0.0
        w = max(1.0, slot * 0.72)
        x0 = _PAD_LEFT + i * slot
        label = f"{d:%b} {d.day}" if (days - 1 - i) % every == 0 else None
        bars.append(_Bar(d, r, round(x0 + (slot - w) / 2, 2), round(baseline - h, 2),
                         round(w, 2), round(h, 2), round(x0, 2), round(slot, 2), label))
    return _Chart(bars, [(round(baseline - v / top * plot_h, 2), fmt_tokens(v)) for v in ticks],
                  _CHART_W, _CHART_H, _PAD_LEFT, _CHART_W - _PAD_RIGHT, baseline,
                  _sum_rows(rows))


def _scale(peak: float) -> tuple[float, list[float]]:
    """A round axis maximum at or above `peak` and its 3 to 5 grid values (0 included)."""
    if peak <= 0:
        return 1.0, [0.0]
    magnitude = max(1, 10 ** math.floor(math.log10(peak / 4)))  # tokens are whole
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if peak / (m * magnitude) <= 4)
    n = math.ceil(peak / step - 1e-9)
    return n * step, [i * step for i in range(n + 1)]


def _empty(day: dt.date) -> dict[str, Any]:
    return {"date": day.isoformat(), "calls": 0, "cost_usd": 0.0, "unpriced_calls": 0,
            "unpriced_tokens": 0, "tokens": {"input": 0, "output": 0, "cache_read": 0,
                                             "cache_write": 0, "total": 0}}


def _sum_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tokens": {"total": sum(r["tokens"]["total"] for r in rows)},
            "calls": sum(r["calls"] for r in rows),
            "cost_usd": math.fsum(r["cost_usd"] for r in rows),
            "unpriced_calls": sum(r["unpriced_calls"] for r in rows)}
