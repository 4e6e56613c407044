"""render_html: the dashboard page from a usage.json document (built here by `make_doc`)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import html
import re
from typing import Any

import pytest

from usaged.render import fmt_cost_text, fmt_tokens, fmt_usd, render_html

NOW = "2025-03-14T15:30:00+01:00"
HOSTILE = "<script>alert(1)</script>"


def fig(input: int = 0, output: int = 0, cache_read: int = 0, cache_write: int = 0, *,
        calls: int = 0, cost: float = 0.0, unpriced_calls: int = 0, unpriced_tokens: int = 0
        ) -> dict[str, Any]:
    """The figures every bucket of usage.json carries."""
    return {"calls": calls,
            "tokens": {"input": input, "output": output, "cache_read": cache_read,
                       "cache_write": cache_write,
                       "total": input + output + cache_read + cache_write},
            "cost_usd": cost, "unpriced_calls": unpriced_calls,
            "unpriced_tokens": unpriced_tokens}


def window(start: str | None, end: str = NOW, **kw: Any) -> dict[str, Any]:
    return {"start": start, "end": end, **fig(**kw)}


_DOC: dict[str, Any] = {
    "schema": 1,
    "generated_at": "2025-03-14T15:30:02.123456+01:00",
    "timezone": "Europe/Paris",
    "now": NOW,
    "windows": {
        "all_time": window(None, input=9_000_000, output=600_000, cache_read=80_000_000,
                           cache_write=4_000_000, calls=21_000, cost=412.5),
        "today": window("2025-03-14T00:00:00+01:00", input=52_000, output=8_000,
                        cache_read=700_000, cache_write=40_000, calls=96, cost=3.21),
        "last_7_days": window("2025-03-07T15:30:00+01:00", input=900_000, output=100_000,
                              cache_read=3_000_000, cache_write=200_000, calls=1_400,
                              cost=38.9),
        "week": window("2025-03-10T00:00:00+01:00", input=700_000, output=80_000,
                       cache_read=2_100_000, cache_write=154_000, calls=1_100, cost=29.0),
        "month": window("2025-03-01T00:00:00+01:00", input=1_500_000, output=200_000,
                        cache_read=6_000_000, cache_write=300_000, calls=2_900, cost=41.25),
        "last_month": window("2025-02-01T00:00:00+01:00", "2025-03-01T00:00:00+01:00",
                             input=2_000_000, output=300_000, cache_read=9_000_000,
                             cache_write=500_000, calls=4_000, cost=77.7),
    },
    "daily": [
        {"date": "2025-03-10", **fig(200_000, 20_000, 600_000, 40_000, calls=300, cost=8.0)},
        {"date": "2025-03-12", **fig(300_000, 30_000, 900_000, 60_000, calls=500, cost=12.0)},
        {"date": "2025-03-14", **fig(52_000, 8_000, 700_000, 40_000, calls=96, cost=3.21)},
    ],
    "monthly": [
        {"month": "2025-02", **fig(2_000_000, 300_000, 9_000_000, 500_000, calls=4_000,
                                   cost=77.7)},
        {"month": "2025-03", **fig(1_500_000, 200_000, 6_000_000, 300_000, calls=2_900,
                                   cost=41.25)},
    ],
    "sources": [{"source": "openclaw", **fig(1_000, 100, 5_000, 200, calls=40, cost=2.5)}],
    "models": [
        {"source": "openclaw", "provider": "anthropic", "model": "claude-sonnet-4-5",
         **fig(900, 90, 4_000, 200, calls=30, cost=2.5)},
        {"source": "openclaw", "provider": "local", "model": "llama-3-8b",
         **fig(100, 10, 1_000, 0, calls=10, unpriced_calls=10, unpriced_tokens=1_110)},
    ],
    "agents": [{"source": "openclaw", "agent": "main", **fig(1_000, 100, 5_000, 200,
                                                            calls=40, cost=2.5)}],
    "sessions": [
        {"source": "openclaw", "agent": "main", "session": "telegram-direct-42",
         **fig(700, 70, 3_000, 100, calls=20, cost=1.75),
         "last_activity": "2025-03-14T13:30:00+01:00"},
    ],
    "budget": {"monthly_usd": 50.0, "spent_usd": 41.25, "ratio": 0.825, "over_usd": 0.0,
               "projected_month_usd": 91.33, "month_end": "2025-04-01T00:00:00+02:00",
               "level": "warning"},
    "capacity": {"weekly_tokens": 10_000_000, "used_tokens": 4_200_000, "used_ratio": 0.42,
                 "left_ratio": 0.58, "left_tokens": 5_800_000, "burn_tokens_per_hour": 25_000,
                 "burn_window_hours": 24.0, "hours_to_exhaustion": 232.0, "level": "ok"},
    "balance": {"tracked": True, "credit_usd": 100.0, "since": "2025-03-01T00:00:00+01:00",
                "spent_usd": 41.25, "balance_usd": 58.75, "unpriced_calls": 0, "level": "ok"},
    "alerts": [
        {"id": "budget", "level": "warning", "title": "Monthly budget",
         "message": "$41.25 of $50.00 spent this month (82%)", "value": 0.825,
         "threshold": 0.8},
    ],
    "daemon": {"state": "running", "pid": 4242, "watcher": "inotify",
               "last_scan": "2025-03-14T15:29:58+01:00",
               "started_at": "2025-03-13T08:00:00+01:00"},
}


def make_doc(**changes: Any) -> dict[str, Any]:
    """A complete usage.json document; keyword arguments replace top-level keys."""
    doc = copy.deepcopy(_DOC)
    doc.update(changes)
    return doc


def card(page: str, name: str) -> str:
    """The HTML of one headline card (`card-week`, `card-month`, ...)."""
    m = re.search(rf'<article [^>]*id="card-{name}".*?</article>', page, re.S)
    assert m, f"card {name} not found"
    return m.group(0)


def text(fragment: str) -> str:
    """Roughly what a person reads: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def test_headline_cards_show_week_last_7_days_month_and_today() -> None:
    page = render_html(make_doc())
    assert "3.03M tokens" in text(card(page, "week"))
    assert "4.2M tokens" in text(card(page, "last7"))
    assert "$41.25" in text(card(page, "month"))
    assert "3.21" in text(card(page, "today"))


