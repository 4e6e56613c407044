"""The model-based test: hypothesis drives random sequences of every mutation a transcript can
suffer (append, half a line, its completion, truncation, atomic replacement by a superset or a
different body, rename, delete, recreate at the same path) plus SIGKILL + restart and a
corrupt state database, against ONE running daemon (watcher = "none": the periodic scan must
see everything). After each example settles: dashboard == oracle, and the daemon is alive.

The model of the oracle (Writer.history): every complete line ever seen in a counted file,
since spend is never taken back; a destructive step first lets the daemon see what it is about
to destroy (otherwise the truth would depend on timing); a corrupt state resets the model to
the lines on disk, because a rebuilt ledger can only see those.

Examples share the daemon (each writes into its own agent folder), so 100 of them fit in CI; a
failing example resets the harness so that hypothesis shrinks on a fresh daemon.
CI: 100 examples of at most 6 steps. USAGED_SOAK_SCALE=full: 1000 examples of at most 20.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import tomli_w
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .conftest import FAST, Daemon, Writer, size_marks, sized
from .oracle import Totals

pytestmark = [pytest.mark.e2e, *size_marks(240, 7200)]

EXAMPLES = sized(100, 1000)
STEPS = sized(8, 25)
SLOTS = 3
CORRUPTIONS = ("zero_bytes", "random_bytes", "newer_schema", "torn_pages")


class Harness:
    """One daemon and one writer for many examples; `reset` starts over on fresh folders."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.runs = 0
        self.examples = 0
        self.restarts = 0
        self.corruptions = 0
        self.steps = 0
        self.lines: set[bytes] = set()  # every line written in any run (for the figures)
        self.waited = 0.0  # seconds spent waiting for the daemon to show the oracle
        self.clean = True
        self.daemon: Daemon | None = None
        self.reset()

    def reset(self) -> None:
        if self.daemon is not None:
            self.daemon.cleanup()
        self.runs += 1
        run = self.base / f"run{self.runs}"
        root = run / "oc"
        root.mkdir(parents=True)
        config = run / "usaged.toml"
        config.write_text(tomli_w.dumps({
            "timezone": "UTC", "paths": {"state_dir": str(run / "state")},
            "sources": {"openclaw": {"enabled": True, "roots": [str(root)]},
                        "claude_code": {"enabled": False}},
            "daemon": {**FAST, "watcher": "none", "scan_interval": 0.05}}))
        self.writer = Writer(root, seed=self.runs)
        self.daemon = Daemon(config, run / "state" / "dashboard" / "usage.json")
        self.daemon.poll = 0.01
        self.daemon.start()
        self.clean = True

    @property
    def d(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    @property
    def db(self) -> Path:
        return self.d.config.parent / "state" / "usaged.db"

    def seen(self) -> dict[str, Any]:
        """Wait until the daemon shows everything written so far."""
        started = time.monotonic()
        self.lines |= self.writer.history
        try:
            return self.d.wait_totals(self.writer.expected())
        finally:
            self.waited += time.monotonic() - started


class DaemonModel(RuleBasedStateMachine):
    h: ClassVar[Harness]

    def __init__(self) -> None:
        super().__init__()
        h = self.h
        if not h.clean:  # the last example failed: shrink on a fresh daemon
            h.reset()
        h.clean = False
        previous = h.writer.root / "agents" / f"ex{h.examples}"
        if previous.exists():  # seen by the daemon (teardown): its usage stays counted, and
            shutil.rmtree(previous)  # the scans stay small however many examples run
        h.examples += 1
        self.w = h.writer
        self.agent = f"ex{h.examples}"
        self.slots = [self.w.session(f"f{i}.jsonl", agent=self.agent) for i in range(SLOTS)]
        self.unseen: set[Path] = set()  # files written since the daemon last showed the oracle
        self.kills = self.corruptions = 1  # none allowed until start_with_some_lines says

    # helpers

    def _before_destroying(self, *paths: Path) -> None:
        if self.unseen & set(paths):
            self.h.seen()
            self.unseen.clear()

    def _wrote(self, path: Path) -> None:
        self.unseen.add(path)
        self.h.steps += 1

    # rules

    @initialize(sizes=st.lists(st.integers(0, 3), min_size=SLOTS, max_size=SLOTS),
                may_kill=st.integers(0, 2), may_corrupt=st.integers(0, 3))
    def start_with_some_lines(self, sizes: list[int], may_kill: int, may_corrupt: int) -> None:
        # at most one kill (in a third of the examples) and one corruption (in a quarter): a
        # restart costs half a second, and most steps should be mutations (the soak kills a lot)
        self.kills, self.corruptions = int(may_kill != 0), int(may_corrupt != 0)
        for path, n in zip(self.slots, sizes, strict=True):
            if n:
                self.w.append(path, *self.w.lines(n))
                self._wrote(path)

    @rule(slot=st.integers(0, SLOTS - 1), n=st.integers(1, 3))
    def append(self, slot: int, n: int) -> None:
        path = self.slots[slot]
        self.w.complete(path)
        self.w.append(path, *self.w.lines(n))
        self._wrote(path)

    @rule(slot=st.integers(0, SLOTS - 1), cut=st.floats(0.01, 0.99))
    def append_half_a_line(self, slot: int, cut: float) -> None:
        path = self.slots[slot]
        line = self.w.line()
        self.w.append_partial(path, line, max(1, int(len(line) * cut)))
        self._wrote(path)

    @rule(slot=st.integers(0, SLOTS - 1))
    def complete_the_line(self, slot: int) -> None:
        self.w.complete(self.slots[slot])
        self._wrote(self.slots[slot])

    @rule(slot=st.integers(0, SLOTS - 1), keep=st.sampled_from([0.0, 0.0, 0.5, 0.9]))
    def truncate(self, slot: int, keep: float) -> None:
        path = self.slots[slot]
        if path.exists():
            self._before_destroying(path)
            self.w.truncate(path, int(path.stat().st_size * keep))  # maybe mid-line
            self._wrote(path)

    @rule(slot=st.integers(0, SLOTS - 1), n=st.integers(1, 3))
    def replace_with_a_superset(self, slot: int, n: int) -> None:
        path = self.slots[slot]
        if path.exists():
            self.w.replace_superset(path, *self.w.lines(n))
            self._wrote(path)

    @rule(slot=st.integers(0, SLOTS - 1), n=st.integers(0, 3), keep_one=st.booleans())
    def replace_with_a_different_body(self, slot: int, n: int, keep_one: bool) -> None:
        path = self.slots[slot]
        if path.exists():
            self._before_destroying(path)
            old = path.read_bytes().split(b"\n")
            kept = [old[0] + b"\n"] if keep_one and len(old) > 1 else []
            self.w.replace(path, b"".join(kept + self.w.lines(n)))
            self._wrote(path)

    @rule(src=st.integers(0, SLOTS - 1), dst=st.integers(0, SLOTS - 1), archive=st.booleans())
    def rename(self, src: int, dst: int, archive: bool) -> None:
        a = self.slots[src]
        if not a.exists():
            return
        if archive:
            self.w.rename(a, a.with_name(f"{a.name}.deleted.{self.h.steps}"))
        elif src != dst:
            b = self.slots[dst]
            if b.exists():
                self._before_destroying(b)  # renamed over: b's old body is gone
            self.w.rename(a, b)
            self._wrote(b)

    @rule(slot=st.integers(0, SLOTS - 1))
    def delete(self, slot: int) -> None:
        path = self.slots[slot]
        if path.exists():
            self._before_destroying(path)
            self.w.delete(path)

    @rule(slot=st.integers(0, SLOTS - 1), n=st.integers(0, 4), copy=st.booleans())
    def recreate_at_the_same_path(self, slot: int, n: int, copy: bool) -> None:
        path = self.slots[slot]
        if path.exists():
            self._before_destroying(path)
            first = path.read_bytes().split(b"\n")[0] + b"\n"
            self.w.recreate(path, *([first] if copy else []), *self.w.lines(n))
            self._wrote(path)

    @precondition(lambda self: self.kills == 0)
    @rule()
    def sigkill_and_restart(self) -> None:
        self.kills = 1
        self.h.restarts += 1
        self.h.d.restart(wait_ready=False)

    @precondition(lambda self: self.corruptions == 0)
    @rule(kind=st.sampled_from(CORRUPTIONS))
    def corrupt_the_state(self, kind: str) -> None:
        self.corruptions = 1
        h = self.h
        h.corruptions += 1
        h.d.kill()
        corrupt(h.db, kind)
        h.d.start(wait_ready=False)
        self.w.reset_to_disk()  # a rebuilt ledger can only see what is on disk now
        self.unseen.update(self.slots)  # and has yet to read all of it again

    @invariant()
    def daemon_is_alive(self) -> None:
        d = self.h.d
        assert d.alive(), d.logs_text()[-3000:]

    def teardown(self) -> None:
        h = self.h
        doc = h.seen()  # at once when nothing changed
        want = self.w.expected()
        assert Totals.of_doc(doc).same(want), h.d.mismatch(want, doc)
        assert h.d.alive()
        h.clean = True


def corrupt(db: Path, kind: str) -> None:
    """The state database after a crash, damaged as `kind`. A damaged main file next to a hot
    -wal is masked by it (SQLite reads the newest pages from the -wal, and the ledger is sound),
    so the model damages the state folder as a whole: the -wal and -shm go too. The result is
    then always a ledger that must be rebuilt, never an older snapshot taken for the truth."""
    if not db.exists():
        return  # the daemon was killed before it created one
    if kind != "newer_schema":
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    if kind == "zero_bytes":
        os.truncate(db, 0)
    elif kind == "random_bytes":
        db.write_bytes(os.urandom(db.stat().st_size or 4096))
    elif kind == "newer_schema":
        conn = sqlite3.connect(db)
        try:
            conn.execute("PRAGMA user_version = 99")
            conn.commit()
        except sqlite3.DatabaseError:
            pass  # already damaged by the previous step: as good
        finally:
            conn.close()
    else:  # torn pages behind a valid header
        with db.open("r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size > 4096:
                fh.seek(4096)
                fh.write(os.urandom(size - 4096))
            else:
                fh.seek(100)
                fh.write(os.urandom(4096 - 100))


def test_any_sequence_of_mutations_kills_and_corruptions_keeps_dashboard_equal_to_oracle(
        tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    DaemonModel.h = harness
    try:
        run_state_machine_as_test(DaemonModel, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            suppress_health_check=list(HealthCheck), database=None))
        doc = harness.d.settle()  # and once more, rigorously: two full scans later
        want = harness.writer.expected()
        assert Totals.of_doc(doc).same(want), harness.d.mismatch(want, doc)
        harness.d.send(signal.SIGTERM)
        assert harness.d.proc is not None and harness.d.proc.wait(timeout=10) == 0
    finally:
        harness.d.cleanup()
    print(f"\nmodel: {harness.examples} examples, {harness.steps} writes, "
          f"{harness.restarts} SIGKILL restarts, {harness.corruptions} corrupt states, "
          f"{harness.runs} daemon runs, {len(harness.lines)} lines, "
          f"{harness.waited:.1f} s waiting for the daemon")
