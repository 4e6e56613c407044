"""faults.md B (crash, restart, state), items 15-20, against the running daemon.

Item 15's random kills are the crash soak (test_soak.py); item 19 is
tests/test_daemon_e2e.py::test_second_daemon_on_the_same_state_refuses_to_start.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from .conftest import DaemonFactory, Writer

pytestmark = pytest.mark.e2e


def state_db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "usaged.db"


def files_with_lines(writer: Writer, files: int = 4, lines: int = 3) -> None:
    for i in range(files):
        writer.append(writer.session(f"s{i}.jsonl", agent=f"a{i % 2}"), *writer.lines(lines))


@pytest.mark.parametrize("failpoint", [
    "after_read_before_commit", "after_read_before_commit:3", "ledger_before_commit:2",
    "after_commit", "after_commit:4", "before_output_rename", "before_output_rename:3"])
def test_sigkill_at_a_failpoint_then_restart_loses_and_doubles_nothing(
        failpoint: str, writer: Writer, daemon: DaemonFactory) -> None:
    files_with_lines(writer)
    d = daemon(writer.root, env={"USAGED_FAILPOINTS": failpoint}, wait_ready=False)
    for i in range(10):  # keep the daemon busy until it reaches the failpoint
        if d.proc is not None and d.proc.poll() is not None:
            break
        writer.append(writer.session(f"s{i % 4}.jsonl", agent=f"a{i % 2}"), writer.line())
        time.sleep(0.15)
    assert d.proc is not None and d.proc.wait(timeout=15) == -signal.SIGKILL
    d.env.pop("USAGED_FAILPOINTS")
    d.start()
    d.assert_matches(writer)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_deleted_state_is_rebuilt_from_the_files_still_on_disk(
        stop: int, writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    files_with_lines(writer)
    d = daemon(writer.root)
    d.assert_matches(writer)
    writer.delete(writer.session("s0.jsonl", agent="a0"))  # its usage lives only in the ledger
    d.assert_matches(writer)
    d.stop(stop)
    state_db(tmp_path).unlink()  # as a user would: the -wal and -shm files stay behind
    d.start()
    writer.reset_to_disk()
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 9
    said = d.events("state_missing")
    assert len(said) == 1 and "no longer on disk" in said[0]["lost"]


def corrupt(db: Path, kind: str) -> None:
    if kind == "zero_bytes":
        db.write_bytes(b"")
    elif kind == "random_bytes":
        db.write_bytes(os.urandom(64 * 1024))
    elif kind == "newer_schema":
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA user_version = 99")
        conn.close()
    elif kind == "torn_pages":  # a valid header, garbage after the first pages
        with db.open("r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(2 * 4096)
            fh.write(os.urandom(max(size - 2 * 4096, 4096)))
    else:
        raise ValueError(kind)


@pytest.mark.parametrize("kind", ["zero_bytes", "random_bytes", "newer_schema", "torn_pages"])
def test_corrupt_state_is_moved_aside_and_rebuilt_without_a_crash_loop(
        kind: str, writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    files_with_lines(writer, files=6, lines=40)  # several pages of state
    d = daemon(writer.root)
    d.assert_matches(writer)
    writer.delete(writer.session("s0.jsonl", agent="a0"))
    d.assert_matches(writer)
    assert d.stop() == 0
    corrupt(state_db(tmp_path), kind)
    d.start()
    writer.append(writer.session("s1.jsonl", agent="a1"), writer.line())
    writer.reset_to_disk()
    d.assert_matches(writer)
    unusable = d.events("state_unusable")
    assert len(unusable) == 1 and unusable[0]["level"] == "error"
    assert list(state_db(tmp_path).parent.glob("usaged.db.broken-*"))
    d.restart()  # and the next start is a plain one
    d.assert_matches(writer)
    assert len(d.events("state_unusable")) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_mid_stream_flushes_and_exits_zero(sig: int, writer: Writer,
                                                       daemon: DaemonFactory) -> None:
    paths = [writer.session(f"s{i}.jsonl") for i in range(3)]
    d = daemon(writer.root, "native", scan_interval=3600, debounce_quiet=5.0,
               debounce_max=5.0)
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            writer.append(paths[i % 3], writer.line())
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(0.8)
        started = time.monotonic()
        assert d.stop(sig) == 0
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert took < 5
    doc = d.doc()
    assert doc is not None and doc["daemon"]["state"] == "stopped"
    assert doc["windows"]["all_time"]["calls"] > 0  # the pending work was written out
    assert [e["event"] for e in d.events()][-1] == "daemon_stopped"
    d.start()
    d.assert_matches(writer)


def test_output_write_failures_keep_the_old_files_and_recover(
        writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    path = writer.session()
    writer.append(path, writer.line())
    d = daemon(writer.root)
    d.assert_matches(writer)
    before = d.doc()
    # the disk "fills up": 4 attempts of one write fail (tenacity), then one more: two writes
    d.kill()
    d.env["USAGED_IOFAIL"] = "write_output:5"
    d.start(wait_ready=False)
    writer.append(path, writer.line())
    d.wait_event("write_failed")
    out = tmp_path / "state" / "dashboard"
    assert json.loads((out / "usage.json").read_text()) == before  # the old file, intact
    assert (out / "usage.html").read_text().rstrip().endswith("</html>")
    d.assert_matches(writer)  # recovered, by itself
    failed = d.events("write_failed")
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert sorted(p.name for p in out.iterdir()) == ["usage.html", "usage.json"]  # no temps
    assert d.events("write_recovered")


def test_state_write_failures_keep_counting_exact_and_recover(
        writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    writer.append(path, writer.line())
    d = daemon(writer.root, env={"USAGED_IOFAIL": "ledger_write:6@10"})  # once running
    for _ in range(5):
        writer.append(path, writer.line())
        time.sleep(0.1)
    d.wait_event("state_write_failed")
    d.assert_matches(writer)  # recovered once the disk had room again
    failed = d.events("state_write_failed")
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert d.events("state_write_recovered")
    assert len(d.events("daemon_started")) == 1  # never crashed


def test_stop_signal_during_a_long_catch_up_exits_in_seconds_and_the_next_start_resumes(
        writer: Writer, daemon: DaemonFactory) -> None:
    for i in range(2000):  # a cold start with a lot to read
        writer.session(f"s{i:04d}.jsonl", agent=f"a{i % 10}").write_bytes(
            b"".join(writer.lines(20)))
    writer.history.update(writer.on_disk())
    d = daemon(writer.root, "native", wait_ready=False)
    d.wait_event("daemon_started")
    time.sleep(0.3)
    started = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 6  # launchd and systemd give 20 s, then SIGKILL
    assert d.events("scan_interrupted")
    d.start(wait_ready=False)
    doc = d.wait_totals(writer.expected(), timeout=60)
    assert doc["windows"]["all_time"]["calls"] == 40_000
    d.assert_matches(writer)
