"""The contract launchd and systemd rely on, tested on the real daemon process.

SIGTERM: pending work flushed, outputs written, exit 0 well within the stop timeout the service
files give (ExitTimeOut / TimeoutStopSec). SIGKILL: a restart loses nothing, counts nothing twice.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import oc_line, oc_session

from usaged.service import STOP_TIMEOUT

pytestmark = pytest.mark.e2e


def config(make_config: Any, root: Path) -> Path:
    return make_config(openclaw=[root], daemon={"debounce_quiet": 0.2, "debounce_max": 1.0,
                                                 "scan_interval": 2})


def test_sigterm_exits_zero_within_the_stop_timeout_with_outputs_written(
        tmp_path: Path, make_config: Any, daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    path = oc_session(root)
    path.write_bytes(b"".join(oc_line() for _ in range(50)))
    d = daemon_factory(config(make_config, root))
    d.wait_calls(50)
    with path.open("ab") as fh:
        fh.write(b"".join(oc_line() for _ in range(25)))
    started = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=STOP_TIMEOUT) == 0
    assert time.monotonic() - started < STOP_TIMEOUT / 4
    doc = d.doc()
    assert doc is not None and doc["windows"]["all_time"]["calls"] == 75
    assert doc["daemon"]["state"] == "stopped"


def test_sigkill_while_an_agent_writes_then_restart_loses_nothing(
        tmp_path: Path, make_config: Any, daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    paths = [oc_session(root, f"s{i}.jsonl") for i in range(3)]
    for p in paths:
        p.write_bytes(oc_line())
    cfg = config(make_config, root)
    d = daemon_factory(cfg)
    d.wait_calls(3)
    written = 3
    stop = threading.Event()

    def agent() -> None:
        nonlocal written
        i = 0
        while not stop.is_set():
            line = oc_line(output=1)
            with paths[i % 3].open("ab") as fh:  # some lines in two pieces
                fh.write(line[:30])
                fh.flush()
                fh.write(line[30:])
            written += 1
            i += 1
            time.sleep(0.01)

    writer = threading.Thread(target=agent)
    writer.start()
    try:
        time.sleep(1.0)
        d.kill()
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join()
    again = daemon_factory(cfg)
    doc = again.wait_calls(written, timeout=20)
    assert doc["windows"]["all_time"]["tokens"]["output"] == 20 * 3 + (written - 3)
    assert again.stop() == 0
