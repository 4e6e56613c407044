"""Plain data types shared by the stages. No I/O, no behaviour beyond arithmetic."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

SourceName = Literal["openclaw", "claude_code"]
CostSource = Literal["line", "config", "table", "none"]


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts by kind; `cache_write_1h` is the part of `cache_write` with a 1-hour TTL."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    web_search: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    @property
    def prompt(self) -> int:
        """Tokens on the prompt side (input + cache reads + cache writes)."""
        return self.input + self.cache_read + self.cache_write


class Skip(enum.Enum):
    """Why a complete line produced no usage event. BAD_* reasons count as bad lines."""

    NO_USAGE = "no_usage"  # a valid line that carries no usage (user, tool result, header ...)
    NOT_A_CALL = "not_a_call"  # usage with zero tokens and no cost (delivery mirror, injected)
    BLANK = "blank"
    BAD_JSON = "bad_json"
    BAD_UTF8 = "bad_utf8"
    BAD_SHAPE = "bad_shape"  # JSON, but not an object
    TOO_LONG = "too_long"
    BAD_VALUE = "bad_value"  # usage figures no call has (see parse.implausible)

    @property
    def is_bad(self) -> bool:
        return self in (Skip.BAD_JSON, Skip.BAD_UTF8, Skip.BAD_SHAPE, Skip.TOO_LONG,
                        Skip.BAD_VALUE)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One model call, as parsed from one transcript line (before pricing).

    `key` is the source's dedup key as a stable signed 64-bit integer. `ts` is UTC epoch seconds
    (None when the line carries no usable time: it then counts in all-time figures only).
    `line_cost` is the cost recorded on the line itself, None when absent or unusable.
    """

    key: int
    source: SourceName
    ts: float | None
    agent: str
    session: str
    provider: str
    model: str
    tokens: Tokens
    line_cost: float | None
    # Claude Code only: dedup bookkeeping (message id, request id, sidechain flag).
    msg_id: str | None = None
    request_id: str | None = None
    sidechain: bool = False


@dataclass(frozen=True, slots=True)
class PricedEvent:
    event: UsageEvent
    cost: float | None
    cost_source: CostSource


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What a file looked like at the stored offset: used to notice truncation and replacement."""

    dev: int
    ino: int
    head_hash: bytes  # hash of the first min(HEAD_BYTES, offset) bytes
    tail_hash: bytes  # hash of the TAIL_BYTES bytes just before the offset


@dataclass(frozen=True, slots=True)
class FileCursor:
    """The ledger's record of one transcript file."""

    path: str
    source: SourceName
    identity: FileIdentity
    offset: int
    size: int
    mtime_ns: int
    bad_lines: int = 0
    events: int = 0


@dataclass(slots=True)
class ScanCounters:
    """What one ingest pass did; logged and summarised by `usaged scan`."""

    files_seen: int = 0
    files_read: int = 0
    bytes_read: int = 0
    lines: int = 0
    events_new: int = 0
    events_dup: int = 0
    bad_lines: int = 0
    truncations: int = 0
    unreadable: list[str] = field(default_factory=list)
