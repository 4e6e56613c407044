"""`usaged status [--json]`: never started, stopped, running, SIGKILLed, corrupt state.

The daemon runs as a real subprocess (`python -m usaged --config X run`) on a temp tree; status
itself runs in-process through the CLI. Exit codes: 0 running, 3 not running, 1 unusable state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, oc_line, oc_session, usage_json
from jsonschema import Draft202012Validator

pytestmark = pytest.mark.e2e

Run = Callable[..., tuple[int, str, str]]
WAIT = 20.0

# The keys of `usaged status --json` (docs/cli.md, docs/status.schema.json).
SCHEMA = Draft202012Validator(json.loads((REPO / "docs" / "status.schema.json").read_text()))
BASE_KEYS = {"running", "state", "state_dir", "database", "config", "pid"}
FULL_KEYS = BASE_KEYS | {
    "last_seen", "uptime_seconds", "watcher", "watcher_degraded", "last_scan", "last_write",
    "lag_seconds", "files", "files_gone", "events", "bad_lines", "unreadable_files",
    "database_bytes", "price_table", "config_error", "week", "last_7_days", "month", "budget",
    "capacity", "balance", "alerts", "output",
}


def now_z(offset: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + offset))


@pytest.fixture
def tree(tmp_path: Path, make_config: Any) -> tuple[Path, Path]:
    """A transcript root with three calls of today and the config for it."""
    root = tmp_path / "oc"
    oc_session(root).write_bytes(oc_line(input=100, output=20, cost=1.5, ts=now_z(-60))
                                 + oc_line(input=300, output=80, cost=2.5, ts=now_z(-30))
                                 + b"{not json\n"
                                 + oc_line(input=5, output=5, cost=None, ts=now_z(-10),
                                           provider="ollama", model="local-model"))
    cfg = make_config(openclaw=[root], budget={"monthly_usd": 50},
                      capacity={"weekly_tokens": 1_000_000},
                      balance={"credit_usd": 20, "since": "2020-01-01"},
                      daemon={"watcher": "polling", "scan_interval": 60})
    return root, cfg


@contextmanager
def daemon(cfg: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`usaged run` as a subprocess, up once its first usage.json names its pid."""
    log = (tmp_path / "daemon.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "usaged", "--config", str(cfg), "run"],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if usage_json(tmp_path)["daemon"]["pid"] == proc.pid:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the daemon never wrote usage.json"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def status(run: Run, cfg: Path) -> tuple[int, str, str]:
    return run("--config", str(cfg), "status")


def status_json(run: Run, cfg: Path) -> tuple[int, dict[str, Any]]:
    code, out, err = run("--config", str(cfg), "status", "--json")
    assert "Traceback" not in err
    report: dict[str, Any] = json.loads(out)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in SCHEMA.iter_errors(report)]
    assert not errors, errors
    return code, report


def wait_report(run: Run, cfg: Path, check: Callable[[dict[str, Any]], bool]
                ) -> tuple[int, dict[str, Any]]:
    """Status until `check` holds (the heartbeat lands just after the first write)."""
    deadline = time.monotonic() + WAIT
    while True:
        code, report = status_json(run, cfg)
        if check(report):
            return code, report
        assert time.monotonic() < deadline, report
        time.sleep(0.1)


def lock_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "usaged.lock"


# -- never started, stopped -----------------------------------------------------------------


def test_never_started_exits_3_and_says_so(tree: tuple[Path, Path], tmp_path: Path,
                                           run: Run) -> None:
    _, cfg = tree
    code, out, err = status(run, cfg)
    assert code == 3
    assert out.startswith("usaged: not running (never started here)\n")
    assert str(tmp_path / "state") in out
    assert "Traceback" not in err
    code, report = status_json(run, cfg)
    assert code == 3
    assert report == {"running": False, "state": "never started",
                      "state_dir": str(tmp_path / "state"),
                      "database": str(tmp_path / "state" / "usaged.db"),
                      "config": str(cfg), "pid": None}
    assert not (tmp_path / "state").exists()  # status creates nothing


def test_after_a_scan_without_daemon_it_is_stopped(tree: tuple[Path, Path], tmp_path: Path,
                                                   run: Run) -> None:
    _, cfg = tree
    assert run("--config", str(cfg), "scan")[0] == 0
    code, out, _ = status(run, cfg)
    assert code == 3
    assert out.startswith("usaged: not running (the daemon has never run on this state")
    assert "last scan 0 s ago" in out or "last scan 1 s ago" in out
    assert "3 events; 1 bad lines" in out
    code, report = status_json(run, cfg)
    assert code == 3
    assert set(report) == FULL_KEYS
    assert (report["running"], report["state"], report["pid"]) == (False, "stopped", None)
    assert (report["events"], report["bad_lines"], report["files"]) == (3, 1, 1)
    assert report["last_7_days"]["tokens"]["total"] == 510


