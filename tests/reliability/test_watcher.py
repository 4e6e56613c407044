"""faults.md C (watcher and scale), items 21 and 23-29, against the running daemon.

Item 22 (the event storm) is in test_storm.py; the model-based test (test_model.py) runs every
mutation with watcher = "none" as well.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from usaged.watch import MAX_PENDING, Inbox

from .conftest import DaemonFactory, Writer, size_marks, sized

pytestmark = pytest.mark.e2e


def test_scan_alone_sees_every_kind_of_change(writer: Writer, daemon: DaemonFactory) -> None:
    a, b, c = (writer.session(n) for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    writer.append(a, *writer.lines(2))
    writer.append(b, *writer.lines(2))
    writer.append(c, *writer.lines(2))
    d = daemon(writer.root, "none")
    d.assert_matches(writer)
    writer.append(a, writer.line())
    writer.append_partial(b)
    d.assert_matches(writer)
    writer.complete(b)
    writer.truncate(c)
    writer.append(c, writer.line())
    d.assert_matches(writer)
    writer.replace_superset(a, writer.line())
    writer.rename(b, b.with_name("b.jsonl.reset.2026-12-01T00-00-00Z"))
    writer.append(writer.session("new.jsonl", agent="late"), writer.line())
    d.assert_matches(writer)
    writer.replace(a, writer.line())
    writer.recreate(c, *writer.lines(3))
    doc = d.assert_matches(writer)
    assert doc["daemon"]["watcher"] == "none"
    assert not d.events("watching")  # no observer at all: the scan did everything


def test_dead_watcher_thread_is_restarted_and_a_rescan_forced(
        writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    d = daemon(writer.root, "native", scan_interval=3600,
               env={"USAGED_IOFAIL": "watch_handler:1"})  # the first event kills the thread
    writer.append(path, writer.line())
    d.wait_event("watcher_restarted", timeout=10)
    d.assert_matches(writer)  # the forced rescan saw what the dead thread missed
    writer.append(path, writer.line())  # and events flow again
    d.assert_matches(writer)
    assert len(d.events("watcher_restarted")) == 1


def test_inbox_stays_bounded_and_asks_for_a_rescan_instead() -> None:
    inbox = Inbox()
    for i in range(MAX_PENDING + 1000):
        inbox.add(f"/x/{i}.jsonl")
    paths, rescan = inbox.drain()
    assert rescan and len(paths) <= MAX_PENDING


def test_folders_created_after_start_and_folders_moved_in_are_read(
        writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    d = daemon(writer.root, "native", scan_interval=3600)
    writer.append(writer.session("a.jsonl", agent="fresh"), writer.line())  # at once
    d.assert_matches(writer)
    prepared = tmp_path / "elsewhere" / "sessions"
    prepared.mkdir(parents=True)
    (prepared / "p.jsonl").write_bytes(b"".join(writer.lines(3)))
    os.rename(prepared.parent, writer.root / "agents" / "moved")
    writer.observe(writer.session("p.jsonl", agent="moved"))
    d.assert_matches(writer)


def test_inotify_failure_at_start_falls_back_to_polling_with_one_warning(
        writer: Writer, daemon: DaemonFactory, run: Any) -> None:
    writer.append(writer.session(), writer.line())
    d = daemon(writer.root, "native", scan_interval=3600,
               env={"USAGED_IOFAIL": "watch_schedule:1"})  # as when max_user_watches is hit
    writer.append(writer.session(), writer.line())
    doc = d.assert_matches(writer)  # polling sees it, without a periodic scan
    assert doc["daemon"]["watcher"] == "polling" and doc["daemon"]["watcher_degraded"]
    assert len(d.events("watcher_degraded")) == 1
    code, out, _ = run("--config", str(d.config), "status")
    assert code == 0 and "DEGRADED" in out
    code, out, _ = run("--config", str(d.config), "status", "--json")
    assert json.loads(out)["watcher_degraded"] is True


@pytest.mark.parametrize("watcher", ["native", "none"])
def test_root_missing_at_start_deleted_and_recreated_is_followed(
        watcher: str, writer: Writer, daemon: DaemonFactory) -> None:
    shutil.rmtree(writer.root)
    d = daemon(writer.root, watcher)
    assert d.doc()["windows"]["all_time"]["calls"] == 0  # type: ignore[index]
    writer.append(writer.session(), writer.line())
    d.assert_matches(writer)
    shutil.rmtree(writer.root)
    d.assert_matches(writer)  # spend stays
    writer.append(writer.session("again.jsonl"), *writer.lines(2))
    d.assert_matches(writer)
    assert d.alive() and len(d.events("daemon_started")) == 1


def test_permission_denied_on_a_file_or_folder_is_one_warning_and_retried(
        writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    good = writer.session("good.jsonl", agent="a")
    locked = writer.session("locked.jsonl", agent="a")
    hidden = writer.session("x.jsonl", agent="b")
    for path in (good, locked, hidden):
        writer.append(path, writer.line())
    deny = tmp_path / "deny"
    deny.write_text(f"{locked}\n{hidden.parent}\n")
    d = daemon(writer.root, "none", launch=True, env={"USAGED_TEST_DENY": str(deny)})
    d.settle(scans=5)
    doc = d.doc()
    assert doc is not None and doc["windows"]["all_time"]["calls"] == 1  # the others count
    assert doc["daemon"]["unreadable_files"] == 2
    warned = sorted(e["path"] for e in d.events("file_unreadable"))
    assert warned == sorted([str(locked), str(hidden.parent)])  # once per path, not per scan
    deny.unlink()  # readable again
    doc = d.assert_matches(writer)
    assert doc["daemon"]["unreadable_files"] == 0


def test_unreadable_file_that_is_deleted_is_no_longer_a_problem(
        writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    locked = writer.session("locked.jsonl")
    writer.append(locked, writer.line())
    deny = tmp_path / "deny"
    deny.write_text(f"{locked}\n")
    d = daemon(writer.root, "none", launch=True, env={"USAGED_TEST_DENY": str(deny)})
    d.wait_for(lambda doc: doc["daemon"]["unreadable_files"] == 1, what="1 unreadable")
    os.unlink(locked)
    writer.history.clear()  # it was never read
    d.wait_for(lambda doc: doc["daemon"]["unreadable_files"] == 0, what="0 unreadable")
    d.assert_matches(writer)


def _nofile_256() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.parametrize("watcher", [pytest.param(w, marks=size_marks(120, 900))
                                     for w in ("native", "polling")])
def test_thousands_of_files_under_an_open_file_limit_of_256(
        watcher: str, writer: Writer, daemon: DaemonFactory) -> None:
    n = sized(2000, 10_000)
    for i in range(n):
        writer.session(f"s{i:05d}.jsonl", agent=f"a{i % 20}").write_bytes(writer.line())
    writer.history.update(writer.on_disk())
    started = time.monotonic()
    d = daemon(writer.root, watcher, preexec_fn=_nofile_256, scan_interval=3600,
               debounce_quiet=0.2, debounce_max=1.0)
    doc = d.wait_totals(writer.expected(), timeout=sized(60, 300))
    took = time.monotonic() - started
    for i in range(0, n, n // 10):  # and events still work on top of it
        writer.append(writer.session(f"s{i:05d}.jsonl", agent=f"a{i % 20}"), writer.line())
    doc = d.wait_totals(writer.expected(), timeout=30)
    text = d.logs_text()
    assert "Too many open files" not in text and "EMFILE" not in text
    assert doc["daemon"]["files"] == n
    assert took < sized(30, 120), f"start-up took {took:.1f} s for {n} files"
    print(f"\n{n} files, watcher {watcher}: first complete dashboard after {took:.1f} s")


@pytest.mark.parametrize("json_name", ["usage.json", "usage.jsonl"])
def test_outputs_inside_the_watched_tree_cause_no_feedback_loop(
        json_name: str, writer: Writer, daemon: DaemonFactory) -> None:
    sessions = writer.session().parent
    writer.append(writer.session(), writer.line())
    d = daemon(writer.root, "native", scan_interval=3600,
               sections={"paths": {"output_dir": str(sessions)},
                         "output": {"json_name": json_name}})
    d.assert_matches(writer)
    time.sleep(0.5)
    writes, cpu = len(d.events("outputs_written")), d.cpu_seconds()
    time.sleep(2.5)
    assert len(d.events("outputs_written")) == writes  # our own writes wake nothing
    assert d.cpu_seconds() - cpu < 0.2  # idle
    writer.append(writer.session(), writer.line())
    doc = d.assert_matches(writer)
    assert doc["daemon"]["bad_lines"] == 0 and doc["daemon"]["files"] == 1
