"""Pipeline: the stages wired together, shared by `usaged scan`, the daemon and the tests.

detect (sources) -> tail -> parse -> price -> ledger (one transaction per batch)
ledger snapshot -> metrics -> render -> atomic write
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from usaged import failpoints, metrics, prometheus, render
from usaged.config import Config
from usaged.errors import StateError
from usaged.fsio import StateLock, atomic_write
from usaged.ledger import Ledger
from usaged.pricing import Pricer, make_pricer
from usaged.sources import FileLabel, Source, enabled_sources, is_regular_file
from usaged.tail import NotRegular, Start, identity_at, iter_lines, open_regular, plan_start
from usaged.values import FileCursor, PricedEvent, ScanCounters, Skip

log = structlog.get_logger("usaged")

BATCH_LINES = 5000  # commit at least this often while reading a long file
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


@dataclass
class Ingestor:
    """Brings the ledger up to date with the transcript files; the only write path."""

    config: Config
    ledger: Ledger
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    pricer: Pricer = field(init=False)
    sources: list[Source] = field(init=False)

    def __post_init__(self) -> None:
        self.pricer = make_pricer(self.config.prices)
        self.sources = enabled_sources(self.config)
        self._reprice_if_changed()

    # -- detect ----------------------------------------------------------------------------

    def roots(self) -> list[Root]:
        return [Root(src, p) for src in self.sources for p in src.roots(self.config, self.env)]

    def discover(self) -> Iterator[tuple[Root, Path]]:
        seen: set[str] = set()
        for root in self.roots():
            for path in root.source.discover(root.path):
                key = str(path)
                if key not in seen:
                    seen.add(key)
                    yield root, path

    def owner(self, path: Path) -> Root | None:
        """The root and source a path (from a file-system event) belongs to, if any."""
        for root in self.roots():
            if root.source.wants(path, root.path):
                return root
        return None

    # -- scan ------------------------------------------------------------------------------

    def scan_all(self, progress: Progress | None = None) -> ScanCounters:
        """Reconcile every transcript on disk with the ledger (the periodic 'truth' pass)."""
        counters = ScanCounters()
        found = list(self.discover())
        on_disk = {str(p) for _, p in found}
        for i, (root, path) in enumerate(found, 1):
            if progress:
                progress(i, len(found), str(path))
            self._count(counters, self.ingest(root, path))
        vanished = [p for p in self.ledger.cursors() if p not in on_disk and not
                    os.path.exists(p)]
        if vanished:
            self.ledger.mark_gone(vanished)
            log.info("files_gone", count=len(vanished), kept="usage already counted stays")
        counters.files_seen = len(found)
        return counters

    def ingest_paths(self, paths: set[str]) -> ScanCounters:
        """Catch up the given paths (from file-system events)."""
        counters = ScanCounters()
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
            self._count(counters, self.ingest(root, path))
        return counters

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
        try:
            start = plan_start(f, cursor)
            if start is Start.UNCHANGED:
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
            label = root.source.label(path, root.path)
            outcome = self._read(root.source, label, key, f, begin, reset)
            outcome.start = start
            return outcome
        except OSError as exc:
            return self._unreadable(root, key, exc)
        finally:
            os.close(f.fd)

    def _read(self, source: Source, label: FileLabel, key: str, f: Any, begin: int,
              reset: bool) -> FileOutcome:
        out = FileOutcome(read=True)
        chunk = int(self.config.get("daemon.read_chunk"))
        max_line = int(self.config.get("daemon.max_line_bytes"))
        batch: list[PricedEvent] = []
        bad = 0
        offset = begin
        for line in iter_lines(f.fd, begin, chunk, max_line):
            out.lines += 1
            if line.too_long:
                bad += 1
                log.warning("line_too_long", path=key, offset=line.start,
                            bytes=line.end - line.start, limit=max_line)
            else:
                parsed = source.parse_line(line.data, label)
                if isinstance(parsed, Skip):
                    if parsed.is_bad:
                        bad += 1
                        log.debug("bad_line", path=key, offset=line.start, reason=parsed.value)
                else:
                    batch.append(self.pricer.price(parsed))
            offset = line.end
            if out.lines % BATCH_LINES == 0:
                self._commit(key, source, f, offset, batch, bad, reset, out)
                batch, bad, reset = [], 0, False
        self._commit(key, source, f, offset, batch, bad, reset, out)
        out.bytes = offset - begin
        return out

    def _commit(self, key: str, source: Source, f: Any, offset: int, batch: list[PricedEvent],
                bad: int, reset: bool, out: FileOutcome) -> None:
        cursor = FileCursor(path=key, source=source.name,
                            identity=identity_at(f.fd, f.dev, f.ino, offset), offset=offset,
                            size=f.size, mtime_ns=f.mtime_ns, bad_lines=bad)
        failpoints.hit("after_read_before_commit")
        result = self.ledger.commit_batch(cursor, batch, reset=reset)
        failpoints.hit("after_commit")
        out.new += result.new + result.upgraded
        out.dup += result.dup
        out.bad += bad
        if bad:
            log.warning("bad_lines", path=key, count=bad, offset=offset)

    def _unreadable(self, root: Root, key: str, exc: OSError) -> FileOutcome:
        reason = exc.strerror or str(exc)
        known = self.ledger.problems_for(key)
        if known != reason:
            log.warning("file_unreadable", path=key, reason=reason)
            self.ledger.set_file_error(key, root.source.name, reason)
        return FileOutcome(error=f"{key}: {reason}")

    # -- pricing changes -------------------------------------------------------------------

    def _reprice_if_changed(self) -> None:
        stamp = pricing_stamp(self.config, self.pricer)
        if self.ledger.meta().get("pricing") == stamp:
            return
        changed = self.ledger.reprice(self.pricer)
        self.ledger.set_meta({"pricing": stamp,
                              "price_table_date": self.pricer.table.effective_date})
        if changed:
            log.info("repriced", events=changed)


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


def build_document(config: Config, ledger: Ledger, now: dt.datetime,
                   daemon: dict[str, Any], last_scan_age: float | None = None
                   ) -> dict[str, Any]:
    settings = settings_from(config)
    ts = now.timestamp()
    snap = ledger.snapshot(ts, metrics.cut_points(settings, ts), settings.top_sessions,
                           settings.session_review_tokens)
    stats = ledger.stats()
    health = metrics.Health(files=stats["files"], events=stats["events"],
                            bad_lines=stats["bad_lines"], unreadable=stats["unreadable"],
                            last_scan_age=last_scan_age,
                            scan_interval=float(config.get("daemon.scan_interval")),
                            problems=tuple(ledger.problems()))
    figures = metrics.compute(snap, settings, health, now)
    generated = dt.datetime.now(dt.UTC).astimezone(settings.zone)
    daemon = {**daemon, "files": stats["files"], "events": stats["events"],
              "bad_lines": stats["bad_lines"], "unreadable_files": stats["unreadable"],
              "price_table": ledger.meta().get("price_table_date")}
    return render.document(figures, generated, daemon)


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
    host = config.get("prometheus.host") or prometheus.default_host()
    return prometheus.render(doc, ledger.totals(), host)


def open_ledger(config: Config) -> Ledger:
    """Open (or create) the ledger; a corrupt or foreign one is moved aside and rebuilt."""
    state = config.state_dir
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state / DB_NAME
    try:
        return Ledger.open(path)
    except StateError as exc:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{DB_NAME}.broken-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        log.error("state_unusable", error=str(exc), moved_to=str(aside),
                  action="rebuilding from the transcripts still on disk; usage from files "
                         "no longer on disk is not recoverable")
        return Ledger.open(path)


def now_utc() -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time(), dt.UTC)


def state_lock(config: Config) -> StateLock:
    """The one-writer lock of a state directory (held by the daemon or a running scan)."""
    return StateLock(config.state_dir / LOCK_NAME)