def test_capacity_bar_shows_ratio_and_level() -> None:
    last7 = card(render_html(make_doc()), "last7")
    assert 'class="progress lvl-ok"' in last7
    assert "width: 42.0%" in last7
    assert "42% of 10M weekly capacity" in text(last7)
    assert "5.8M left (58%)" in text(last7)


def test_budget_bar_shows_ratio_level_and_projection() -> None:
    month = card(render_html(make_doc()), "month")
    assert 'class="progress lvl-warning"' in month
    assert "width: 82.5%" in month
    assert "82% of the $50.00 budget" in text(month)
    assert "Projected month end: $91.33" in text(month)


def test_budget_over_shows_overage_and_full_bar() -> None:
    doc = make_doc()
    doc["budget"].update(spent_usd=62.0, ratio=1.24, over_usd=12.0, level="critical")
    month = card(render_html(doc), "month")
    assert 'class="progress lvl-critical"' in month
    assert "width: 100.0%" in month
    assert "$12.00 over" in text(month)


def test_without_capacity_and_budget_figures_are_plain() -> None:
    doc = make_doc()
    doc["budget"] = {"monthly_usd": None, "spent_usd": 41.25, "ratio": None, "over_usd": None,
                     "projected_month_usd": None, "level": "ok"}
    doc["capacity"].update(weekly_tokens=None, used_ratio=None, left_ratio=None,
                           left_tokens=None, hours_to_exhaustion=None)
    page = render_html(doc)
    assert "progressbar" not in card(page, "month") + card(page, "last7")
    assert "No monthly budget set" in text(card(page, "month"))
    assert "No weekly capacity set" in text(card(page, "last7"))


