"""`usaged scan` on the real-format corpora gives exactly the figures of expected.<zone>.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS, read_json, usage_json

KINDS = ("input", "output", "cacheRead", "cacheWrite", "total")
OUR_KIND = {"input": "input", "output": "output", "cacheRead": "cache_read",
            "cacheWrite": "cache_write", "total": "total"}
ZONES = {"UTC": "UTC", "America_Los_Angeles": "America/Los_Angeles"}
NOW = "2026-02-01T00:00:00+00:00"  # after every corpus line; January complete in both zones


def assert_bucket(ours: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for kind in KINDS:
        assert ours["tokens"][OUR_KIND[kind]] == expected[kind], f"{where}: {kind}"
    assert ours["calls"] == expected["calls"], f"{where}: calls"
    assert math.isclose(ours["cost_usd"], expected["cost_usd"], abs_tol=1e-9), f"{where}: cost"
    assert ours["unpriced_calls"] == expected["unpriced_calls"], f"{where}: unpriced_calls"
    assert ours["unpriced_tokens"] == expected["unpriced_tokens"], f"{where}: unpriced_tokens"


@pytest.mark.parametrize("corpus", ["openclaw-small", "openclaw-edge"])
@pytest.mark.parametrize("zone", sorted(ZONES))
def test_scan_matches_expected_figures(corpus: str, zone: str, tmp_path: Path, make_config: Any,
                                       run: Any) -> None:
    expected = read_json(CORPUS / corpus / f"expected.{zone}.json")
    cfg = make_config(openclaw=[CORPUS / corpus], timezone=ZONES[zone])
    code, out, _ = run("--config", str(cfg), "scan", "--now", NOW)
    assert code == 0, out
    doc = usage_json(tmp_path)

    assert_bucket(doc["windows"]["all_time"], expected["totals"], "totals")
    days = {d["date"]: d for d in doc["daily"]}
    assert sorted(days) == sorted(expected["by_day"])
    for day, figures in expected["by_day"].items():
        assert_bucket(days[day], figures, day)
    months = {m["month"]: m for m in doc["monthly"]}
    assert sorted(months) == sorted(expected["by_month"])
    for month, figures in expected["by_month"].items():
        assert_bucket(months[month], figures, month)
    models = {f"{m['provider']}/{m['model']}": m for m in doc["models"]}
    assert sorted(models) == sorted(expected["by_model"])
    for model, figures in expected["by_model"].items():
        assert_bucket(models[model], figures, model)
    agents = {a["agent"]: a for a in doc["agents"]}
    for agent, figures in expected["by_agent"].items():
        assert_bucket(agents[agent], figures, agent)


@pytest.mark.parametrize("corpus", ["openclaw-small", "openclaw-edge"])
def test_ledger_tracks_exactly_the_counted_files(corpus: str, tmp_path: Path, make_config: Any,
                                                 run: Any) -> None:
    import sqlite3

    expected = read_json(CORPUS / corpus / "expected.UTC.json")
    cfg = make_config(openclaw=[CORPUS / corpus])
    assert run("--config", str(cfg), "scan")[0] == 0
    db = sqlite3.connect(tmp_path / "state" / "usaged.db")
    tracked = {row[0] for row in db.execute("SELECT path FROM files")}
    root = (CORPUS / corpus).resolve()
    assert tracked == {str(root / f) for f in expected["files_counted"]}
    assert not tracked & {str(root / f) for f in expected["files_ignored"]}


def test_last_month_window_is_the_previous_calendar_month(tmp_path: Path, make_config: Any,
                                                          run: Any) -> None:
    expected = read_json(CORPUS / "openclaw-small" / "expected.America_Los_Angeles.json")
    cfg = make_config(openclaw=[CORPUS / "openclaw-small"], timezone="America/Los_Angeles")
    run("--config", str(cfg), "scan", "--now", "2026-01-20T12:00:00-08:00")
    doc = usage_json(tmp_path)
    assert_bucket(doc["windows"]["last_month"], expected["by_month"]["2025-12"], "last_month")
    assert doc["windows"]["last_month"]["start"] == "2025-12-01T00:00:00-08:00"
    assert doc["windows"]["last_month"]["end"] == "2026-01-01T00:00:00-08:00"


def test_now_leaves_later_events_out_of_every_figure(tmp_path: Path, make_config: Any,
                                                     run: Any) -> None:
    expected = read_json(CORPUS / "openclaw-small" / "expected.UTC.json")
    cfg = make_config(openclaw=[CORPUS / "openclaw-small"])
    run("--config", str(cfg), "scan", "--now", "2025-12-31T23:59:59.999+00:00")
    doc = usage_json(tmp_path)
    assert_bucket(doc["windows"]["all_time"], expected["by_month"]["2025-12"], "all_time")
    assert_bucket(doc["windows"]["month"], expected["by_month"]["2025-12"], "month")
    assert max(d["date"] for d in doc["daily"]) <= "2025-12-31"
    assert sum(s["calls"] for s in doc["sessions"]) <= expected["by_month"]["2025-12"]["calls"]
    assert doc["generated_at"] > "2026-06"  # the real time, not --now
