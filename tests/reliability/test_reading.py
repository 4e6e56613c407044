"""faults.md A (reading and tailing), items 1-14, against the running daemon.

Every test ends with `dashboard == oracle` after the daemon settled (Daemon.assert_matches).
The scan-only variants of some items are in tests/test_scan.py and tests/test_tail.py; these
are the daemon-level ones (docs/reliability.md maps each item to its tests).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Daemon, DaemonFactory, Writer, iso_epoch

pytestmark = pytest.mark.e2e
# native: events only (no periodic scan during the test); none: the periodic scan only
MODES = {"native": {"watcher": "native", "scan_interval": 3600},
         "none": {"watcher": "none"}}


def ledger_offset(tmp_path: Path, path: Path) -> int:
    with sqlite3.connect(f"file:{tmp_path / 'state' / 'usaged.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT offset FROM files WHERE path = ?", (str(path),)).fetchone()
    return int(row[0])


def pause_between_scans(d: Daemon) -> None:
    """SIGSTOP the daemon right after a scan completed (never in the middle of reading)."""
    doc = d.doc()
    last = doc["daemon"]["last_scan"] if doc else ""
    d.wait_for(lambda x: x["daemon"]["last_scan"] != last, what="the next scan")
    d.send(signal.SIGSTOP)


def test_partial_last_line_counts_once_when_completed_even_after_a_kill(
        writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    path = writer.session()
    writer.append(path, *writer.lines(2))
    d = daemon(writer.root)
    d.assert_matches(writer)
    whole = path.stat().st_size
    writer.append_partial(path)
    d.assert_matches(writer)  # the half line is not counted
    assert ledger_offset(tmp_path, path) == whole  # and the offset stays at its start
    d.restart()  # SIGKILL with the line half written
    d.assert_matches(writer)
    writer.complete(path)
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 3
    d.restart()
    d.assert_matches(writer)  # counted once, not again after a restart
    assert ledger_offset(tmp_path, path) == path.stat().st_size


def test_lines_and_utf8_characters_split_across_read_chunks_parse(
        writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    model = "modèle-🙂-模型"
    lines = [writer.line(model=model, text="é" * n + "🙂") for n in range(12)]
    writer.append(path, *lines[:6])
    d = daemon(writer.root, read_chunk=7)  # every line and character crosses a chunk end
    d.assert_matches(writer)
    for line in lines[6:]:  # and written in two pieces, cut inside a 4-byte character
        cut = line.index("🙂".encode()) + 2
        writer.append_partial(path, line, cut)
        writer.complete(path)
    doc = d.assert_matches(writer)
    assert [m["model"] for m in doc["models"]] == [model]
    assert doc["daemon"]["bad_lines"] == 0


@pytest.mark.parametrize("mode", sorted(MODES))
def test_truncation_to_zero_then_new_content_loses_and_doubles_nothing(
        mode: str, writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    old = writer.lines(3)
    writer.append(path, *old)
    d = daemon(writer.root, **MODES[mode])
    d.assert_matches(writer)
    writer.truncate(path)
    d.wait_event("file_truncated")
    writer.append(path, old[0], *writer.lines(2))  # an old line again, and new ones
    d.assert_matches(writer)
    assert len(d.events("file_truncated")) == 1


def test_truncated_and_regrown_past_the_offset_is_seen_by_the_hash_with_events_off(
        writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    writer.append(path, *writer.lines(3))
    d = daemon(writer.root, "none")
    d.assert_matches(writer)
    ino = path.stat().st_ino
    pause_between_scans(d)
    try:
        writer.truncate(path)
        writer.append(path, *writer.lines(6))  # longer than before: size alone cannot tell
    finally:
        d.send(signal.SIGCONT)
    assert path.stat().st_ino == ino
    d.assert_matches(writer)
    assert [e["path"] for e in d.events("file_rewritten")] == [str(path)]
    assert not d.events("file_truncated")


def test_nul_run_left_by_a_writer_without_o_append_is_skipped(
        writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    path.touch()
    fd = os.open(path, os.O_WRONLY)  # no O_APPEND: it keeps its own position
    try:
        os.write(fd, b"".join(writer.lines(3)))
        writer.observe(path)
        d = daemon(writer.root, "native")
        d.assert_matches(writer)
        writer.truncate(path)  # someone else truncates; the writer's position stays put
        os.write(fd, writer.line())
        writer.observe(path)
    finally:
        os.close(fd)
    assert path.read_bytes().startswith(b"\x00" * 100)
    writer.append(path, writer.line())
    doc = d.assert_matches(writer)
    assert doc["daemon"]["bad_lines"] == 0


@pytest.mark.parametrize("mode", sorted(MODES))
def test_atomic_replacement_superset_adds_only_new_lines_and_different_body_is_reread(
        mode: str, writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    writer.append(path, *writer.lines(3))
    d = daemon(writer.root, **MODES[mode])
    d.assert_matches(writer)
    writer.replace_superset(path, *writer.lines(2))
    d.assert_matches(writer)
    kept = path.read_bytes().splitlines(keepends=True)[1]
    writer.replace(path, kept + b"".join(writer.lines(2)))  # a different body
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 7
    assert len(d.events("file_replaced")) == 2


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rename_of_a_file_or_folder_inside_the_tree_keeps_the_offset(
        mode: str, writer: Writer, daemon: DaemonFactory) -> None:
    a = writer.session("a.jsonl")
    writer.append(a, *writer.lines(3))
    d = daemon(writer.root, **MODES[mode])
    d.assert_matches(writer)
    archived = a.with_name("a.jsonl.deleted.2026-12-01T00-00-00.000Z")
    writer.rename(a, archived)
    writer.append(archived, writer.line())
    d.assert_matches(writer)
    folder = writer.root / "agents" / "main"
    writer.rename(folder, writer.root / "agents" / "renamed")
    moved = writer.root / "agents" / "renamed" / "sessions" / archived.name
    writer.append(moved, writer.line())
    d.assert_matches(writer)
    renames = d.events("file_renamed")
    assert [e["path"] for e in renames] == [str(archived), str(moved)]
    assert all(e["offset"] > 0 for e in renames)  # followed, not read again from 0


def test_deleted_file_keeps_its_usage_and_the_daemon_keeps_running(
        writer: Writer, daemon: DaemonFactory) -> None:
    a, b = writer.session("a.jsonl"), writer.session("b.jsonl")
    writer.append(a, *writer.lines(3))
    writer.append(b, writer.line())
    d = daemon(writer.root, "native")
    d.assert_matches(writer)
    writer.delete(a)
    d.assert_matches(writer)
    writer.append(b, writer.line())
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 5
    assert d.events("daemon_started")[0]["pid"] == d.proc_pid  # the same process throughout


@pytest.mark.parametrize("mode", sorted(MODES))
def test_delete_and_recreate_at_the_same_path_reads_the_new_file_from_zero(
        mode: str, writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    writer.append(path, *writer.lines(2))
    d = daemon(writer.root, **MODES[mode])
    d.assert_matches(writer)
    old_ino = path.stat().st_ino
    # the new file is longer than the stored offset: a stale offset would skip its start
    writer.recreate(path, *writer.lines(4))
    d.assert_matches(writer)
    writer.recreate(path, writer.line())  # and shorter
    doc = d.assert_matches(writer)
    reused = path.stat().st_ino == old_ino
    assert doc["windows"]["all_time"]["calls"] == 7, f"inode reused: {reused}"


def test_a_50_mb_line_is_skipped_with_bounded_memory_and_tailing_continues(
        writer: Writer, daemon: DaemonFactory) -> None:
    path = writer.session()
    d = daemon(writer.root, "native")
    writer.append(path, writer.line())
    with path.open("ab") as fh:
        fh.write(b'{"type":"message","blob":"' + b"x" * (50 << 20) + b'"}\n')
    writer.append(path, writer.line())
    d.assert_matches(writer)
    writer.append(path, writer.line())
    doc = d.assert_matches(writer)
    assert len(d.events("line_too_long")) == 1
    assert doc["daemon"]["bad_lines"] == 1
    assert d.proc_status("VmHWM") < 200 * 1024


def test_invalid_json_and_utf8_are_bad_lines_in_status_and_stray_bytes_still_count(
        writer: Writer, daemon: DaemonFactory, run: Any) -> None:
    path = writer.session()
    stray = writer.line(text="oXk").replace(b"oXk", b"o\xffk")
    writer.append(path, writer.line())
    d = daemon(writer.root)
    writer.raw(path, b"{not json\n" + b"\xff\xfe garbage \xc3\n" + b"[1, 2]\n" + stray)
    writer.append(path, writer.line())
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 3
    code, out, _ = run("--config", str(d.config), "status", "--json")
    assert code == 0 and json.loads(out)["bad_lines"] == 3
    assert d.alive()


def test_bad_lines_stay_counted_after_later_appends(writer: Writer, run: Any,
                                                   make_config: Any) -> None:
    """Regression: every append used to start the file's bad-line count over."""
    path = writer.session()
    writer.raw(path, writer.line() + b"{not json\n")
    cfg = make_config(openclaw=[writer.root])
    for _ in range(3):
        assert run("--config", str(cfg), "scan")[0] == 0
        writer.append(path, writer.line())
    code, out, _ = run("--config", str(cfg), "status", "--json")
    assert json.loads(out)["bad_lines"] == 1 and json.loads(out)["events"] == 3


