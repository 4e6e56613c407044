"""`usaged scan`: incremental, crash-safe, and bad input loses nothing."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import oc_line, oc_session, usage_json

from usaged import tail


def scan_cmd(cfg: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "usaged", "--config", str(cfg), "scan"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def log_events(stderr: str) -> list[str]:
    return [json.loads(ln)["event"] for ln in stderr.splitlines() if ln.startswith("{")]


def totals(tmp_path: Path) -> tuple[int, int, float]:
    w = usage_json(tmp_path)["windows"]["all_time"]
    return w["calls"], w["tokens"]["total"], w["cost_usd"]


def test_second_scan_reads_only_the_appended_bytes(tmp_path: Path, make_config: Any,
                                                    run: Any) -> None:
    root = tmp_path / "oc"
    for i in range(2000):
        oc_session(root, f"s{i:04d}.jsonl", agent=f"a{i % 4}").write_bytes(oc_line())
    cfg = make_config(openclaw=[root])
    code, out, _ = run("--config", str(cfg), "scan")
    assert code == 0 and "scanned 2000 files (2000 read" in out
    line = oc_line(output=7)
    with oc_session(root, "s1234.jsonl", agent="a2").open("ab") as fh:
        fh.write(line)
    code, out, _ = run("--config", str(cfg), "scan")
    assert f"scanned 2000 files (1 read, {len(line)} B): 1 new events" in out
    assert totals(tmp_path)[0] == 2001


@pytest.mark.parametrize("failpoint", ["after_read_before_commit", "after_commit",
                                       "after_read_before_commit:3", "before_output_rename"])
def test_scan_killed_at_a_failpoint_then_rerun_gives_exact_totals(
        failpoint: str, tmp_path: Path, make_config: Any) -> None:
    root = tmp_path / "oc"
    expected_calls = 0
    for i in range(6):
        with oc_session(root, f"s{i}.jsonl").open("ab") as fh:
            for _ in range(3):
                fh.write(oc_line(input=100, output=10, cost=0.01))
                expected_calls += 1
    cfg = make_config(openclaw=[root])
    killed = scan_cmd(cfg, {"USAGED_FAILPOINTS": failpoint})
    assert killed.returncode == -9, killed.stderr
    again = scan_cmd(cfg)
    assert again.returncode == 0, again.stderr
    calls, tokens, cost = totals(tmp_path)
    assert (calls, tokens) == (expected_calls, expected_calls * 110)
    assert cost == pytest.approx(expected_calls * 0.01, abs=1e-9)


def test_bad_lines_are_counted_and_good_lines_kept(tmp_path: Path, make_config: Any,
                                                   run: Any) -> None:
    root = tmp_path / "oc"
    stray = oc_line(output=5).replace(b'"text": "ok"', b'"text": "o\xffk"')
    body = (oc_line(output=1) + b"{not json\n" + b"\xff\xfe\xfa garbage\n" + b"[1, 2]\n"
            + stray + b"\n   \n" + b"\xef\xbb\xbf" + oc_line(output=2))
    oc_session(root).write_bytes(body)
    cfg = make_config(openclaw=[root])
    code, out, _ = run("--config", str(cfg), "scan")
    assert code == 0
    assert "3 new events, 3 bad lines" in out
    doc = usage_json(tmp_path)
    assert doc["windows"]["all_time"]["tokens"]["output"] == 8
    assert doc["daemon"]["bad_lines"] == 3
    assert any(a["id"] == "bad_input" for a in doc["alerts"])
    # a second scan does not count them again
    run("--config", str(cfg), "scan")
    assert usage_json(tmp_path)["daemon"]["bad_lines"] == 3


def test_a_50_mb_line_is_skipped_with_bounded_memory(tmp_path: Path, make_config: Any) -> None:
    root = tmp_path / "oc"
    path = oc_session(root)
    with path.open("wb") as fh:
        fh.write(oc_line(output=1))
        fh.write(b'{"type":"message","blob":"' + b"x" * (50 << 20) + b'"}\n')
        fh.write(oc_line(output=2))
    cfg = make_config(openclaw=[root])
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = scan_cmd(cfg)
    assert done.returncode == 0, done.stderr
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert max(peak_kib, before) < 200 * 1024 or peak_kib == before
    assert totals(tmp_path)[:2] == (2, 23)
    assert log_events(done.stderr).count("line_too_long") == 1


def test_unreadable_file_is_reported_once_and_others_counted(
        tmp_path: Path, make_config: Any, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "oc"
    oc_session(root, "good.jsonl").write_bytes(oc_line(output=3))
    bad = oc_session(root, "locked.jsonl")
    bad.write_bytes(oc_line(output=4))
    real_open = os.open

    def guarded(path: Any, flags: int, *a: Any) -> int:
        if str(path) == str(bad):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(tail.os, "open", guarded)
    cfg = make_config(openclaw=[root])
    events = []
    for _ in range(2):
        code, _, err = run("--config", str(cfg), "scan")
        assert code == 0
        events += log_events(err)
    assert events.count("file_unreadable") == 1
    doc = usage_json(tmp_path)
    assert doc["windows"]["all_time"]["tokens"]["output"] == 3
    assert doc["daemon"]["unreadable_files"] == 1
    monkeypatch.setattr(tail.os, "open", real_open)
    assert run("--config", str(cfg), "scan")[0] == 0
    doc = usage_json(tmp_path)
    assert doc["windows"]["all_time"]["tokens"]["output"] == 7
    assert doc["daemon"]["unreadable_files"] == 0


def test_missing_folders_are_not_errors(tmp_path: Path, make_config: Any, run: Any) -> None:
    (tmp_path / "empty").mkdir()
    cfg = make_config(openclaw=[tmp_path / "empty", tmp_path / "nowhere"])
    code, out, err = run("--config", str(cfg), "scan")
    assert code == 0
    assert "scanned 0 files" in out
    assert "openclaw folder not found" in err and "nowhere" in err
    assert usage_json(tmp_path)["windows"]["all_time"]["calls"] == 0


def test_special_files_matching_the_pattern_are_skipped(tmp_path: Path, make_config: Any,
                                                        run: Any) -> None:
    root = tmp_path / "oc"
    oc_session(root, "good.jsonl").write_bytes(oc_line(output=3))
    folder = oc_session(root, "dir.jsonl")
    folder.mkdir()
    os.mkfifo(oc_session(root, "fifo.jsonl"))
    os.symlink(tmp_path / "missing", oc_session(root, "dangling.jsonl"))
    loop = oc_session(root, "loop.jsonl")
    os.symlink(loop, loop)
    cfg = make_config(openclaw=[root])
    code, out, _ = run("--config", str(cfg), "scan")
    assert code == 0
    assert usage_json(tmp_path)["windows"]["all_time"]["tokens"]["output"] == 3


def test_bad_now_is_a_usage_error(tmp_path: Path, make_config: Any, run: Any) -> None:
    cfg = make_config(openclaw=[tmp_path])
    code, _, err = run("--config", str(cfg), "scan", "--now", "yesterday")
    assert code == 2
    assert err.strip() == "usaged: --now: not an ISO-8601 date or time: 'yesterday'"


def test_fork_files_are_labelled_by_their_own_session_id() -> None:
    from usaged.sources.openclaw import session_id

    assert session_id("2025-12-29T20-00-00-003Z_3e530905-9aea.jsonl") == "3e530905-9aea"
    assert session_id("abc.jsonl.deleted.2026-01-23T12-00-00.003Z") == "abc"
    assert session_id("sid.checkpoint.7.jsonl") == "sid"
    assert session_id("u-topic-42.jsonl") == "u-topic-42"