def test_fully_unpriced_cost_is_unknown_not_zero() -> None:
    doc = make_doc()
    doc["windows"]["month"].update(cost_usd=0.0, unpriced_calls=3, unpriced_tokens=900)
    month = text(card(render_html(doc), "month"))
    assert "unknown" in month
    assert "$0.00" not in month


def test_partly_unpriced_cost_shows_the_unpriced_calls() -> None:
    doc = make_doc()
    doc["windows"]["month"].update(unpriced_calls=7, unpriced_tokens=900)
    assert "$41.25 + 7 unpriced" in text(card(render_html(doc), "month"))


def test_unpriced_model_row_says_unknown() -> None:
    page = render_html(make_doc())
    row = re.search(r"<tr>\s*<td[^>]*>.*?llama-3-8b.*?</tr>", page, re.S)
    assert row
    assert "unknown" in text(row.group(0))


def test_untracked_balance_says_not_tracked_never_zero() -> None:
    doc = make_doc(balance={"tracked": False, "credit_usd": None, "since": None,
                            "spent_usd": None, "balance_usd": None, "level": "ok"})
    balance = text(card(render_html(doc), "balance"))
    assert "not tracked" in balance
    assert "$0.00" not in balance


def test_tracked_balance_shows_what_is_left() -> None:
    doc = make_doc()
    doc["balance"].update(balance_usd=4.5, spent_usd=95.5, level="warning")
    balance = card(render_html(doc), "balance")
    assert "$4.50" in text(balance)
    assert "left of $100.00" in text(balance)
    assert 'class="progress lvl-warning"' in balance


def test_alerts_are_banners_with_their_level_class() -> None:
    doc = make_doc()
    doc["alerts"].insert(0, {"id": "stale", "level": "critical", "title": "Data is stale",
                             "message": "no successful scan for 12 min", "value": 720,
                             "threshold": 180})
    page = render_html(doc)
    critical = page.index('class="alert alert-critical"')
    warning = page.index('class="alert alert-warning"')
    assert critical < warning < page.index('id="card-week"')
    assert "no successful scan for 12 min" in page


def test_no_alerts_no_banner_section() -> None:
    assert 'class="alerts"' not in render_html(make_doc(alerts=[]))


def test_untrusted_names_are_escaped() -> None:
    doc = make_doc()
    doc["models"][0].update(model=HOSTILE, provider=HOSTILE)
    doc["sessions"][0].update(session=HOSTILE, agent=HOSTILE)
    doc["sources"][0]["source"] = HOSTILE
    doc["alerts"][0]["message"] = f"sessions to review: {HOSTILE}"
    page = render_html(doc)
    assert page.count("<script") == 1  # the page's own script only
    assert "alert(1)" not in page.split("<script>")[1].split("</script>")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_page_references_nothing_outside_itself() -> None:
    page = render_html(make_doc())
    assert "http://" not in page
    assert "https://" not in page
    assert re.findall(r'\b(?:src|href)="([^"]*)"', page) == ["data:,"]


def test_only_the_own_script_is_allowed_to_run() -> None:
    page = render_html(make_doc())
    script = page.split("<script>")[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"',
                                  page).group(1))
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp


def test_page_refreshes_itself() -> None:
    assert '<meta http-equiv="refresh" content="17">' in render_html(make_doc(),
                                                                     refresh_seconds=17)


def test_page_is_responsive_with_both_themes() -> None:
    page = render_html(make_doc())
    assert 'name="viewport"' in page
    assert "prefers-color-scheme: dark" in page


@pytest.mark.parametrize("days", [1, 7, 30, 90])
def test_chart_has_one_bar_per_day(days: int) -> None:
    page = render_html(make_doc(), chart_days=days)
    assert page.count('<rect class="bar"') == days
    assert page.count("<title>", page.index("<svg")) == days


