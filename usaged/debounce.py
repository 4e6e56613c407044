"""Debounce: when to write the outputs, as a pure state machine over a monotonic clock.

Write once changes have been quiet for `quiet` seconds, but no later than `max_wait` after the
first pending change, and never two writes closer than `min_interval`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Debouncer:
    quiet: float
    max_wait: float
    min_interval: float
    first_pending: float | None = None
    last_change: float | None = None
    last_write: float | None = None

    @property
    def pending(self) -> bool:
        return self.first_pending is not None

    def change(self, now: float) -> None:
        if self.first_pending is None:
            self.first_pending = now
        self.last_change = now

    def due_at(self) -> float | None:
        """The monotonic time the next write is due, or None when nothing is pending."""
        if self.first_pending is None or self.last_change is None:
            return None
        due = min(self.last_change + self.quiet, self.first_pending + self.max_wait)
        if self.last_write is not None:
            due = max(due, self.last_write + self.min_interval)
        return due

    def due(self, now: float) -> bool:
        at = self.due_at()
        return at is not None and now >= at

    def wrote(self, now: float) -> None:
        self.first_pending = None
        self.last_change = None
        self.last_write = now

    def failed(self, now: float, retry_in: float) -> None:
        """A write raised: keep the changes pending and try again after `retry_in`."""
        self.last_write = now + retry_in - self.min_interval
