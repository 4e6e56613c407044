"""Every case in cases/claude-code (real-world bug reports) passes, for every view it gives."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import CASES, read_json, usage_json

from usaged.pricing import normalise_model

CLAUDE = CASES / "claude-code"
STATIC = sorted(p.name for p in CLAUDE.iterdir() if (p / "claude").is_dir())
NOW = "2027-01-01T00:00:00+00:00"  # after every case's data
# The cases' field names -> usage.json's token kinds.
KINDS = {"input": "input", "output": "output", "cache_creation": "cache_write",
         "cache_read": "cache_read", "total": "total"}


def assert_figures(ours: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for theirs, mine in KINDS.items():
        if theirs in expected:
            assert ours["tokens"][mine] == expected[theirs], f"{where}: {theirs}"
    if "cost_usd" in expected:
        assert math.isclose(ours["cost_usd"], expected["cost_usd"], abs_tol=1e-9), \
            f"{where}: cost {ours['cost_usd']} != {expected['cost_usd']}"
    unknown = expected.get("cost_unknown_tokens", 0)
    assert ours["unpriced_tokens"] == unknown, f"{where}: unpriced tokens"
    assert (ours["unpriced_calls"] > 0) == (unknown > 0), f"{where}: unpriced calls"


def assert_view(ours: dict[str, dict[str, Any]], expected: dict[str, Any], where: str) -> None:
    assert sorted(ours) == sorted(expected), where
    for name, figures in expected.items():
        assert_figures(ours[name], figures, f"{where} {name}")


def weeks(daily: dict[str, dict[str, Any]], first_weekday: int) -> dict[str, dict[str, Any]]:
    """Our daily figures summed into weeks keyed by their first day (0 = Monday, 6 = Sunday)."""
    out: dict[str, dict[str, Any]] = {}
    for date, day in daily.items():
        d = dt.date.fromisoformat(date)
        start = (d - dt.timedelta(days=(d.weekday() - first_weekday) % 7)).isoformat()
        acc = out.setdefault(start, {"tokens": dict.fromkeys(KINDS.values(), 0),
                                     "cost_usd": 0.0, "unpriced_tokens": 0,
                                     "unpriced_calls": 0})
        for kind in KINDS.values():
            acc["tokens"][kind] += day["tokens"][kind]
        for field in ("cost_usd", "unpriced_tokens", "unpriced_calls"):
            acc[field] += day[field]
    return out


def check(doc: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Every view the case gives that usage.json has."""
    if "totals" in expected:
        assert_figures(doc["windows"]["all_time"], expected["totals"], f"{where} totals")
    daily = {d["date"]: d for d in doc["daily"]}
    if "daily" in expected:
        assert_view(daily, expected["daily"], f"{where} daily")
    if "monthly" in expected:
        assert_view({m["month"]: m for m in doc["monthly"]}, expected["monthly"],
                    f"{where} monthly")
    if "weekly_sunday" in expected:
        assert_view(weeks(daily, 6), expected["weekly_sunday"], f"{where} weeks (Sunday)")
    if "weekly_monday" in expected:
        assert_view(weeks(daily, 0), expected["weekly_monday"], f"{where} weeks (Monday)")
    if "sessions" in expected:
        ours = {f"{s['agent']}/{s['session']}": s for s in doc["sessions"]
                if s["source"] == "claude_code"}
        assert_view(ours, expected["sessions"], f"{where} sessions")
    if "by_model" in expected:
        models = {m["model"]: m for m in doc["models"]}
        assert_view(models, expected["by_model"], f"{where} models")


def scan(run: Any, make_config: Any, claude: Path, zone: str = "UTC", now: str = NOW) -> None:
    cfg = make_config(claude=[claude], timezone=zone)
    code, _, err = run("--config", str(cfg), "scan", "--now", now)
    assert code == 0, err


def ledger_sum(tmp_path: Path, column: str) -> int:
    db = sqlite3.connect(tmp_path / "state" / "usaged.db")
    try:
        return int(db.execute(f"SELECT coalesce(sum({column}), 0) FROM events").fetchone()[0])
    finally:
        db.close()


def committed_offset(tmp_path: Path, path: Path) -> int:
    db = sqlite3.connect(tmp_path / "state" / "usaged.db")
    try:
        row = db.execute("SELECT offset FROM files WHERE path = ?", (str(path),)).fetchone()
    finally:
        db.close()
    assert row is not None, f"{path} not tracked"
    return int(row[0])


