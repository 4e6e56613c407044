"""Pipeline: the stages wired together, shared by `usaged scan`, the daemon and the tests.

detect (sources) -> tail -> parse -> price -> ledger (one transaction per batch)
ledger snapshot -> metrics -> render -> atomic write
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from usaged import failpoints, metrics, render
from usaged.config import Config
from usaged.errors import StateError
from usaged.fsio import StateLock, atomic_write
from usaged.ledger import UNDATED_Q, EventValues, Ledger
from usaged.pricing import Pricer, make_pricer
from usaged.sources import Source, enabled_sources, is_regular_file
from usaged.tail import NotRegular, OpenFile, Start, identity_at, open_regular, plan_start
from usaged.values import FileCursor, FileIdentity, ScanCounters, Skip

if TYPE_CHECKING:  # imported where used: `usaged status` needs neither
    from usaged.batch import Batch
    from usaged.coldscan import Marks

log = structlog.get_logger("usaged")
T = TypeVar("T")

GROUP_ROWS = 10_000  # events per transaction at most while catching up many files
GROUP_BATCHES = 2_000  # file batches (cursors) per transaction at most
REREAD = frozenset({Start.TRUNCATED, Start.REPLACED, Start.REWRITTEN})
DB_NAME = "usaged.db"
LOCK_NAME = "usaged.lock"
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class Root:
    source: Source
    path: Path


@dataclass(slots=True)
class FileOutcome:
    read: bool = False
    bytes: int = 0
    lines: int = 0
    new: int = 0
    dup: int = 0
    bad: int = 0
    start: Start | None = None
    error: str | None = None
    gone: bool = False


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What to read of one open file: from `begin`; its bad-line count starts over on `reset`."""

    root: Root
    path: Path
    key: str
    file: OpenFile
    start: Start
    begin: int
    reset: bool


@dataclass(slots=True)
class _Pending:
    """A batch read and waiting for its transaction (see Ingestor._flush)."""

    cursor: FileCursor
    rows: list[EventValues]
    reset: bool
    out: FileOutcome


