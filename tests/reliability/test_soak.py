"""faults.md item 15, the crash soak: SIGKILLs at random moments while a writer appends to
several files (some lines written in two pieces, with a pause between the pieces); some starts
also arm a random failpoint so the daemon kills itself mid-commit. Afterwards the dashboard
equals the oracle exactly. CI runs 8 kills; USAGED_SOAK_SCALE=full runs 20 (and slower
writers across more files).
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from .conftest import DaemonFactory, Writer, size_marks, sized

pytestmark = [pytest.mark.e2e, *size_marks(120, 900)]

FAILPOINTS = ("after_read_before_commit", "ledger_before_commit", "after_commit",
              "before_output_rename")


def test_random_sigkills_while_writing_lose_and_double_nothing(
        writer: Writer, daemon: DaemonFactory) -> None:
    kills = sized(8, 20)
    files = [writer.session(f"s{i}.jsonl", agent=f"a{i % 3}") for i in range(sized(4, 8))]
    d = daemon(writer.root, "native", scan_interval=0.5)
    stop = threading.Event()
    written = {"lines": 0, "split": 0}

    def write() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            path = rng.choice(files)
            if rng.random() < 0.3:
                writer.append_partial(path)
                time.sleep(rng.uniform(0.001, 0.08))  # a kill may land between the pieces
                writer.complete(path)
                written["split"] += 1
            else:
                writer.append(path, *writer.lines(rng.choice((1, 1, 1, 3))))
            written["lines"] += 1
            time.sleep(rng.uniform(0.002, 0.02))

    thread = threading.Thread(target=write)
    thread.start()
    rng = random.Random(11)
    self_kills = 0
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, sized(1.0, 3.0)))
            if not d.alive():
                self_kills += 1  # a failpoint fired
            d.kill()
            d.env.pop("USAGED_FAILPOINTS", None)
            if rng.random() < 0.3:
                d.env["USAGED_FAILPOINTS"] = f"{rng.choice(FAILPOINTS)}:{rng.randrange(1, 8)}"
            d.start(wait_ready=False)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    if not d.alive():
        self_kills += 1
    d.env.pop("USAGED_FAILPOINTS", None)
    d.restart()
    doc = d.assert_matches(writer)
    calls = doc["windows"]["all_time"]["calls"]
    assert calls == len(writer.history) > 100
    print(f"\ncrash soak: {kills} SIGKILLs ({self_kills} by failpoints), "
          f"{written['lines']} writes ({written['split']} in two pieces), {calls} lines counted "
          "exactly once")
