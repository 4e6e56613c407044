"""The daemon (`usaged run`): watch, ingest, reconcile, publish, in the foreground.

One ingest loop owns the ledger; the observer thread only fills the inbox. Each turn of the
loop: wait for a hint or a deadline -> ingest the hinted paths -> run the reconciliation scan
when due -> supervise the watcher and the config file -> write the outputs when the debouncer
says so. SIGTERM / SIGINT end the loop: pending work is committed, outputs written, exit 0.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import structlog

from usaged import pipeline, prometheus
from usaged.config import Config, load, resolve_config_path
from usaged.debounce import Debouncer
from usaged.errors import AlreadyRunning, UsagedError
from usaged.ledger import Ledger, transient
from usaged.values import ScanCounters
from usaged.watch import Inbox, Watcher

log = structlog.get_logger("usaged")

TICK = 2.0  # seconds between supervisor checks (watcher alive, roots, config file)
HEARTBEAT_EVERY = 30.0
WRITE_RETRY = 2.0  # first retry of a failed output write; doubles up to RETRY_MAX
STATE_RETRY = 1.0  # first rescan after a failed state write; doubles up to RETRY_MAX
RETRY_MAX = 30.0
FINAL_SCAN_BUDGET = 3.0  # seconds the scan at shutdown may take (launchd / systemd wait 20)
T = TypeVar("T")


def _iso(ts: float | None, zone: dt.tzinfo) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, zone).isoformat()


@dataclass
class Daemon:
    config: Config
    config_arg: str | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    inbox: Inbox = field(default_factory=Inbox)

    def __post_init__(self) -> None:
        self.lock = pipeline.state_lock(self.config)
        self.started = time.time()
        self.last_scan: float | None = None
        self.last_write: float | None = None
        self.last_beat = 0.0
        self.config_error: str | None = None
        self.config_stamp = self._config_stamp()
        self.writes = 0
        self.figures = pipeline.FiguresCache()  # settled figures: a write adds up recent ones
        self.write_failures = 0  # consecutive failed output writes
        self.state_failures = 0  # consecutive failed state (ledger) writes
        self.state_retry_at: float | None = None
        self.final_scan_until: float | None = None
        self.exporter = prometheus.Exporter()  # /metrics, when prometheus.listen is set

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        if not self.lock.acquire():
            raise AlreadyRunning(self.lock.holder_pid())
        self._install_signals()
        try:
            ledger = self._open_ledger()
            if ledger is None:
                return 0  # stopped while waiting for the state to become writable
            self.ledger = ledger
            try:
                return self._serve()
            finally:
                self.ledger.close()
        finally:
            self.lock.release()

    def _open_ledger(self) -> Ledger | None:
        """The ledger; a transient failure at start-up (disk full) is waited out with backoff
        instead of exiting into a crash loop."""
        while not self.stopping.is_set():
            ledger = self._state_write("open", partial(pipeline.open_ledger, self.config))
            if ledger is not None:
                self.state_retry_at = None
                return ledger
            self.stopping.wait(max(0.0, (self.state_retry_at or 0.0) - time.monotonic()))
        return None

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal_received", signal=signal.Signals(signum).name)
            self.stopping.set()
            self.inbox.wake()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _serve(self) -> int:
        cfg = self.config
        self.ingestor = pipeline.Ingestor(cfg, self.ledger, should_stop=self._should_stop)
        self.debounce = Debouncer(float(cfg.get("daemon.debounce_quiet")),
                                  float(cfg.get("daemon.debounce_max")),
                                  float(cfg.get("daemon.min_interval")))
        self.watcher = Watcher(cfg.get("daemon.watcher"), self.inbox)
        self.watcher.start()
        self.watcher.sync(self._wanted())
        log.info("daemon_started", pid=os.getpid(), state_dir=str(cfg.state_dir),
                 watcher=self.watcher.mode, roots=[str(r.path) for r in self.ingestor.roots()])
        self._scan()
        self._write()
        try:
            self._loop()
        finally:
            self.watcher.stop()
            self.inbox.drain()
            # the truth, once more: events in flight at shutdown are not lost; within a budget,
            # so that a stop during a long catch-up exits in time (the next start resumes)
            self.final_scan_until = time.monotonic() + FINAL_SCAN_BUDGET
            self._scan()
            self._write(state="stopped")
            self.exporter.close()
            log.info("daemon_stopped", pid=os.getpid(), writes=self.writes)
        return 0

    def _loop(self) -> None:
        scan_every = float(self.config.get("daemon.scan_interval"))
        next_scan = time.monotonic() + scan_every
        next_tick = time.monotonic() + TICK
        while not self.stopping.is_set():
            deadlines = [next_scan, next_tick]
            if (due := self.debounce.due_at()) is not None:
                deadlines.append(due)
            if self.state_retry_at is not None:
                deadlines.append(self.state_retry_at)
            self.inbox.wait(min(deadlines) - time.monotonic())
            if self.stopping.is_set():
                break
            paths, rescan = self.inbox.drain()
            if paths:
                counters = self._state_write("ingest", partial(self.ingestor.ingest_paths, paths))
                if counters is not None:
                    self._note(counters)
            now = time.monotonic()
            if self.state_retry_at is not None and now >= self.state_retry_at:
                self.state_retry_at, rescan = None, True  # what failed to commit is read again
            if rescan or now >= next_scan:
                self._scan()
                if now >= next_scan:
                    self.debounce.change(now)  # windows move with time: refresh the outputs
                scan_every = float(self.config.get("daemon.scan_interval"))
                next_scan = now + scan_every
            if now >= next_tick:
                self._supervise()
                next_tick = now + TICK
            if self.debounce.due(time.monotonic()):
                self._write()

    # -- stages ----------------------------------------------------------------------------

    def _note(self, counters: ScanCounters) -> None:
        if counters.files_read or counters.unreadable:
            self.debounce.change(time.monotonic())

    def _scan(self) -> None:
        counters = self._state_write("scan", self.ingestor.scan_all)
        if counters is None:
            return
        self.last_scan = time.time()
        self._note(counters)
        if counters.files_read:
            log.info("scan_done", files=counters.files_seen, read=counters.files_read,
                     new_events=counters.events_new, bad_lines=counters.bad_lines)
        self._heartbeat(force=True)

    def _write(self, state: str = "running") -> None:
        started = time.monotonic()
        try:
            doc = pipeline.build_document(self.config, self.ledger, pipeline.now_utc(),
                                          self._daemon_info(state), self._scan_age(),
                                          self.figures)
            self._publish(doc)
            json_path, _ = pipeline.write_outputs(self.config, doc, self.ledger)
        except OSError as exc:
            self.write_failures += 1
            retry_in = min(WRITE_RETRY * 2 ** (self.write_failures - 1), RETRY_MAX)
            # one error line when the fault starts (disk full, I/O error); repeats at debug
            (log.error if self.write_failures == 1 else log.debug)(
                "write_failed", reason=str(exc), retry_in=retry_in, failures=self.write_failures)
            self.debounce.failed(time.monotonic(), retry_in)
            return
        if self.write_failures:
            log.info("write_recovered", failures=self.write_failures)
            self.write_failures = 0
        self.debounce.wrote(time.monotonic())
        self.last_write = time.time()
        self.writes += 1
        month = doc["windows"]["month"]
        log.info("outputs_written", path=str(json_path), events=doc["daemon"]["events"],
                 month_tokens=month["tokens"]["total"], month_cost_usd=round(month["cost_usd"], 6),
                 alerts=len(doc["alerts"]), ms=round((time.monotonic() - started) * 1000, 1))
        self._heartbeat(force=True, state=state)

    def _publish(self, doc: dict[str, Any]) -> None:
        """Hand the figures to /metrics (started, moved or stopped as prometheus.listen says)."""
        server = self.exporter.serve(self.config.get("prometheus.listen"))
        if server is not None:
            server.publish(pipeline.exposition(self.config, doc, self.ledger))

    def _scan_age(self) -> float | None:
        return None if self.last_scan is None else time.time() - self.last_scan

    def _daemon_info(self, state: str) -> dict[str, Any]:
        zone = self.config.zone
        return {"state": state, "pid": os.getpid(), "started_at": _iso(self.started, zone),
                "watcher": self.watcher.mode, "watcher_degraded": self.watcher.degraded,
                "last_scan": _iso(self.last_scan, zone), "config_error": self.config_error}

    def _heartbeat(self, force: bool = False, state: str = "running") -> None:
        now = time.time()
        if not force and now - self.last_beat < HEARTBEAT_EVERY:
            return
        self.last_beat = now
        self._state_write("heartbeat", lambda: self.ledger.set_meta({
            "pid": str(os.getpid()), "state": state, "started_at": str(self.started),
            "heartbeat_at": str(now), "last_scan": str(self.last_scan or ""),
            "last_write": str(self.last_write or ""), "watcher": self.watcher.mode,
            "watcher_degraded": str(int(self.watcher.degraded)),
            "watcher_requested": self.watcher.requested,
            "scan_interval": str(self.config.get("daemon.scan_interval")),
            "config_error": self.config_error or "",
            "price_table_date": self.ingestor.pricer.table.effective_date,
        }))

    def _should_stop(self) -> bool:
        """Asked by a scan between files: stop early once a stop signal came (and, for the scan
        at shutdown, once its budget is spent)."""
        if self.final_scan_until is not None:
            return time.monotonic() > self.final_scan_until
        return self.stopping.is_set()

    def _state_write(self, stage: str, action: Callable[[], T]) -> T | None:
        """Run a stage that writes the ledger. A transient failure (disk full, I/O error) rolls
        its transaction back, is logged once (not per retry), and a rescan after a growing
        delay reads again whatever did not commit; the daemon keeps running."""
        try:
            result = action()
        except sqlite3.OperationalError as exc:
            if not transient(exc):
                raise
            self.state_failures += 1
            retry_in = min(STATE_RETRY * 2 ** (self.state_failures - 1), RETRY_MAX)
            (log.error if self.state_failures == 1 else log.debug)(
                "state_write_failed", stage=stage, reason=str(exc), retry_in=retry_in,
                failures=self.state_failures)
            self.state_retry_at = time.monotonic() + retry_in
            return None
        if self.state_failures:
            log.info("state_write_recovered", stage=stage, failures=self.state_failures)
            self.state_failures = 0
        return result

    # -- supervision -----------------------------------------------------------------------

    def _wanted(self) -> set[Path]:
        return {d for r in self.ingestor.roots() for d in r.source.watch_dirs(r.path)}

    def _supervise(self) -> None:
        wanted = self._wanted()
        if self.watcher.restart_if_dead(wanted) or self.watcher.sync(wanted):
            self.inbox.request_rescan()
        self._reload_config_if_changed()
        self._heartbeat()

    def _config_stamp(self) -> tuple[int, int] | None:
        path, _ = resolve_config_path(self.config_arg, self.config.home)
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _reload_config_if_changed(self) -> None:
        stamp = self._config_stamp()
        if stamp == self.config_stamp:
            return
        self.config_stamp = stamp
        try:
            fresh = load(self.config_arg, self.config.home)
        except UsagedError as exc:
            self.config_error = str(exc)
            log.error("config_invalid", error=str(exc), kept="the last good config")
            self._heartbeat(force=True)
            self.debounce.change(time.monotonic())  # the outputs show the error too
            return
        self.config_error = None
        self.config = fresh
        self.ingestor = pipeline.Ingestor(fresh, self.ledger, should_stop=self._should_stop)
        self.debounce.quiet = float(fresh.get("daemon.debounce_quiet"))
        self.debounce.max_wait = float(fresh.get("daemon.debounce_max"))
        self.debounce.min_interval = float(fresh.get("daemon.min_interval"))
        log.info("config_reloaded", path=str(fresh.path))
        for warning in fresh.warnings:
            log.warning("config_warning", warning=warning)
        self.inbox.request_rescan()
        self.debounce.change(time.monotonic())


def run(config: Config, config_arg: str | None) -> int:
    return Daemon(config, config_arg).run()


def ledger_path(config: Config) -> Path:
    return config.state_dir / pipeline.DB_NAME


__all__ = ["Daemon", "Ledger", "ledger_path", "run"]
