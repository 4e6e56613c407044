"""`usaged demo` runs the whole pipeline on the bundled sessions with no set-up at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, read_json

pytestmark = pytest.mark.e2e


def test_demo_runs_the_daemon_on_bundled_sessions_and_a_live_agent(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "usaged", "--log-format", "json", "demo", "--duration", "6",
         "--interval", "1", "--dir", str(work)],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "dashboard:   file://" in done.stdout
    turns = done.stdout.count("agent: turn ")
    assert turns >= 3
    doc = json.loads((work / "state" / "dashboard" / "usage.json").read_text())
    bundled = read_json(CORPUS / "openclaw-small" / "expected.UTC.json")["totals"]
    assert doc["windows"]["all_time"]["calls"] == bundled["calls"] + turns
    assert doc["windows"]["today"]["calls"] >= turns  # the sessions were moved to the present
    assert doc["daemon"]["state"] == "stopped"
    assert (work / "state" / "dashboard" / "usage.html").read_text().startswith("<!doctype html>")


def test_bundled_sessions_are_the_sample_corpus() -> None:
    bundled = Path(__file__).resolve().parent.parent / "usaged" / "data" / "demo"
    names = sorted(p.name for p in (bundled / "agents" / "main" / "sessions").iterdir())
    source = sorted(p.name for p in (CORPUS / "openclaw-small" / "agents" / "main" / "sessions")
                    .iterdir() if p.name.endswith(".jsonl"))
    assert names == source
