"""usage.json and `usaged status --json` match their JSON Schemas (docs/*.schema.json).

Real documents only: a scan of the openclaw-edge corpus with every limit unset, comfortable,
nearly reached and exceeded; a document written by `python -m usaged run`; the status report
before, during and after a daemon. The negative tests show the schema does reject.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS, REPO, load_regen, oc_line, oc_session, usage_json
from harness import DaemonProc
from jsonschema import Draft202012Validator, FormatChecker

USAGE_SCHEMA = REPO / "docs" / "usage.schema.json"
STATUS_SCHEMA = REPO / "docs" / "status.schema.json"
NOW = "2026-01-25T12:00:00"  # inside the edge corpus's last week; read in the configured zone
ZONE = "America/Los_Angeles"

# budget / capacity / balance / alerts sections per case; the edge corpus spends $0.38 and
# 232,445 tokens in the last 7 days as of NOW (see docs/usage-json.md for the example)
LIMITS: dict[str, dict[str, Any]] = {
    "unset": {},
    "comfortable": {"budget": {"monthly_usd": 50}, "capacity": {"weekly_tokens": 20_000_000},
                    "balance": {"credit_usd": 100, "since": "2026-01-01"}},
    "nearly_reached": {"budget": {"monthly_usd": 0.45}, "capacity": {"weekly_tokens": 250_000},
                       "balance": {"credit_usd": 0.5, "since": "2026-01-01"},
                       "alerts": {"session_review_tokens": 200_000}},
    "exceeded": {"budget": {"monthly_usd": 0.1}, "capacity": {"weekly_tokens": 100_000.5,
                                                              "burn_window_hours": 48},
                 "balance": {"credit_usd": 0.2, "since": "2025-12-15"}},
}


def _format_checker() -> FormatChecker:
    """The default checks plus "date-time", which jsonschema only checks when the optional
    rfc3339-validator is installed: an ISO-8601 date and time that carries an offset."""
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_datetime(value: object) -> bool:
        if not isinstance(value, str):
            return True
        return "T" in value and dt.datetime.fromisoformat(value).tzinfo is not None

    return checker


def validator(path: Path) -> Draft202012Validator:
    return Draft202012Validator(json.loads(path.read_text()), format_checker=_format_checker())


def problems(path: Path, doc: Any) -> list[str]:
    errors = sorted(validator(path).iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]


def assert_valid(path: Path, doc: Any) -> None:
    found = problems(path, doc)
    assert not found, "\n".join(found)


@pytest.fixture
def scan_doc(tmp_path: Path, make_config: Any, run: Any) -> Callable[..., dict[str, Any]]:
    """usage.json of `usaged scan --now NOW` over the edge corpus, with the given sections."""

    def scan(**sections: Any) -> dict[str, Any]:
        cfg = make_config(openclaw=[CORPUS / "openclaw-edge"], timezone=ZONE, **sections)
        code, out, err = run("--config", str(cfg), "scan", "--now", NOW)
        assert code == 0, out + err
        return usage_json(tmp_path)

    return scan


# -- the schema files themselves ----------------------------------------------------------------


@pytest.mark.parametrize("path", [USAGE_SCHEMA, STATUS_SCHEMA], ids=lambda p: p.name)
def test_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_status_schema_shares_the_usage_definitions_unchanged() -> None:
    usage = json.loads(USAGE_SCHEMA.read_text())["$defs"]
    status = json.loads(STATUS_SCHEMA.read_text())["$defs"]
    shared = sorted(set(usage) & set(status))
    assert {"window", "budget", "capacity", "balance", "alerts"} <= set(shared)
    for name in shared:
        assert status[name] == usage[name], f"$defs/{name} differs between the two schemas"


# -- usaged scan ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(LIMITS))
def test_scan_document_matches_the_schema(case: str, scan_doc: Any) -> None:
    doc = scan_doc(**LIMITS[case])
    assert_valid(USAGE_SCHEMA, doc)
    assert doc["daemon"]["state"] == "scan"
    assert ("month_end" in doc["budget"]) == (case != "unset")
    assert doc["balance"]["tracked"] == (case != "unset")


def test_scan_cases_reach_every_alert_level(scan_doc: Any) -> None:
    """The cases above are only worth validating if they produce the shapes they are named for."""
    levels = {}
    for case in ("nearly_reached", "exceeded"):
        doc = scan_doc(**LIMITS[case])
        levels[case] = {a["id"]: a["level"] for a in doc["alerts"]}
    assert levels["nearly_reached"] == {"budget": "warning", "budget_projection": "warning",
                                        "capacity": "warning", "balance": "warning",
                                        "unpriced": "warning", "session_review": "warning"}
    assert levels["exceeded"] == {"budget": "critical", "capacity": "critical",
                                  "balance": "critical", "unpriced": "warning"}


# -- the daemon, and status before, during and after it -----------------------------------------


def _ago(minutes: float) -> str:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_tree(root: Path) -> None:
    """Three recent calls, one of them unpriced, and one bad line."""
    path = oc_session(root, "a.jsonl")
    path.write_bytes(oc_line(input=100, output=20, cost=0.002, ts=_ago(3))
                     + b"{not json\n"  # the bad_input alert
                     + oc_line(provider="ollama", model="qwen3-coder:30b", cost=None,
                               ts=_ago(2)))  # unpriced
    oc_session(root, "b.jsonl", agent="ops").write_bytes(oc_line(cache_read=5000, ts=_ago(1)))


@pytest.mark.e2e
def test_daemon_document_and_status_match_their_schemas(tmp_path: Path, make_config: Any,
                                                        run: Any) -> None:
    root = tmp_path / "oc"
    write_tree(root)
    cfg = make_config(openclaw=[root], timezone="Asia/Kolkata",
                      budget={"monthly_usd": 20}, balance={"credit_usd": 5, "since": "2025-01-01"},
                      daemon={"debounce_quiet": 0.1, "debounce_max": 0.5, "min_interval": 0.1,
                              "scan_interval": 1})
    code, out, _ = run("--config", str(cfg), "status", "--json")
    assert code == 3
    before = json.loads(out)
    assert before["state"] == "never started"
    assert_valid(STATUS_SCHEMA, before)

    proc = DaemonProc(cfg, tmp_path / "state" / "dashboard" / "usage.json")
    try:
        proc.start()
        doc = proc.wait_for(lambda d: d["daemon"]["pid"] == proc.proc_pid
                            and d["windows"]["all_time"]["calls"] == 3, what="3 calls")
        assert doc["daemon"]["state"] == "running"
        assert doc["windows"]["all_time"]["unpriced_calls"] == 1
        assert "bad_input" in {a["id"] for a in doc["alerts"]}
        assert_valid(USAGE_SCHEMA, doc)

        code, out, _ = run("--config", str(cfg), "status", "--json")
        assert code == 0
        during = json.loads(out)
        assert during["running"] and during["pid"] == proc.proc_pid
        assert_valid(STATUS_SCHEMA, during)

        assert proc.stop(signal.SIGTERM) == 0
        last = usage_json(tmp_path)
        assert last["daemon"]["state"] == "stopped"
        assert_valid(USAGE_SCHEMA, last)
    finally:
        proc.cleanup()

    code, out, _ = run("--config", str(cfg), "status", "--json")
    assert code == 3
    after = json.loads(out)
    assert after["state"] == "stopped" and after["watcher"] is not None
    assert_valid(STATUS_SCHEMA, after)


def test_status_after_a_scan_only_matches_the_schema(scan_doc: Any, run: Any,
                                                     tmp_path: Path) -> None:
    scan_doc(**LIMITS["comfortable"])
    code, out, _ = run("--config", str(tmp_path / "usaged.toml"), "status", "--json")
    assert code == 3
    report = json.loads(out)
    assert report["state"] == "stopped" and report["last_seen"] is None  # no daemon ever ran
    assert_valid(STATUS_SCHEMA, report)


# -- the schemas reject what they should ---------------------------------------------------------


def _drop(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path
        target: Any = doc
        for p in parents:
            target = target[p]
        del target[last]
    return change


def _set(value: Any, *path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path
        target: Any = doc
        for p in parents:
            target = target[p]
        target[last] = value
    return change


BROKEN_USAGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "missing top-level key": _drop("generated_at"),
    "missing window": _drop("windows", "week"),
    "missing token kind": _drop("windows", "today", "tokens", "cache_write"),
    "missing month_end with a budget": _drop("budget", "month_end"),
    "missing daemon key": _drop("daemon", "events"),
    "extra top-level key": _set(1, "extra"),
    "extra key in a token object": _set(1, "windows", "month", "tokens", "reasoning"),
    "extra key in a daily entry": _set("x", "daily", 0, "note"),
    "extra key in an alert": _set("x", "alerts", 0, "hint"),
    "extra key in the balance": _set(1, "balance", "refunds_usd"),
    "extra window": _set(None, "windows", "yesterday"),
    "alert level ok": _set("ok", "alerts", 0, "level"),
    "unknown budget level": _set("fine", "budget", "level"),
    "timestamp without an offset": _set("2026-01-25T12:00:00", "now"),
    "date with a time": _set("2026-01-25T00:00:00-08:00", "daily", 0, "date"),
    "month 13": _set("2026-13", "monthly", 0, "month"),
    "null start of a calendar window": _set(None, "windows", "today", "start"),
    "start of all_time": _set("2026-01-01T00:00:00-08:00", "windows", "all_time", "start"),
    "fractional tokens": _set(1.5, "windows", "today", "tokens", "input"),
    "negative cost": _set(-0.01, "windows", "today", "cost_usd"),
    "schema 2": _set(2, "schema"),
    "unknown source": _set("cursor", "sources", 0, "source"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_USAGE))
def test_usage_schema_rejects(broken: str, scan_doc: Any) -> None:
    doc = scan_doc(**LIMITS["nearly_reached"])
    assert_valid(USAGE_SCHEMA, doc)
    bad = copy.deepcopy(doc)
    BROKEN_USAGE[broken](bad)
    assert problems(USAGE_SCHEMA, bad), f"schema accepted a document with {broken}"


def test_usage_schema_rejects_budget_figures_without_a_budget(scan_doc: Any) -> None:
    doc = scan_doc()
    doc["budget"]["month_end"] = doc["windows"]["month"]["end"]
    assert problems(USAGE_SCHEMA, doc)


def test_usage_schema_rejects_a_daemon_object_mixing_scan_and_run_keys(scan_doc: Any) -> None:
    doc = scan_doc()
    doc["daemon"]["started_at"] = doc["generated_at"]
    assert problems(USAGE_SCHEMA, doc)


@pytest.mark.parametrize("broken", ["missing", "extra", "not running with a pid"])
def test_status_schema_rejects(broken: str, scan_doc: Any, run: Any, tmp_path: Path) -> None:
    scan_doc()
    _, out, _ = run("--config", str(tmp_path / "usaged.toml"), "status", "--json")
    report = json.loads(out)
    assert_valid(STATUS_SCHEMA, report)
    if broken == "missing":
        del report["lag_seconds"]
    elif broken == "extra":
        report["uptime"] = "3 min"
    else:
        report["pid"] = 4242
    assert problems(STATUS_SCHEMA, report)


# -- the example in docs/usage-json.md -----------------------------------------------------------


def test_documented_example_is_a_real_scan_and_valid() -> None:
    regen = load_regen()
    text = regen.USAGE_DOC.read_text()
    documented = regen.documented_example(text)
    assert documented is not None, "docs/usage-json.md lost its example block"
    assert_valid(USAGE_SCHEMA, documented)  # an excerpt: shorter lists, same shape
    fresh = regen.usage_example()
    hint = "run `python scripts/regen_golden.py` and review the diff"
    assert regen.without_volatile(documented) == regen.without_volatile(fresh), hint
    assert regen.refresh_usage_doc(text, fresh) == text, hint  # formatted as generated


def test_documents_are_written_promptly(scan_doc: Any) -> None:
    """generated_at is the wall clock (not --now): a reader can tell a stale file."""
    doc = scan_doc()
    age = time.time() - dt.datetime.fromisoformat(doc["generated_at"]).timestamp()
    assert 0 <= age < 60
    assert doc["now"] == "2026-01-25T12:00:00-08:00"
