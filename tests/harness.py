"""The daemon as a real subprocess: start, wait for the dashboard, signal, collect its logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAIT = 15.0


class DaemonProc:
    poll = 0.05  # seconds between looks at the dashboard while waiting
    def __init__(self, config: Path, output: Path, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None,
                 launcher: list[str] | None = None) -> None:
        """`preexec_fn` runs in the child before exec (setrlimit, setuid); `launcher` replaces
        `-m usaged` (a test script that installs in-process fault injection first)."""
        self.config = config
        self.output = output
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.preexec_fn = preexec_fn
        self.launcher = launcher or ["-m", "usaged"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config.parent / f"daemon-{int(time.time() * 1000)}.log"

    def start(self, wait_ready: bool = True) -> DaemonProc:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.launcher, "--config", str(self.config), "run"],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
            preexec_fn=self.preexec_fn)
        if wait_ready:
            self.wait_for(lambda d: d.get("daemon", {}).get("pid") == self.proc_pid,
                          what="the daemon's first write")
        return self

    @property
    def proc_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def doc(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.output.read_text())
        except (OSError, ValueError):
            return None
        return data

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float = WAIT,
                 what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.doc()
            if last is not None and check(last):
                return last
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for "
                                     f"{what}:\n{self.logs_text()[-3000:]}")
            time.sleep(self.poll)
        raise AssertionError(f"timed out waiting for {what}; last totals: "
                             f"{last and last['windows']['all_time']}\n"
                             f"{self.logs_text()[-3000:]}")

    def wait_calls(self, n: int, **kw: Any) -> dict[str, Any]:
        return self.wait_for(lambda d: d["windows"]["all_time"]["calls"] == n,
                             what=f"{n} calls", **kw)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if hasattr(self, "_log"):
            self._log.close()

    def logs_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out
