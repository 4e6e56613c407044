"""Debounce with a fake clock: bursts coalesce, streams still flush, writes keep their distance."""

from __future__ import annotations

from usaged.debounce import Debouncer


def simulate(d: Debouncer, changes: list[float], until: float, step: float = 0.01
             ) -> list[float]:
    """Drive the debouncer like the daemon loop does; return the times it wrote."""
    writes: list[float] = []
    pending = sorted(changes)
    t = 0.0
    while t <= until:
        while pending and pending[0] <= t:
            d.change(pending.pop(0))
        if d.due(t):
            d.wrote(t)
            writes.append(round(t, 2))
        t = round(t + step, 2)
    return writes


def test_a_burst_gives_one_write_after_the_quiet_period() -> None:
    d = Debouncer(quiet=1.0, max_wait=5.0, min_interval=0.5)
    burst = [round(i * 0.05, 2) for i in range(20)]  # 20 changes within a second
    assert simulate(d, burst, until=10) == [1.95]


def test_a_constant_stream_still_writes_every_max_wait() -> None:
    d = Debouncer(quiet=1.0, max_wait=5.0, min_interval=0.5)
    stream = [round(i * 0.2, 2) for i in range(100)]  # never quiet for 20 s
    writes = simulate(d, stream, until=20)
    # each write comes max_wait after the first change that followed the previous write
    assert writes == [5.0, 10.2, 15.4]


def test_never_two_writes_closer_than_the_minimum_interval() -> None:
    d = Debouncer(quiet=0.0, max_wait=0.1, min_interval=2.0)
    writes = simulate(d, [i * 0.3 for i in range(30)], until=12)
    assert len(writes) >= 3
    assert all(b - a >= 2.0 - 1e-9 for a, b in zip(writes, writes[1:], strict=False))


def test_nothing_pending_means_no_write() -> None:
    d = Debouncer(quiet=1.0, max_wait=5.0, min_interval=0.5)
    assert d.due_at() is None and not d.due(100.0)


def test_a_failed_write_stays_pending_and_is_retried() -> None:
    d = Debouncer(quiet=1.0, max_wait=5.0, min_interval=0.5)
    d.change(0.0)
    assert d.due(1.0)
    d.failed(1.0, retry_in=2.0)
    assert d.pending and not d.due(2.9)
    assert d.due(3.0)
