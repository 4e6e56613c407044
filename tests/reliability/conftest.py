"""The reliability harness: a Writer that mutates transcripts like real agents (and worse), the
oracle it feeds, and the daemon as a subprocess that can be killed, restarted and settled.

- `Writer` records every complete line it ever saw in a counted file (spend is never taken
  back), so `writer.expected()` is what the dashboard must show once the daemon has seen it.
  A test lets the daemon see what it wrote (`settle`) before destroying it; otherwise the
  truth would depend on timing.
- `Daemon` (tests/harness.py's DaemonProc plus kill / restart / settle / log capture): `settle`
  waits for two reconciliation scans that completed after the call; the second one started
  after every earlier mutation, so nothing the test did can still be on its way.
- Sizes: USAGED_SOAK_SCALE=full (or `pytest --run-slow`) runs the soak, storm, model-based
  test, fuzzers and the many-files test at full size, marked `slow` (docs/reliability.md); the
  default is reduced but real.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import WAIT, DaemonProc

from .oracle import Totals, complete_lines, counted_path, expected

LAUNCHER = Path(__file__).with_name("launcher.py")
FAST = {"scan_interval": 0.1, "debounce_quiet": 0.02, "debounce_max": 0.2,
        "min_interval": 0.02}


def full_size() -> bool:
    return os.environ.get("USAGED_SOAK_SCALE", "").lower() == "full"


def sized(ci: Any, full: Any) -> Any:
    """The CI size, or the full one under USAGED_SOAK_SCALE=full (or --run-slow)."""
    return full if full_size() else ci


def size_marks(ci_timeout: int, full_timeout: int) -> list[pytest.MarkDecorator]:
    """Marks of a test whose size scales: `slow` at full size, and a timeout to match."""
    return [pytest.mark.timeout(sized(ci_timeout, full_timeout)),
            *([pytest.mark.slow] if full_size() else [])]


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--run-slow"):
        os.environ["USAGED_SOAK_SCALE"] = "full"


def iso_epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- the writer ---------------------------------------------------------------------------------


class Writer:
    """Writes OpenClaw transcripts under `root` and remembers every complete line it saw."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.history: set[bytes] = set()
        self.pending: dict[Path, bytes] = {}  # the rest of a line written in two pieces
        self.rng = random.Random(seed)
        self.n = 0
        self.base_ms = int((time.time() - 3 * 86400) * 1000)  # in the past: inside all-time

    # paths and lines

    def session(self, name: str = "s1.jsonl", agent: str = "main") -> Path:
        folder = self.root / "agents" / agent / "sessions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def line(self, *, cost: float | None = None, provider: str = "anthropic",
             model: str = "claude-opus-4-5", text: str = "ok", **usage: int) -> bytes:
        """A new assistant line with a unique dedup key and random usage."""
        self.n += 1
        ms = self.base_ms + self.n * 1000 + self.rng.randrange(1000)
        entry = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        kinds = {"input": self.rng.randrange(1, 500), "output": self.rng.randrange(1, 900),
                 "cacheRead": self.rng.randrange(0, 5000), "cacheWrite": self.rng.randrange(0, 300)}
        kinds.update(usage)
        total = cost if cost is not None else self.rng.randrange(1, 50_000) / 1e6
        body = {"type": "message", "id": f"{self.n:08x}", "parentId": None,
                "timestamp": entry[:-3] + "Z",
                "message": {"role": "assistant", "content": [{"type": "text", "text": text}],
                            "api": "anthropic-messages", "provider": provider, "model": model,
                            "usage": {**kinds, "totalTokens": sum(kinds.values()),
                                      "cost": {"total": total}},
                            "stopReason": "stop", "timestamp": ms - 700}}
        return (json.dumps(body, ensure_ascii=False) + "\n").encode()

    def lines(self, n: int) -> list[bytes]:
        return [self.line() for _ in range(n)]

    # mutations (each one records what is on disk afterwards)

    def append(self, path: Path, *lines: bytes) -> None:
        data = b"".join(lines)
        with path.open("ab+") as fh:
            end = fh.seek(0, os.SEEK_END)
            clean = end == 0 or os.pread(fh.fileno(), 1, end - 1) == b"\n"
            fh.write(data)
        if clean and counted_path(self.root, path):  # whole lines after whole lines
            self.history.update(complete_lines(data))
        else:
            self.observe(path)

    def append_partial(self, path: Path, line: bytes | None = None, cut: int | None = None
                       ) -> bytes:
        """Write the first piece of a line (no newline yet); `complete` writes the rest."""
        self.complete(path)
        line = line or self.line()
        cut = cut if cut is not None else self.rng.randrange(1, len(line) - 1)
        with path.open("ab") as fh:
            fh.write(line[:cut])
        self.pending[path] = line[cut:]
        self.observe(path)
        return line

    def complete(self, path: Path) -> None:
        rest = self.pending.pop(path, None)
        if rest is not None and path.exists():
            with path.open("ab") as fh:
                fh.write(rest)
            self.observe(path)

    def raw(self, path: Path, data: bytes) -> None:
        with path.open("ab") as fh:
            fh.write(data)
        self.observe(path)

    def truncate(self, path: Path, size: int = 0) -> None:
        os.truncate(path, size)
        self.pending.pop(path, None)
        self.observe(path)

    def replace(self, path: Path, body: bytes) -> None:
        """Atomically: a temp file in the same folder (ignored by name), then rename."""
        self.n += 1
        tmp = path.with_name(f".{path.name}.{self.n}.tmp")
        with tmp.open("wb") as fh:
            fh.write(body)
        os.replace(tmp, path)
        self.pending.pop(path, None)
        self.observe(path)

    def replace_superset(self, path: Path, *new: bytes) -> None:
        old = path.read_bytes() if path.exists() else b""
        self.replace(path, old[:old.rfind(b"\n") + 1] + b"".join(new))

    def rename(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        if src in self.pending:
            self.pending[dst] = self.pending.pop(src)
        self.observe(dst)

    def delete(self, path: Path) -> None:
        os.unlink(path)
        self.pending.pop(path, None)

    def recreate(self, path: Path, *lines: bytes) -> None:
        """Delete, then a new file at the same path (the inode is often reused)."""
        self.delete(path)
        with path.open("xb") as fh:
            fh.write(b"".join(lines))
        self.observe(path)

    # what the oracle knows

    def observe(self, path: Path) -> None:
        if counted_path(self.root, path):
            self.history.update(complete_lines(path.read_bytes()))

    def on_disk(self) -> list[bytes]:
        lines: list[bytes] = []
        for path in sorted(self.root.glob("agents/*/sessions/*")):
            if counted_path(self.root, path):
                lines += complete_lines(path.read_bytes())
        return lines

    def reset_to_disk(self) -> None:
        """The ledger was rebuilt: only what is on disk now can be known again."""
        self.history = set(self.on_disk())

    def expected(self) -> Totals:
        return expected(self.history)


@pytest.fixture
def writer(tmp_path: Path) -> Writer:
    root = tmp_path / "oc"
    root.mkdir()
    return Writer(root)


# -- the daemon ---------------------------------------------------------------------------------


class Daemon(DaemonProc):
    """One daemon configuration; every `restart` is a new process on the same state."""

    scan_interval: float = FAST["scan_interval"]

    def start(self, wait_ready: bool = True) -> Daemon:
        if hasattr(self, "_log") and not self._log.closed:
            self._log.close()
        super().start(wait_ready)
        return self

    def restart(self, wait_ready: bool = True) -> Daemon:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        return self.start(wait_ready)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def settle(self, scans: int = 2, timeout: float = WAIT) -> dict[str, Any]:
        """The document written after `scans` reconciliation scans completed from now on."""
        since = time.time()
        seen: set[str] = set()

        def done(doc: dict[str, Any]) -> bool:
            info = doc.get("daemon", {})
            last = info.get("last_scan")
            if info.get("pid") == self.proc_pid and last and iso_epoch(last) > since:
                seen.add(last)
            return len(seen) >= scans

        return self.wait_for(done, timeout, what=f"{scans} scans after {since}")

    def wait_totals(self, want: Totals, timeout: float = WAIT, stable: float = 0.0
                    ) -> dict[str, Any]:
        """Wait until the dashboard shows `want` (and still does `stable` seconds later)."""
        doc = self.wait_for(lambda d: Totals.of_doc(d).same(want), timeout,
                            what=f"totals {want}")
        if stable:
            time.sleep(stable)
            doc = self.doc() or doc
            assert Totals.of_doc(doc).same(want), self.mismatch(want, doc)
        return doc

    def mismatch(self, want: Totals, doc: dict[str, Any] | None) -> str:
        got = Totals.of_doc(doc) if doc else None
        return f"dashboard {got}\n   oracle {want}\n{self.logs_text()[-4000:]}"

    def assert_matches(self, writer: Writer) -> dict[str, Any]:
        """Settle, then the dashboard must equal the oracle exactly. Without periodic scans
        to wait for (events-only configurations), wait for the totals and check they hold."""
        want = writer.expected()
        if self.scan_interval > 2:
            doc = self.wait_totals(want, stable=0.3)
        else:
            doc = self.settle()
            assert Totals.of_doc(doc).same(want), self.mismatch(want, doc)
        assert self.alive(), self.logs_text()[-3000:]
        return doc

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.log_events() if name is None or e.get("event") == name]

    def wait_event(self, name: str, count: int = 1, timeout: float = WAIT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {name} in the log:\n{self.logs_text()[-3000:]}")

    def proc_status(self, field: str) -> int:
        """A kB figure from /proc/<pid>/status (VmRSS, VmHWM)."""
        text = Path(f"/proc/{self.proc_pid}/status").read_text()
        for line in text.splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def daemon(tmp_path: Path, make_config: Any) -> Iterator[DaemonFactory]:
    """`daemon(root, watcher="none", **daemon_keys)` starts `usaged run` on `root` with fast
    settings; killed at the end of the test. `env`, `preexec_fn`, `launch=True` (the fault
    injecting launcher) and `sections` (more config) pass through."""
    started: list[Daemon] = []

    def start(root: Path, watcher: str = "none", *, env: dict[str, str] | None = None,
              preexec_fn: Callable[[], None] | None = None, launch: bool = False,
              wait_ready: bool = True, sections: dict[str, Any] | None = None,
              **keys: Any) -> Daemon:
        cfg = make_config(openclaw=[root], daemon={**FAST, "watcher": watcher, **keys},
                          **(sections or {}))
        more = sections or {}
        out_dir = Path(more.get("paths", {}).get("output_dir") or tmp_path / "state" / "dashboard")
        name = more.get("output", {}).get("json_name", "usage.json")
        d = Daemon(cfg, out_dir / name, env, preexec_fn, [str(LAUNCHER)] if launch else None)
        d.scan_interval = float(keys.get("scan_interval", FAST["scan_interval"]))
        started.append(d)
        return d.start(wait_ready)

    yield start
    for d in started:
        d.cleanup()