def test_chart_ends_at_local_date_and_fills_missing_days_with_zero() -> None:
    page = render_html(make_doc(), chart_days=30)
    dates = re.findall(r'<g class="day[^"]*" data-date="([^"]+)"', page)
    assert dates[0] == "2025-02-13"
    assert dates[-1] == "2025-03-14"
    days = [dt.date.fromisoformat(d) for d in dates]
    assert all(b - a == dt.timedelta(days=1) for a, b in zip(days, days[1:], strict=False))
    gap = re.search(r'data-date="2025-03-11">.*?<rect class="bar"[^>]*height="([^"]+)"', page,
                    re.S)
    assert gap
    assert float(gap.group(1)) == 0


def test_chart_bar_tooltip_gives_the_day_figures() -> None:
    page = render_html(make_doc())
    assert "<title>Wed 2025-03-12: 1,290,000 tokens · 500 calls · $12.00</title>" in page


def test_chart_has_axis_labels() -> None:
    svg = render_html(make_doc()).split("<svg", 1)[1].split("</svg>")[0]
    labels = [text(t) for t in re.findall(r"<text[^>]*>[^<]*</text>", svg)]
    assert "Mar 14" in labels
    assert "0" in labels
    assert any(label.endswith("k") or label.endswith("M") for label in labels)


def test_token_breakdown_lists_every_kind() -> None:
    section = render_html(make_doc()).split('id="breakdown"')[1].split("</section>")[0]
    assert all(k in section for k in ("Input", "Output", "Cache read", "Cache write"))
    assert "6M" in text(section)  # this month's cache reads


def test_tables_list_models_sources_and_sessions() -> None:
    page = text(render_html(make_doc()))
    assert "anthropic/ claude-sonnet-4-5" in page
    assert "telegram-direct-42" in page
    assert "2025-03-14 13:30 · 2 h ago" in page
    assert "openclaw" in page


def test_footer_shows_last_update_and_daemon_state() -> None:
    footer = text(render_html(make_doc()).split("<footer>")[1])
    assert "Last updated 2025-03-14 15:30" in footer
    assert "Daemon running · pid 4242 · watcher inotify" in footer


def test_daemon_keys_are_optional() -> None:
    page = render_html(make_doc(daemon={}))
    assert "Daemon unknown" in text(page.split("<footer>")[1])


def test_empty_document_renders() -> None:
    empty = fig()
    doc = make_doc(daily=[], monthly=[], sources=[], models=[], agents=[], sessions=[],
                   alerts=[])
    doc["windows"] = {k: {**v, **empty} for k, v in doc["windows"].items()}
    page = render_html(doc)
    assert "No usage yet" in page
    assert page.count('<rect class="bar"') == 30


@pytest.mark.parametrize(("n", "shown"), [
    (0, "0"), (999, "999"), (1_000, "1k"), (12_345, "12.3k"), (999_950, "1M"),
    (1_200_000, "1.2M"), (1_234_567, "1.23M"), (123_456_789, "123M"), (4.56e9, "4.56B"),
])
def test_fmt_tokens_is_compact(n: float, shown: str) -> None:
    assert fmt_tokens(n) == shown


@pytest.mark.parametrize(("v", "shown"), [
    (0.0, "$0.00"), (12.345, "$12.35"), (0.001, "<$0.01"), (-3.2, "-$3.20"),
    (1234.5, "$1,234.50"), (25_000.4, "$25,000"),
])
def test_fmt_usd(v: float, shown: str) -> None:
    assert fmt_usd(v) == shown


def test_fmt_cost_text_never_says_zero_for_unpriced() -> None:
    assert fmt_cost_text(fig(calls=2, unpriced_calls=2)) == "unknown"
    assert fmt_cost_text(fig(calls=3, cost=1.5, unpriced_calls=2)) == "$1.50 + 2 unpriced"
    assert fmt_cost_text(fig()) == "$0.00"
