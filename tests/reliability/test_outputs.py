"""faults.md D (outputs and status), items 31 and 32, against the running daemon.

Item 30 (torn reads, file mode) and the stream / 200-status parts of 31 and 33 run during the
storm (test_storm.py); a flush that raises is retried by test_crash.py's output-failure test;
the other status cases are in tests/test_status.py (docs/reliability.md has the map).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from .conftest import DaemonFactory, Writer, iso_epoch

pytestmark = pytest.mark.e2e


def test_a_burst_gives_one_flush_after_the_quiet_period(writer: Writer,
                                                        daemon: DaemonFactory) -> None:
    path = writer.session()
    writer.append(path, writer.line())
    d = daemon(writer.root, "native", scan_interval=3600, debounce_quiet=0.6,
               debounce_max=5.0, min_interval=0.1)
    d.assert_matches(writer)
    before = len(d.events("outputs_written"))
    for _ in range(20):  # 20 changes within 0.2 s
        writer.append(path, writer.line())
        time.sleep(0.01)
    last_change = time.time()
    d.wait_totals(writer.expected())
    time.sleep(1.0)
    flushes = d.events("outputs_written")[before:]
    assert len(flushes) == 1, flushes
    assert iso_epoch(flushes[0]["timestamp"]) - last_change >= 0.5  # after the quiet period


def test_wall_clock_jumps_move_neither_timers_nor_buckets(writer: Writer, daemon: DaemonFactory,
                                                          tmp_path: Path) -> None:
    clock = tmp_path / "clock-shift"
    path = writer.session()
    writer.append(path, *writer.lines(2))
    d = daemon(writer.root, "native", scan_interval=3600, launch=True,
               env={"USAGED_TEST_CLOCK": str(clock)})
    d.assert_matches(writer)
    for shift in (86400, -3600, 0):  # a day ahead, an hour behind, and back
        clock.write_text(str(shift))
        started = time.monotonic()
        writer.append(path, writer.line())
        doc = d.assert_matches(writer)  # debounce and flush run on the monotonic clock
        assert time.monotonic() - started < 3
    days = {day["date"]: day["calls"] for day in doc["daily"]}
    written = {dt.datetime.fromisoformat(e.decode().split('"timestamp": "')[1][:10]).date()
               for e in writer.history}
    assert set(days) == {day.isoformat() for day in written}  # line times, not read times
    assert sum(days.values()) == 5