def test_empty_blank_crlf_and_bom_files_give_no_errors(writer: Writer,
                                                       daemon: DaemonFactory) -> None:
    writer.session("empty.jsonl").touch()
    writer.raw(writer.session("blank.jsonl"), b"\n\n   \n\t\n")
    writer.raw(writer.session("crlf.jsonl"),
               b"".join(ln[:-1] + b"\r\n" for ln in writer.lines(3)))
    writer.raw(writer.session("bom.jsonl"), b"\xef\xbb\xbf" + b"".join(writer.lines(2)))
    d = daemon(writer.root)
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 5
    assert doc["daemon"]["bad_lines"] == 0
    assert not [e for e in d.events() if e.get("level") in ("warning", "error")]


def test_the_same_usage_in_forks_backups_and_checkpoints_counts_once(
        writer: Writer, daemon: DaemonFactory) -> None:
    live = writer.session("0b7e.jsonl")
    parent = writer.lines(4)
    writer.append(live, *parent)
    d = daemon(writer.root, "native")
    d.assert_matches(writer)
    writer.append(writer.session("2026-12-01T10-00-00.000Z_9c1d.jsonl"), *parent,
                  writer.line())  # a fork begins with a copy of its parent
    writer.append(writer.session("0b7e.jsonl.bak.2026-12-01T11-00-00Z"), *parent)
    writer.append(writer.session("0b7e.checkpoint.3.jsonl"), *parent[1:])
    writer.append(writer.session("backup.jsonl", agent="ops"), *parent)  # another agent
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 5


def test_folders_fifos_and_broken_links_named_like_transcripts_never_hang(
        writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    good = writer.session("good.jsonl")
    writer.append(good, writer.line())
    d = daemon(writer.root, "native")
    d.assert_matches(writer)
    writer.session("dir.jsonl").mkdir()
    os.mkfifo(writer.session("fifo.jsonl"))
    os.symlink(tmp_path / "missing", writer.session("dangling.jsonl"))
    loop = writer.session("loop.jsonl")
    os.symlink(loop, loop)
    writer.append(good, writer.line())
    time.sleep(0.5)  # events for every one of them, and a few scans
    writer.append(good, writer.line())
    doc = d.assert_matches(writer)
    assert doc["daemon"]["unreadable_files"] == 0
    assert doc["daemon"]["bad_lines"] == 0
    started = iso_epoch(d.events("daemon_started")[0]["timestamp"])
    assert time.time() - started < 30
