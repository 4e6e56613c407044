"""The daemon as a real subprocess on a temp tree: every change shows up in usage.json.

With the native watcher and a one-hour scan interval only events can explain a quick update;
with watcher = "none" and a 1 s scan the periodic scan alone must see every change.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import oc_line, oc_session

pytestmark = pytest.mark.e2e
MODES = {"native-events": ("native", 3600), "scan-only": ("none", 1)}


def daemon_config(make_config: Any, root: Path, mode: str, **extra: Any) -> Path:
    watcher, interval = MODES[mode]
    return make_config(openclaw=[root], daemon={
        "watcher": watcher, "scan_interval": interval, "debounce_quiet": 0.2,
        "debounce_max": 1.0, "min_interval": 0.1, **extra.pop("daemon", {})}, **extra)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_change_reaches_the_dashboard(mode: str, tmp_path: Path, make_config: Any,
                                            daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    root.mkdir()
    d = daemon_factory(daemon_config(make_config, root, mode))
    d.wait_calls(0)

    path = oc_session(root, "a.jsonl")  # a new folder tree and a new file
    path.write_bytes(oc_line(output=1))
    d.wait_calls(1)

    with path.open("ab") as fh:
        fh.write(oc_line(output=2) + oc_line(output=3))
    d.wait_calls(3)

    line = oc_line(output=4)  # one line written in two pieces
    with path.open("ab") as fh:
        fh.write(line[:25])
        fh.flush()
        time.sleep(1.5)
        assert d.doc()["windows"]["all_time"]["calls"] == 3  # type: ignore[index]
        fh.write(line[25:])
    doc = d.wait_calls(4)
    assert doc["windows"]["all_time"]["tokens"]["output"] == 10

    renamed = path.with_name("a.jsonl.deleted.2026-12-03T00-00-00.000Z")
    os.rename(path, renamed)
    with renamed.open("ab") as fh:  # and it keeps growing under its new name
        fh.write(oc_line(output=5))
    doc = d.wait_calls(5)
    assert doc["windows"]["all_time"]["tokens"]["output"] == 15

    other = oc_session(root, "b.jsonl", agent="ops")
    other.write_bytes(oc_line(output=6))
    d.wait_calls(6)
    os.unlink(renamed)
    os.unlink(other)
    time.sleep(2.5)  # deleting files never takes spend back
    doc = d.wait_calls(6)
    assert doc["windows"]["all_time"]["tokens"]["output"] == 21

    assert d.stop(signal.SIGTERM) == 0
    final = d.doc()
    assert final is not None and final["daemon"]["state"] == "stopped"
    assert final["windows"]["all_time"]["calls"] == 6


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_pending_changes_and_exits_zero(sig: int, tmp_path: Path,
                                                       make_config: Any,
                                                       daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    path = oc_session(root)
    path.write_bytes(oc_line())
    cfg = daemon_config(make_config, root, "native-events",
                        daemon={"debounce_quiet": 5.0, "debounce_max": 5.0})
    d = daemon_factory(cfg)
    d.wait_calls(1)
    with path.open("ab") as fh:
        fh.write(oc_line() + oc_line())
    time.sleep(0.5)  # ingested, but the debounced write is seconds away
    started = time.monotonic()
    assert d.stop(sig) == 0
    assert time.monotonic() - started < 5
    assert d.doc()["windows"]["all_time"]["calls"] == 3  # type: ignore[index]


def test_second_daemon_on_the_same_state_refuses_to_start(tmp_path: Path, make_config: Any,
                                                          daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    root.mkdir()
    cfg = daemon_config(make_config, root, "native-events")
    first = daemon_factory(cfg)
    second = daemon_factory(cfg, wait_ready=False)
    assert second.proc.wait(timeout=15) == 1
    assert f"already running (pid {first.proc_pid})" in second.logs_text()
    oc_session(root).write_bytes(oc_line())
    first.wait_calls(1)  # the first one is unaffected
    first.kill()
    third = daemon_factory(cfg)  # the kernel lock died with the first: a new one starts
    third.wait_calls(1)
    assert third.stop() == 0


def test_config_change_is_picked_up_without_restart(tmp_path: Path, make_config: Any,
                                                    daemon_factory: Any, run: Any) -> None:
    root = tmp_path / "oc"
    oc_session(root).write_bytes(oc_line(cost=30.0, ts=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                      time.gmtime())))
    cfg = daemon_config(make_config, root, "native-events", budget={"monthly_usd": 50})
    d = daemon_factory(cfg)
    d.wait_for(lambda doc: doc["budget"]["monthly_usd"] == 50, what="budget 50")
    code, _, _ = run("--config", str(cfg), "config", "set", "budget.monthly_usd", "75")
    assert code == 0
    doc = d.wait_for(lambda doc: doc["budget"]["monthly_usd"] == 75, what="budget 75")
    assert doc["budget"]["ratio"] == pytest.approx(30 / 75)
    # an invalid edit keeps the last good config and says why
    cfg.write_text(cfg.read_text().replace("monthly_usd = 75", "monthly_usd = -1"))
    d.wait_for(lambda doc: bool(doc["daemon"].get("config_error")), what="config error")
    assert d.doc()["budget"]["monthly_usd"] == 75  # type: ignore[index]
    assert d.stop() == 0