@dataclass
class Ingestor:
    """Brings the ledger up to date with the transcript files; the only write path."""

    config: Config
    ledger: Ledger
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # asked between files: a scan stops early when it says so (the daemon is stopping);
    # what was committed stays exact, the rest is read by the next scan
    should_stop: Callable[[], bool] = lambda: False
    pricer: Pricer = field(init=False)
    sources: list[Source] = field(init=False)

    def __post_init__(self) -> None:
        self.pricer = make_pricer(self.config.prices)
        self.sources = enabled_sources(self.config)
        self.priced = False  # repriced for this config yet (a ledger write: done by a scan)
        # never read our own outputs, wherever they are written (no feedback loop)
        self.outputs = frozenset(os.path.realpath(p) for p in own_outputs(self.config))
        self._pending: list[_Pending] = []
        self._pending_rows = 0

    # -- detect ----------------------------------------------------------------------------

    def roots(self) -> list[Root]:
        return [Root(src, p) for src in self.sources for p in src.roots(self.config, self.env)]

    def discover(self, folder_errors: dict[str, tuple[Root, OSError]] | None = None
                 ) -> Iterator[tuple[Root, Path]]:
        """Every transcript to count; folders that cannot be listed go to `folder_errors`."""
        seen: set[str] = set(self.outputs)
        for root in self.roots():
            def on_error(folder: Path, exc: OSError, root: Root = root) -> None:
                if folder_errors is not None:
                    folder_errors.setdefault(str(folder), (root, exc))

            for path in root.source.discover(root.path, on_error):
                key = str(path)
                if key not in seen:
                    seen.add(key)
                    yield root, path

    def owner(self, path: Path) -> Root | None:
        """The root and source a path (from a file-system event) belongs to, if any."""
        if str(path) in self.outputs:
            return None
        for root in self.roots():
            if root.source.wants(path, root.path):
                return root
        return None

    # -- scan ------------------------------------------------------------------------------

    def scan_all(self, progress: Progress | None = None) -> ScanCounters:
        """Reconcile every transcript on disk with the ledger (the periodic 'truth' pass)."""
        self._reprice_if_changed()
        counters = ScanCounters()
        folder_errors: dict[str, tuple[Root, OSError]] = {}
        found = list(self.discover(folder_errors))
        marks = self.ledger.stat_marks()
        todo = Until([(root, path) for root, path in found if not _unchanged(str(path), marks)],
                     self.should_stop)
        try:
            outcomes = self._ingest_all(todo, marks, progress)
            self._flush()
        finally:
            self._pending.clear()
        if todo.left:
            log.info("scan_interrupted", files_left=todo.left, reason="stopping")
        for outcome in outcomes:
            self._count(counters, outcome)
        on_disk = {str(p) for _, p in found}
        vanished = [p for p in marks if p not in on_disk and not os.path.exists(p)]
        if vanished:
            self.ledger.mark_gone(vanished)
            log.info("files_gone", count=len(vanished), kept="usage already counted stays")
        self._folder_problems(folder_errors, counters)
        counters.files_seen = len(found)
        return counters

    def _folder_problems(self, errors: dict[str, tuple[Root, OSError]],
                         counters: ScanCounters) -> None:
        """Report folders that cannot be listed (once per path, like files); forget those that
        can be listed again."""
        for key, (root, exc) in errors.items():
            counters.unreadable.append(self._unreadable(root, key, exc).error or key)
        for key, _ in self.ledger.problems(limit=100_000):
            if key not in errors and os.path.isdir(key):
                self.ledger.clear_error(key)
                log.info("folder_readable", path=key)

    def ingest_paths(self, paths: set[str]) -> ScanCounters:
        """Catch up the given paths (from file-system events)."""
        self._reprice_if_changed()
        counters = ScanCounters()
        outcomes: list[FileOutcome] = []
        try:
            for raw in sorted(paths):
                path = Path(raw)
                root = self.owner(path)
                if root is None:
                    continue
                if not os.path.lexists(path):
                    if self.ledger.cursor(raw) is not None:
                        self.ledger.mark_gone([raw])
                    continue
                if not is_regular_file(path):
                    continue  # a folder, FIFO, dangling or looping link: the scan skips it too
                counters.files_seen += 1
                outcomes.append(self.ingest(root, path))
            self._flush()
        finally:
            self._pending.clear()
        for outcome in outcomes:
            self._count(counters, outcome)
        return counters

    def _ingest_all(self, todo: list[tuple[Root, Path]], marks: Marks,
                    progress: Progress | None) -> list[FileOutcome]:
        """Catch up these files: in parse worker processes when there is a lot to read (a cold
        scan), else one after the other here. Commits happen in file order either way."""
        from usaged import coldscan

        workers = coldscan.workers_for(todo, marks)
        if workers:
            return coldscan.ingest_all(self, todo, workers, progress)
        outcomes = []
        for i, (root, path) in enumerate(todo, 1):
            if progress:
                progress(i, len(todo), str(path))
            outcomes.append(self.ingest(root, path))
        return outcomes

    @staticmethod
    def _count(c: ScanCounters, o: FileOutcome) -> None:
        c.files_read += int(o.read)
        c.bytes_read += o.bytes
        c.lines += o.lines
        c.events_new += o.new
        c.events_dup += o.dup
        c.bad_lines += o.bad
        c.truncations += int(o.start in REREAD)
        if o.error:
            c.unreadable.append(o.error)

    # -- one file --------------------------------------------------------------------------

    def ingest(self, root: Root, path: Path) -> FileOutcome:
        plan = self.plan(root, path)
        if isinstance(plan, FileOutcome):
            return plan
        try:
            return self._read(plan)
        except OSError as exc:
            return self._unreadable(root, plan.key, exc)
        finally:
            os.close(plan.file.fd)

    def plan(self, root: Root, path: Path) -> ReadPlan | FileOutcome:
        """Open a file and decide where reading begins, or the outcome when there is nothing to
        read. The caller closes `plan.file.fd`."""
        key = str(path)
        cursor = self.ledger.cursor(key)
        try:
            f = open_regular(key)
        except FileNotFoundError:
            return FileOutcome(gone=True)
        except NotRegular:
            return FileOutcome()
        except OSError as exc:
            return self._unreadable(root, key, exc)
        self._readable(key)
        try:
            start = plan_start(f, cursor)
            if start is Start.UNCHANGED:
                os.close(f.fd)
                return FileOutcome()
            # only a re-read from 0 starts the file's bad-line count over; an append adds
            begin, reset = 0, start in REREAD
            if start is Start.NEW:
                moved = self.ledger.moved_from(f.dev, f.ino, key)
                if moved is not None and f.size >= moved.offset and identity_at(
                        f.fd, f.dev, f.ino, moved.offset) == moved.identity:
                    begin = moved.offset
                    self.ledger.mark_gone([moved.path])
                    log.info("file_renamed", path=key, old_path=moved.path, offset=begin)
            elif start is Start.APPEND:
                assert cursor is not None
                begin = cursor.offset
            else:
                log.info(f"file_{start.value}", path=key, old_offset=cursor and cursor.offset,
                         size=f.size)
        except OSError as exc:
            os.close(f.fd)
            return self._unreadable(root, key, exc)
        return ReadPlan(root, path, key, f, start, begin, reset)

    def _read(self, plan: ReadPlan) -> FileOutcome:
        from usaged.batch import read_batches

        source, f = plan.root.source, plan.file
        label = source.label(plan.path, plan.root.path)
        out = FileOutcome(read=True, start=plan.start)
        reset, end = plan.reset, plan.begin
        for batch in read_batches(f.fd, plan.begin, int(self.config.get("daemon.read_chunk")),
                                  int(self.config.get("daemon.max_line_bytes")),
                                  lambda line: source.parse_line(line, label),
                                  self.pricer.price_of):
            self.enqueue(plan, identity_at(f.fd, f.dev, f.ino, batch.end), f.size, f.mtime_ns,
                         batch, reset, out)
            reset, end = False, batch.end
        out.bytes = end - plan.begin
        return out

    def enqueue(self, plan: ReadPlan, identity: FileIdentity, size: int, mtime_ns: int,
                batch: Batch, reset: bool, out: FileOutcome) -> None:
        """A batch read: its events and the file's new cursor go into the next transaction."""
        for offset, length, reason in batch.bad:
            if reason is Skip.TOO_LONG:
                log.warning("line_too_long", path=plan.key, offset=offset, bytes=length,
                            limit=int(self.config.get("daemon.max_line_bytes")))
            else:
                log.debug("bad_line", path=plan.key, offset=offset, reason=reason.value)
        out.lines += batch.lines
        cursor = FileCursor(path=plan.key, source=plan.root.source.name, identity=identity,
                            offset=batch.end, size=size, mtime_ns=mtime_ns,
                            bad_lines=len(batch.bad))
        failpoints.hit("after_read_before_commit")
        self._pending.append(_Pending(cursor, batch.rows, reset, out))
        self._pending_rows += len(batch.rows)
        if self._pending_rows >= GROUP_ROWS or len(self._pending) >= GROUP_BATCHES:
            self._flush()

    def _flush(self) -> None:
        """Commit the batches read so far, with their cursors, in ONE transaction."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        results = self.ledger.commit_files([(p.cursor, p.rows, p.reset) for p in pending])
        failpoints.hit("after_commit")
        for p, result in zip(pending, results, strict=True):
            p.out.new += result.new + result.upgraded
            p.out.dup += result.dup
            p.out.bad += p.cursor.bad_lines
            if p.cursor.bad_lines:
                log.warning("bad_lines", path=p.cursor.path, count=p.cursor.bad_lines,
                            offset=p.cursor.offset)

    def _unreadable(self, root: Root, key: str, exc: OSError) -> FileOutcome:
        """Record why `key` cannot be read: one warning per path and reason, not per scan."""
        reason = exc.strerror or str(exc)
        known = self.ledger.problems_for(key)
        if known != reason:
            log.warning("file_unreadable", path=key, reason=reason)
            self.ledger.set_file_error(key, root.source.name, reason)
        return FileOutcome(error=f"{key}: {reason}")

    def _readable(self, key: str) -> None:
        """`key` opened fine: if it was a problem, it is no longer (even when unchanged)."""
        if self.ledger.problems_for(key) is not None:
            self.ledger.clear_error(key)
            log.info("file_readable", path=key)

    # -- pricing changes -------------------------------------------------------------------

    def _reprice_if_changed(self) -> None:
        """Price again what the config or the shipped table may price differently now; once
        per Ingestor, before it commits anything (retried by the next scan if it fails)."""
        if self.priced:
            return
        stamp = pricing_stamp(self.config, self.pricer)
        if self.ledger.meta().get("pricing") == stamp:
            self.priced = True
            return
        changed = self.ledger.reprice(self.pricer)
        self.ledger.set_meta({"pricing": stamp,
                              "price_table_date": self.pricer.table.effective_date})
        self.priced = True
        if changed:
            log.info("repriced", events=changed)


def _unchanged(path: str, marks: dict[str, tuple[int, int, int, int, int] | None]) -> bool:
    """The stat sweep: same file, same size and mtime as committed, read to its end (a file
    with an error is always looked at again)."""
    mark = marks.get(path)
    if mark is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False  # ingest reports it
    dev, ino, size, mtime_ns, offset = mark
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (dev, ino, size, mtime_ns) \
        and size == offset


class Until(list[T]):
    """The files of a scan, handed out one by one until `stop()` says to stop; `left` counts
    the ones not handed out."""

    def __init__(self, items: list[T], stop: Callable[[], bool]) -> None:
        super().__init__(items)
        self.stop, self.left = stop, 0

    def __iter__(self) -> Iterator[T]:
        for n, item in enumerate(super().__iter__()):
            if self.stop():
                self.left = len(self) - n
                return
            yield item


def pricing_stamp(config: Config, pricer: Pricer) -> str:
    """Changes whenever a price could: the config's [[prices]] or the shipped table's content."""
    text = repr((sorted((o.provider, o.model, sorted(o.rates.items())) for o in config.prices),
                 repr(pricer.table)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- outputs -------------------------------------------------------------------------------


def settings_from(config: Config) -> metrics.Settings:
    since = config.get("balance.since")
    return metrics.Settings(
        zone=config.zone,
        top_sessions=int(config.get("output.top_sessions")),
        monthly_usd=config.get("budget.monthly_usd"),
        weekly_tokens=config.get("capacity.weekly_tokens"),
        burn_window_hours=float(config.get("capacity.burn_window_hours")),
        credit_usd=config.get("balance.credit_usd"),
        balance_since=dt.date.fromisoformat(since) if since else None,
        warn_ratio=float(config.get("alerts.warn_ratio")),
        critical_ratio=float(config.get("alerts.critical_ratio")),
        balance_low_usd=float(config.get("alerts.balance_low_usd")),
        session_review_tokens=float(config.get("alerts.session_review_tokens")),
    )


@dataclass
class FiguresCache:
    """The daemon's settled figures (metrics.Settled): rebuilt when the settled range moves
    (a new month) or a commit changed one of its quarter hours (ledger.take_lowest_touched), so
    a write reads and adds up only the recent buckets. Valid for one ledger, written only by
    this process (the daemon holds the state lock)."""

    settled: metrics.Settled | None = None
    ledger: Ledger | None = None

    def get(self, ledger: Ledger, settings: metrics.Settings, now: dt.datetime
            ) -> metrics.Settled:
        until_q = metrics.settled_until(settings, now)
        touched = ledger.take_lowest_touched()
        old = self.settled
        if (old is None or ledger is not self.ledger or old.until_q != until_q
                or old.zone != settings.zone.key
                or old.balance_from != metrics.balance_start_ts(settings)
                or (touched is not None and touched < old.until_q)):
            self.settled = metrics.settle(ledger.buckets_before(until_q), settings, until_q)
            self.ledger = ledger
        assert self.settled is not None
        return self.settled


def build_document(config: Config, ledger: Ledger, now: dt.datetime,
                   daemon: dict[str, Any], last_scan_age: float | None = None,
                   cache: FiguresCache | None = None) -> dict[str, Any]:
    settings = settings_from(config)
    ts = now.timestamp()
    settled = None if cache is None else cache.get(ledger, settings, now)
    snap = ledger.snapshot(ts, metrics.cut_points(settings, ts), settings.top_sessions,
                           settings.session_review_tokens,
                           UNDATED_Q if settled is None else settled.until_q)
    stats = ledger.stats()
    health = metrics.Health(files=stats["files"], events=stats["events"],
                            bad_lines=stats["bad_lines"], unreadable=stats["unreadable"],
                            last_scan_age=last_scan_age,
                            scan_interval=float(config.get("daemon.scan_interval")),
                            problems=tuple(ledger.problems()))
    figures = metrics.compute(snap, settings, health, now, settled)
    generated = dt.datetime.now(dt.UTC).astimezone(settings.zone)
    daemon = {**daemon, "files": stats["files"], "events": stats["events"],
              "bad_lines": stats["bad_lines"], "unreadable_files": stats["unreadable"],
              "price_table": ledger.meta().get("price_table_date")}
    return render.document(figures, generated, daemon)


def own_outputs(config: Config) -> list[Path]:
    """Every file the daemon writes from the ledger (outputs, Prometheus textfile)."""
    textfile = config.get("prometheus.textfile")
    return [*output_paths(config), *([config.expand(textfile)] if textfile else [])]


def output_paths(config: Config) -> tuple[Path, Path]:
    out = config.output_dir
    return out / config.get("output.json_name"), out / config.get("output.html_name")


def write_outputs(config: Config, doc: dict[str, Any], ledger: Ledger) -> tuple[Path, Path]:
    json_path, html_path = output_paths(config)
    mode = config.file_mode
    atomic_write(json_path, render.render_json(doc), mode)
    html = render.render_html(doc, int(config.get("output.refresh_seconds")),
                              int(config.get("output.chart_days")))
    atomic_write(html_path, html.encode("utf-8"), mode)
    textfile = config.get("prometheus.textfile")
    if textfile:  # for node_exporter's textfile collector
        atomic_write(config.expand(textfile), exposition(config, doc, ledger), mode)
    return json_path, html_path


def exposition(config: Config, doc: dict[str, Any], ledger: Ledger) -> bytes:
    """The Prometheus metrics of `doc`, with the ledger's all-time totals as the counters."""
    from usaged import prometheus  # prometheus_client: only when exporting

    host = config.get("prometheus.host") or prometheus.default_host()
    return prometheus.render(doc, ledger.totals(), host)


