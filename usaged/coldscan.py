"""Cold scan: when there is a lot to read (a first scan, a rebuild), parse files in worker
processes and commit here.

The parent plans every file as the serial ingest does (cursor, rename, truncation) and hands the
plain reads to the workers; a worker opens the file again, checks it is still the planned one
(device and inode), reads it from the planned offset with `batch.read_batches` and sends back
its batches as plain tuples. The parent takes the results in file order and commits them through
`Ingestor.enqueue`: the same cursors, the same transactions, the same dedup rules, in the same
order as a serial scan. A file a worker could not read is read again here, serially, so its error
is reported as usual.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usaged.batch import Batch, read_batches
from usaged.config import PriceOverride
from usaged.pricing import Pricer, make_pricer
from usaged.sources import FileLabel, Source, claude_code, openclaw
from usaged.tail import identity_at, open_regular
from usaged.values import FileIdentity

if TYPE_CHECKING:
    from usaged.pipeline import FileOutcome, Ingestor, ReadPlan, Root

MIN_BYTES = 64 << 20  # below this much to read, starting workers costs more than it saves
MAX_WORKERS = 4
WINDOW = 4  # files in flight per worker: work queued while the parent commits, memory bounded

Marks = dict[str, tuple[int, int, int, int, int] | None]
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class Job:
    """One file for a worker: read `path` from `begin` if it is still (dev, ino)."""

    path: str
    source: str
    label: FileLabel
    begin: int
    dev: int
    ino: int
    chunk: int
    max_line: int


@dataclass(frozen=True, slots=True)
class FileResult:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    batches: list[tuple[Batch, FileIdentity]]


def workers_for(todo: list[tuple[Root, Path]], marks: Marks) -> int:
    """How many parse workers catching up these files deserves: 0 (read them here) unless
    there are at least MIN_BYTES to read and two CPUs to read them with."""
    workers = min(_cpus(), MAX_WORKERS, len(todo))
    if workers < 2:
        return 0
    to_read = 0
    for _, path in todo:
        key = str(path)
        try:
            size = os.stat(key).st_size
        except OSError:
            continue
        mark = marks.get(key)
        to_read += size - mark[4] if mark and size >= mark[4] else size
        if to_read >= MIN_BYTES:
            return workers
    return 0


def _cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ingest_all(ingestor: Ingestor, todo: list[tuple[Root, Path]], workers: int,
               progress: Progress | None) -> list[FileOutcome]:
    """Catch up `todo` with `workers` parse processes; outcomes as `Ingestor.ingest` gives."""
    outcomes: list[FileOutcome] = []
    # fork is cheap and shares the parent's pages, but forking a process with threads (the
    # daemon's watcher) is unsafe: spawn fresh interpreters then
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    chunk = int(ingestor.config.get("daemon.read_chunk"))
    max_line = int(ingestor.config.get("daemon.max_line_bytes"))
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                             initargs=(ingestor.config.prices,)) as pool:
        try:
            plans = _plans(ingestor, todo, outcomes, progress)
            for plan, result in _in_order(pool, plans, chunk, max_line, workers * WINDOW):
                if result is None:
                    outcomes.append(ingestor.ingest(plan.root, plan.path))
                else:
                    outcomes.append(_enqueue(ingestor, plan, result))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return outcomes


def _plans(ingestor: Ingestor, todo: list[tuple[Root, Path]], outcomes: list[FileOutcome],
           progress: Progress | None) -> Iterator[ReadPlan]:
    from usaged.pipeline import FileOutcome

    for i, (root, path) in enumerate(todo, 1):
        if progress:
            progress(i, len(todo), str(path))
        plan = ingestor.plan(root, path)
        if isinstance(plan, FileOutcome):
            outcomes.append(plan)
            continue
        os.close(plan.file.fd)  # the worker opens it again (and checks it is the same file)
        yield plan


def _in_order(pool: ProcessPoolExecutor, plans: Iterator[ReadPlan], chunk: int, max_line: int,
              window: int) -> Iterator[tuple[ReadPlan, FileResult | None]]:
    """Each plan with its worker's result, in plan order, at most `window` in flight."""
    flight: deque[tuple[ReadPlan, Future[FileResult | None]]] = deque()
    for plan in plans:
        f = plan.file
        job = Job(plan.key, plan.root.source.name, plan.root.source.label(plan.path,
                                                                           plan.root.path),
                  plan.begin, f.dev, f.ino, chunk, max_line)
        flight.append((plan, pool.submit(_read_file, job)))
        if len(flight) >= window:
            done, future = flight.popleft()
            yield done, future.result()
    while flight:
        done, future = flight.popleft()
        yield done, future.result()


def _enqueue(ingestor: Ingestor, plan: ReadPlan, result: FileResult) -> FileOutcome:
    from usaged.pipeline import FileOutcome

    out = FileOutcome(read=True, start=plan.start)
    reset, end = plan.reset, plan.begin
    for batch, identity in result.batches:
        ingestor.enqueue(plan, identity, result.size, result.mtime_ns, batch, reset, out)
        reset, end = False, batch.end
    out.bytes = end - plan.begin
    return out


# -- in the worker processes ---------------------------------------------------------------

_SOURCES: dict[str, Source] = {"claude_code": claude_code.SOURCE, "openclaw": openclaw.SOURCE}
_WORKER: dict[str, Any] = {}  # this worker's pricer, set once by _start_worker


def _start_worker(prices: tuple[PriceOverride, ...]) -> None:
    _WORKER["pricer"] = make_pricer(prices)


def _read_file(job: Job) -> FileResult | None:
    """Read one planned file; None when it cannot be read or is no longer the planned file."""
    source = _SOURCES[job.source]
    pricer: Pricer = _WORKER["pricer"]
    label = job.label
    try:
        f = open_regular(job.path)
    except OSError:
        return None
    try:
        if (f.dev, f.ino) != (job.dev, job.ino):
            return None
        batches = [(b, identity_at(f.fd, f.dev, f.ino, b.end)) for b in read_batches(
            f.fd, job.begin, job.chunk, job.max_line,
            lambda line: source.parse_line(line, label), pricer.price_of)]
        return FileResult(f.dev, f.ino, f.size, f.mtime_ns, batches)
    except OSError:
        return None
    finally:
        os.close(f.fd)
