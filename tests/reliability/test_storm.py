"""faults.md item 22, the event storm, and what must hold while it blows: 50 appends/s to one
file plus slower appends to two others, for 8 s in CI (60 s with USAGED_SOAK_SCALE=full).

One storm per module (a fixture); each test asserts one item on what it recorded:
22 final totals, bounded output rewrites, memory and CPU; 30 no torn output for readers and the
configured file mode after every rewrite; 31 flushes at least every max-wait and never two
closer than the minimum interval; 33 `usaged status` 200 times during the storm.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from usaged import cli

from .conftest import Daemon, Writer, iso_epoch, size_marks, sized
from .oracle import Totals

pytestmark = [pytest.mark.e2e, *size_marks(120, 900)]

SECONDS = sized(8, 60)
RATE = 50  # appends per second to the hot file
QUIET, MAX_WAIT, MIN_INTERVAL = 0.5, 1.5, 0.5
STATUS_CALLS = 200


@dataclass
class Storm:
    daemon: Daemon
    writer: Writer
    config: Path
    started: float = 0.0
    ended: float = 0.0
    appends: int = 0
    final: dict[str, Any] = field(default_factory=dict)
    reads: int = 0
    torn: list[str] = field(default_factory=list)
    modes: set[int] = field(default_factory=set)
    status: list[dict[str, Any]] = field(default_factory=list)
    status_errors: list[str] = field(default_factory=list)
    rss_kib: int = 0
    cpu: float = 0.0


def _reader(out: Path, storm: Storm, stop: threading.Event) -> None:
    json_path, html_path = out / "usage.json", out / "usage.html"
    while not stop.is_set():
        try:
            with contextlib.suppress(FileNotFoundError):
                data = json_path.read_bytes()
                json.loads(data)
                html = html_path.read_bytes()
                if not html.rstrip().endswith(b"</html>"):
                    storm.torn.append(f"html: ...{html[-80:]!r}")
                storm.modes.add(stat.S_IMODE(json_path.stat().st_mode))
                storm.modes.add(stat.S_IMODE(html_path.stat().st_mode))
                storm.reads += 1
        except ValueError as exc:
            storm.torn.append(f"json: {exc}")
        time.sleep(0.003)


def _status(storm: Storm, stop: threading.Event) -> None:
    for _ in range(STATUS_CALLS):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(["--config", str(storm.config), "status", "--json"])
        try:
            report = json.loads(buf.getvalue())
        except ValueError as exc:
            storm.status_errors.append(f"{code}: {exc}: {buf.getvalue()[:200]!r}")
            continue
        if code != 0:
            storm.status_errors.append(f"exit {code}")
        storm.status.append(report)
        time.sleep(SECONDS / STATUS_CALLS / 2)


def _write(storm: Storm, stop: threading.Event) -> None:
    w = storm.writer
    hot = w.session("hot.jsonl")
    others = [w.session("slow.jsonl", agent="b"), w.session("slower.jsonl", agent="c")]
    t0 = time.monotonic()
    n = 0
    while not stop.is_set():
        n += 1
        w.append(hot, w.line())
        if n % 25 == 0:
            w.append(others[n // 25 % 2], w.line())
        storm.appends = n
        time.sleep(max(0.0, t0 + n / RATE - time.monotonic()))


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storm]:
    base = tmp_path_factory.mktemp("storm")
    home = base / "home"
    home.mkdir()
    root = base / "oc"
    root.mkdir()
    config = base / "usaged.toml"
    config.write_text(tomli_w.dumps({
        "timezone": "UTC", "paths": {"state_dir": str(base / "state")},
        "output": {"file_mode": "0640"},
        "sources": {"openclaw": {"enabled": True, "roots": [str(root)]},
                    "claude_code": {"enabled": False}},
        "daemon": {"watcher": "native", "scan_interval": 2.0, "debounce_quiet": QUIET,
                   "debounce_max": MAX_WAIT, "min_interval": MIN_INTERVAL}}))
    env = {"HOME": str(home), "XDG_STATE_HOME": str(home / "s"), "XDG_CONFIG_HOME": str(home / "c")}
    d = Daemon(config, base / "state" / "dashboard" / "usage.json", env)
    s = Storm(d, Writer(root, seed=22), config)
    d.start()
    stop = threading.Event()
    threads = [threading.Thread(target=_write, args=(s, stop)),
               threading.Thread(target=_reader, args=(config.parent / "state" / "dashboard", s,
                                                      stop)),
               threading.Thread(target=_status, args=(s, stop))]
    cpu0 = d.cpu_seconds()
    s.started = time.time()
    for t in threads:
        t.start()
    try:
        time.sleep(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join()
    s.ended = time.time()
    time.sleep(MAX_WAIT + 0.5)  # the last flush of the stream
    s.cpu = d.cpu_seconds() - cpu0
    s.rss_kib = d.proc_status("VmHWM")
    assert d.stop() == 0  # the shutdown scan and write: the exact final figures
    s.final = d.doc() or {}
    try:
        yield s
    finally:
        d.cleanup()


def test_storm_totals_equal_the_oracle_with_bounded_rewrites_memory_and_cpu(storm: Storm
                                                                           ) -> None:
    want = storm.writer.expected()
    assert Totals.of_doc(storm.final).same(want), storm.daemon.mismatch(want, storm.final)
    assert want.calls == len(storm.writer.history) >= SECONDS * RATE * 0.8
    during = [e for e in storm.daemon.events("outputs_written")
              if storm.started <= iso_epoch(e["timestamp"]) <= storm.ended + MAX_WAIT]
    assert len(during) <= SECONDS / MAX_WAIT + 3, len(during)
    assert storm.rss_kib < 150 * 1024
    assert storm.cpu < 0.6 * (SECONDS + MAX_WAIT), f"{storm.cpu:.1f} s CPU"
    print(f"\nstorm: {storm.appends} appends in {SECONDS} s, {len(during)} output rewrites, "
          f"peak RSS {storm.rss_kib // 1024} MB, {storm.cpu:.1f} s CPU")


def test_readers_never_see_a_torn_output_and_the_mode_stays_as_configured(storm: Storm
                                                                         ) -> None:
    assert storm.reads > 200
    assert storm.torn == []
    assert storm.modes == {0o640}
    out = storm.config.parent / "state" / "dashboard"
    assert sorted(os.listdir(out)) == ["usage.html", "usage.json"]  # no temp left behind


def test_a_constant_stream_flushes_every_max_wait_and_never_closer_than_the_minimum(
        storm: Storm) -> None:
    times = [iso_epoch(e["timestamp"]) for e in storm.daemon.events("outputs_written")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= MIN_INTERVAL - 0.02, gaps
    stream = [t for t in times if storm.started + MAX_WAIT < t < storm.ended]
    stream_gaps = [b - a for a, b in zip(stream, stream[1:], strict=False)]
    assert stream_gaps and max(stream_gaps) <= MAX_WAIT + 0.5, stream_gaps


def test_status_200_times_during_heavy_writes_never_reads_a_partial_state(storm: Storm
                                                                         ) -> None:
    assert storm.status_errors == []
    assert len(storm.status) == STATUS_CALLS
    events = [r["events"] for r in storm.status]
    assert events == sorted(events) and events[-1] > events[0]  # never backwards
    assert all(r["running"] for r in storm.status)