@pytest.mark.parametrize("name", STATIC)
def test_static_case(name: str, tmp_path: Path, make_config: Any, run: Any) -> None:
    case = CLAUDE / name
    expected = read_json(case / "expected.json")
    zones = expected.get("by_timezone") or {expected["timezone"]: {}}
    for zone, views in zones.items():
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
        scan(run, make_config, case / "claude", zone)
        doc = usage_json(tmp_path)
        check(doc, {**expected, **views}, f"{name} {zone}")
        if "cache_creation_1h" in expected["totals"]:
            assert ledger_sum(tmp_path, "cache_write_1h") == \
                expected["totals"]["cache_creation_1h"]
        if "skipped_invalid_lines" in expected:
            assert doc["daemon"]["bad_lines"] == expected["skipped_invalid_lines"]


def test_unknown_model_is_listed_as_unpriced_not_zero(tmp_path: Path, make_config: Any,
                                                     run: Any) -> None:
    case = CLAUDE / "09-new-and-aliased-model-pricing"
    expected = read_json(case / "expected.json")
    scan(run, make_config, case / "claude", now="2026-03-31T00:00:00+00:00")
    doc = usage_json(tmp_path)
    unpriced = {m["model"] for m in doc["models"] if m["unpriced_calls"]}
    assert unpriced == {normalise_model(m) for m in expected["unknown_models"]}
    alert = next(a for a in doc["alerts"] if a["id"] == "unpriced")
    assert "anthropic/claude-zeta-9" in alert["message"]


def test_partial_tail_line_counted_once_after_it_completes(tmp_path: Path, make_config: Any,
                                                          run: Any) -> None:
    """Case 12 against ONE persistent state: phase 1, then the appended bytes, then phase 2."""
    case = CLAUDE / "12-partial-tail-line"
    expected = read_json(case / "expected.json")
    live = tmp_path / "live"
    shutil.copytree(case / "phase1" / "claude", live)
    transcript = next((live / "projects").rglob("*.jsonl"))
    assert transcript.stat().st_size == (expected["phase1"]["committed_offset_bytes"]
                                         + expected["phase1"]["pending_bytes"])

    scan(run, make_config, live)
    check(usage_json(tmp_path), expected["phase1"], "phase1")
    assert committed_offset(tmp_path, transcript.resolve()) == \
        expected["phase1"]["committed_offset_bytes"]

    with transcript.open("ab") as fh:
        fh.write((case / "append_between_phases.txt").read_bytes())
    phase2 = next((case / "phase2" / "claude" / "projects").rglob("*.jsonl"))
    assert transcript.read_bytes() == phase2.read_bytes()

    scan(run, make_config, live)
    check(usage_json(tmp_path), expected["phase2"], "phase2")
    assert committed_offset(tmp_path, transcript.resolve()) == \
        expected["phase2"]["committed_offset_bytes"]

    scan(run, make_config, live)  # nothing new: nothing changes
    check(usage_json(tmp_path), expected["phase2"], "phase2 again")


def test_huge_lines_case_at_reduced_size(tmp_path: Path, make_config: Any, run: Any) -> None:
    """Case 08 inflated like make_big.py (a 24 MB snapshot file, a 4 MB tool-result line)."""
    case = CLAUDE / "08-huge-lines-and-snapshots"
    expected = read_json(case / "expected.json")
    big = tmp_path / "big"
    shutil.copytree(case / "claude", big)
    project = big / "projects" / "-home-user-proj"
    chunk = "y" * (1 << 20)
    with (project / "dddddddd-dddd-4ddd-8ddd-dddddddddddd.jsonl").open("w") as fh:
        for i in range(24):
            fh.write(json.dumps({"type": "file-history-snapshot", "messageId": f"m{i}",
                                 "snapshot": {"trackedFileBackups": {"f": {"content": chunk}}}})
                     + "\n")
    with (project / "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa.jsonl").open("a") as fh:
        fh.write(json.dumps({"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "content": "z" * (4 << 20)}]}}) + "\n")
    scan(run, make_config, big)
    doc = usage_json(tmp_path)
    check(doc, expected, "08 big")
    assert doc["daemon"]["bad_lines"] == 0