LOST = "usage from transcripts no longer on disk is gone: only files still on disk are counted"


def open_ledger(config: Config) -> Ledger:
    """Open (or create) the ledger; a corrupt or foreign one is moved aside and rebuilt, and a
    missing one that existed before is said to be rebuilt (both lose what is not on disk)."""
    state = config.state_dir
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state / DB_NAME
    if not path.exists():
        _missing_ledger(config, path)
    try:
        return Ledger.open(path)
    except StateError as exc:
        aside = _set_aside(path, "broken")
        log.error("state_unusable", error=str(exc), moved_to=str(aside),
                  action="rebuilding from the transcripts still on disk", lost=LOST)
        return Ledger.open(path)


def _set_aside(path: Path, why: str) -> Path:
    """Rename the database and its -wal / -shm companions to `<name>.<why>-<time>*`."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside, n = path.with_name(f"{path.name}.{why}-{stamp}"), 0
    while any(Path(f"{aside}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1  # twice in one second: never overwrite the earlier one
        aside = path.with_name(f"{path.name}.{why}-{stamp}.{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    return aside


def _missing_ledger(config: Config, path: Path) -> None:
    """No database: a first start, or a deleted one. A -wal left by a deleted database must
    never be paired with the new one (SQLite could replay it into it): set it aside."""
    orphans = [Path(str(path) + s) for s in ("-wal", "-shm") if Path(str(path) + s).exists()]
    if orphans:
        _set_aside(path, "orphan")
    output = output_paths(config)[0]
    if not orphans and not output.exists():
        return  # a first start
    try:
        previous = json.loads(output.read_bytes())["daemon"]["events"]
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    log.warning("state_missing", path=str(path), previous_events=previous,
                action="rebuilding from the transcripts still on disk", lost=LOST)


def now_utc() -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time(), dt.UTC)


def state_lock(config: Config) -> StateLock:
    """The one-writer lock of a state directory (held by the daemon or a running scan)."""
    return StateLock(config.state_dir / LOCK_NAME)
