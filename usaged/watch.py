"""Watch: file-system events as hints. The handler only records WHICH paths changed.

The daemon's ingest loop drains the inbox; the periodic scan remains the truth. The inbox is a
bounded set: past `MAX_PENDING` distinct paths it asks for a full rescan instead of growing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Literal

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from usaged import failpoints

log = structlog.get_logger("usaged")

WatcherMode = Literal["native", "polling", "none"]
MAX_PENDING = 50_000
_HINTS = {"created", "modified", "moved", "deleted", "closed"}


class Inbox:
    """Paths to look at soon, shared between the observer thread and the ingest loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._rescan = False
        self._wake = threading.Event()

    def add(self, path: str) -> None:
        with self._lock:
            if len(self._paths) >= MAX_PENDING:
                self._paths.clear()
                self._rescan = True
            else:
                self._paths.add(path)
        self._wake.set()

    def request_rescan(self) -> None:
        with self._lock:
            self._rescan = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def wait(self, timeout: float) -> None:
        self._wake.wait(max(0.0, timeout))

    def drain(self) -> tuple[set[str], bool]:
        with self._lock:
            paths, rescan = self._paths, self._rescan
            self._paths, self._rescan = set(), False
            self._wake.clear()
        return paths, rescan


class Handler(FileSystemEventHandler):
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        failpoints.io_error("watch_handler")
        if event.event_type not in _HINTS:
            return  # opened / closed_no_write: our own reads, not changes
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.inbox.request_rescan()  # a folder moved in brings files without events
            return
        self.inbox.add(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.inbox.add(os.fsdecode(dest))


class Watcher:
    """Owns the observer: schedules the wanted folders, restarts a dead observer thread, and
    falls back from native events to polling when the native observer cannot start."""

    def __init__(self, mode: WatcherMode, inbox: Inbox, poll_seconds: float = 2.0) -> None:
        self.requested: WatcherMode = mode
        self.mode: WatcherMode = mode
        self.degraded = False
        self.inbox = inbox
        self.poll_seconds = poll_seconds
        self.handler = Handler(inbox)
        self.observer: BaseObserver | None = None
        self.watches: dict[Path, ObservedWatch] = {}
        self.restarts = 0

    def _new_observer(self) -> BaseObserver:
        if self.mode == "native":
            return Observer()
        return PollingObserver(timeout=self.poll_seconds)

    def start(self) -> None:
        if self.mode == "none":
            return
        self.observer = self._new_observer()
        self.observer.daemon = True
        try:
            self.observer.start()
        except OSError as exc:
            self._degrade(exc)

    def _degrade(self, exc: OSError) -> None:
        if self.mode != "native":
            raise exc
        log.warning("watcher_degraded", reason=str(exc), fallback="polling",
                    hint="raise fs.inotify.max_user_watches (see docs/operations.md)")
        self.stop()
        self.mode, self.degraded = "polling", True
        self.start()

    def sync(self, wanted: set[Path]) -> bool:
        """Watch exactly the existing folders of `wanted`; True when the set changed."""
        if self.observer is None:
            return False
        existing = {p for p in wanted if p.is_dir()}
        changed = False
        for path in list(self.watches):
            if path not in existing or not path.is_dir():
                self._unschedule(path)
                changed = True
        for path in sorted(existing - set(self.watches)):
            try:
                failpoints.io_error("watch_schedule")
                self.watches[path] = self.observer.schedule(self.handler, str(path),
                                                            recursive=True)
            except OSError as exc:
                if self.mode == "native":
                    self._degrade(exc)
                    return self.sync(wanted) or True
                log.warning("watch_failed", path=str(path), reason=str(exc))
                continue
            log.info("watching", path=str(path), mode=self.mode)
            changed = True
        return changed

    def _unschedule(self, path: Path) -> None:
        watch = self.watches.pop(path)
        if self.observer is not None:
            with contextlib.suppress(KeyError, OSError):
                self.observer.unschedule(watch)
        log.info("watch_removed", path=str(path))

    def alive(self) -> bool:
        if self.observer is None:
            return self.mode == "none"
        return self.observer.is_alive() and all(
            e.is_alive() for e in self.observer.emitters)

    def restart_if_dead(self, wanted: set[Path]) -> bool:
        """Notice a dead observer (or emitter) thread and start a fresh one."""
        if self.mode == "none" or self.alive():
            return False
        log.warning("watcher_restarted", mode=self.mode, restarts=self.restarts + 1)
        self.restarts += 1
        self.stop()
        self.start()
        self.sync(wanted)
        return True

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            if self.observer.is_alive():
                self.observer.join(timeout=5)
            self.observer = None
        self.watches.clear()