def test_status_reads_the_ledger_without_scanning_transcripts(
        tree: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    root, cfg = tree
    run("--config", str(cfg), "scan")
    db = tmp_path / "state" / "usaged.db"
    before = (db.stat().st_size, db.stat().st_mtime_ns, db.read_bytes())
    with oc_session(root).open("ab") as fh:
        fh.write(oc_line(input=1000, ts=now_z()))
    for _ in range(2):
        code, report = status_json(run, cfg)
        assert report["events"] == 3  # the new line is not read by status
    assert (db.stat().st_size, db.stat().st_mtime_ns, db.read_bytes()) == before
    wal = db.with_name("usaged.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # nothing written


# -- running, stopped cleanly, killed -------------------------------------------------------


def test_running_daemon_exits_0_with_its_pid_and_figures(tree: tuple[Path, Path],
                                                         tmp_path: Path, run: Run) -> None:
    _, cfg = tree
    with daemon(cfg, tmp_path) as proc:
        wait_report(run, cfg, lambda r: r["last_write"] is not None)
        code, out, err = status(run, cfg)
        assert code == 0, err
        assert out.startswith(f"usaged: running (pid {proc.pid}, up ")
        assert "watcher polling" in out
        assert "1 bad lines" in out
        assert "month:   $4.00 of $50.00 budget (8.0%)" in out
        assert "+ 1 unpriced calls" in out
        assert "balance: $16.00 left of $20.00 (since 2020-01-01)" in out
        assert "alert:   [warning] Unpriced usage" in out
        assert "alert:   [warning] Unreadable input" in out

        code, report = status_json(run, cfg)
        assert code == 0
        assert set(report) == FULL_KEYS
        assert report["running"] is True and report["state"] == "running"
        assert report["pid"] == proc.pid
        assert report["watcher"] == "polling" and report["watcher_degraded"] is False
        assert 0 <= report["uptime_seconds"] < WAIT + 5
        assert 0 <= report["lag_seconds"] < WAIT + 5
        for key in ("last_seen", "last_scan", "last_write"):
            assert dt.datetime.fromisoformat(report[key]).tzinfo is not None, key
        assert (report["files"], report["events"], report["bad_lines"]) == (1, 3, 1)
        assert report["unreadable_files"] == 0 and report["files_gone"] == 0
        assert report["database_bytes"] > 0
        assert report["config_error"] is None
        assert report["output"] == str(tmp_path / "state" / "dashboard" / "usage.json")
        assert report["budget"]["spent_usd"] == pytest.approx(4.0)
        assert report["budget"]["level"] == "ok"
        assert report["capacity"]["used_tokens"] == 510
        assert report["capacity"]["used_ratio"] + report["capacity"]["left_ratio"] == \
            pytest.approx(1.0)
        assert report["balance"]["tracked"] is True
        assert report["balance"]["balance_usd"] == pytest.approx(16.0)
        assert {a["id"] for a in report["alerts"]} == {"unpriced", "bad_input"}
        assert report["month"]["unpriced_calls"] == 1
        assert report["last_7_days"]["tokens"]["total"] == 510
    # a clean stop (SIGTERM) reads as stopped
    code, report = status_json(run, cfg)
    assert code == 3
    assert report["state"] == "stopped" and report["pid"] is None


def test_sigkilled_daemon_is_stopped_with_its_last_seen_time(tree: tuple[Path, Path],
                                                             tmp_path: Path, run: Run) -> None:
    _, cfg = tree
    with daemon(cfg, tmp_path) as proc:
        time.sleep(0.2)
        code, report = status_json(run, cfg)
        asked = time.time()
        assert code == 0
        seen = dt.datetime.fromisoformat(report["last_seen"]).timestamp()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_pid = proc.pid
    assert seen <= asked
    # the lock file still names the dead daemon; the kernel lock died with it
    assert lock_file(tmp_path).read_text().strip() == str(killed_pid)
    code, out, err = status(run, cfg)
    assert code == 3, err
    assert out.startswith(f"usaged: stopped (last seen {report['last_seen']}, ")
    code, after = status_json(run, cfg)
    assert code == 3
    assert (after["running"], after["state"], after["pid"]) == (False, "stopped", None)
    assert after["last_seen"] == report["last_seen"]
    assert after["uptime_seconds"] is None


def test_a_reused_pid_in_the_lock_file_does_not_read_as_running(
        tree: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    _, cfg = tree
    with daemon(cfg, tmp_path) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # the pid of a live process (this test) now stands in the lock file
    lock_file(tmp_path).write_text(f"{os.getpid()}\n")
    code, out, _ = status(run, cfg)
    assert code == 3
    assert out.startswith("usaged: stopped (last seen ")
    assert str(os.getpid()) not in out.splitlines()[0]
    code, report = status_json(run, cfg)
    assert (code, report["running"], report["pid"]) == (3, False, None)


def test_a_lock_file_without_a_lock_after_a_scan_is_stopped(
        tree: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    _, cfg = tree
    run("--config", str(cfg), "scan")
    lock_file(tmp_path).write_text(f"{os.getpid()}\n")
    assert status(run, cfg)[0] == 3


def test_stale_alert_once_the_daemon_has_been_gone_three_intervals(
        tree: tuple[Path, Path], tmp_path: Path, run: Run, make_config: Any) -> None:
    root, cfg = tree
    with daemon(cfg, tmp_path) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    time.sleep(0.5)
    short = make_config(openclaw=[root], daemon={"scan_interval": 0.1})
    code, report = status_json(run, short)
    assert code == 3
    stale = [a for a in report["alerts"] if a["id"] == "stale"]
    assert stale and stale[0]["level"] == "critical"
    assert stale[0]["threshold"] == pytest.approx(0.3)


def test_config_error_of_the_running_daemon_is_shown(tree: tuple[Path, Path], tmp_path: Path,
                                                     run: Run) -> None:
    _, cfg = tree
    good = cfg.read_text()
    reader = tmp_path / "reader.toml"  # status reads the same state with a valid config
    reader.write_text(good)
    with daemon(cfg, tmp_path):
        cfg.write_text(good.replace("monthly_usd = 50", "monthly_usd = -1"))
        code, report = wait_report(run, reader, lambda r: bool(r["config_error"]))
        assert code == 0
        assert "budget.monthly_usd: must be greater than 0" in report["config_error"]
        assert report["budget"]["monthly_usd"] == 50
        out = status(run, reader)[1]
        assert "config:  ERROR, running on the last good config: " in out


# -- unusable state -------------------------------------------------------------------------


def _assert_one_clear_line(code: int, out: str, err: str, db: Path) -> None:
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"usaged: {db}: ")
    assert "Traceback" not in err


def test_corrupt_state_database_is_a_clear_one_line_error(tree: tuple[Path, Path],
                                                          tmp_path: Path, run: Run) -> None:
    _, cfg = tree
    db = tmp_path / "state" / "usaged.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(random.Random(4).randbytes(64 * 1024))
    code, out, err = status(run, cfg)
    _assert_one_clear_line(code, out, err, db)
    assert "not a usable usaged state database" in err
    code, out, err = run("--config", str(cfg), "status", "--json")
    _assert_one_clear_line(code, out, err, db)
    assert db.read_bytes() == random.Random(4).randbytes(64 * 1024)  # left as it was


def test_state_from_a_newer_usaged_is_a_clear_one_line_error(tree: tuple[Path, Path],
                                                             tmp_path: Path, run: Run) -> None:
    _, cfg = tree
    db = tmp_path / "state" / "usaged.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    code, out, err = status(run, cfg)
    _assert_one_clear_line(code, out, err, db)
    assert "state schema version 99" in err


def test_status_still_reports_while_its_own_config_file_is_invalid(
        tree: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    _, cfg = tree
    good = cfg.read_text()
    reader = tmp_path / "reader.toml"
    reader.write_text(good)
    with daemon(cfg, tmp_path) as proc:
        cfg.write_text(good.replace("monthly_usd = 50", "monthly_usd = -1"))
        wait_report(run, reader, lambda r: bool(r["config_error"]))
        code, out, err = run("--config", str(cfg), "status", "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["pid"] == proc.pid
        assert "budget.monthly_usd" in report["config_error"]
        assert "budget.monthly_usd: must be greater than 0" in err  # a warning, not a failure


def test_a_held_lock_before_the_ledger_exists_reads_as_starting(
        tree: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    from usaged.fsio import StateLock

    _, cfg = tree
    lock = StateLock(lock_file(tmp_path))
    assert lock.acquire()
    try:
        code, out, err = status(run, cfg)
        assert code == 0, err
        assert out.strip() == (f"usaged: starting (pid {os.getpid()}); no ledger yet in "
                               f"{tmp_path / 'state'}")
        code, report = status_json(run, cfg)
        assert (report["state"], report["pid"]) == ("starting", os.getpid())
    finally:
        lock.release()
