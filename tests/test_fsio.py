"""Atomic writes: readers never see a torn file; the mode is kept; temps are cleaned up."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from usaged.fsio import StateLock, atomic_write


def test_readers_never_see_a_torn_file_during_a_burst_of_writes(tmp_path: Path) -> None:
    target = tmp_path / "usage.json"
    atomic_write(target, json.dumps({"n": 0, "pad": "x" * 50_000}).encode())
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            atomic_write(target, json.dumps({"n": n, "pad": "x" * (50_000 + n % 977)}).encode())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        for _ in range(1000):
            seen.add(json.loads(target.read_bytes())["n"])  # raises on a torn file
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 1  # the writes really were happening meanwhile


def test_mode_is_kept_after_every_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "out" / "usage.html"
    for mode in (0o644, 0o640, 0o644):
        atomic_write(target, b"<html></html>", mode)
        assert stat.S_IMODE(target.stat().st_mode) == mode


def test_failed_write_keeps_the_old_file_and_removes_the_temp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "usage.json"
    atomic_write(target, b'{"old": true}')
    monkeypatch.setenv("USAGED_IOFAIL", "write_output:99")
    with pytest.raises(OSError) as err:
        atomic_write(target, b'{"new": true}')
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b'{"old": true}'
    assert sorted(os.listdir(tmp_path)) == ["usage.json"]


def test_transient_error_is_retried_then_succeeds(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from usaged import failpoints

    monkeypatch.setattr(failpoints, "_hits", {})
    monkeypatch.setenv("USAGED_IOFAIL", "write_output:2")  # fails twice, then the disk "frees"
    atomic_write(tmp_path / "usage.json", b"{}")
    assert (tmp_path / "usage.json").read_bytes() == b"{}"


def test_state_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first, second = StateLock(tmp_path / "usaged.lock"), StateLock(tmp_path / "usaged.lock")
    assert first.acquire()
    try:
        assert not second.acquire()
        assert second.is_held() and second.holder_pid() == os.getpid()
    finally:
        first.release()
    assert not second.is_held()
