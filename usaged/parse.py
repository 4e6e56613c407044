"""Shared line-level decoding for the sources: timestamps, token counts, dedup keys, JSON.

Pure functions; each source module (usaged/sources/*.py) turns one line into a UsageEvent or a
Skip reason with these helpers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from usaged.values import Skip, Tokens, UsageEvent

T = TypeVar("T")


def dedup_key(*parts: object) -> int:
    """A stable signed 64-bit hash of the parts (fits SQLite's INTEGER PRIMARY KEY)."""
    try:
        text = "\x1f".join(parts)  # type: ignore[arg-type]  # all str: the common case
    except TypeError:
        text = "\x1f".join("" if p is None else str(p) for p in parts)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def decode_line(line: bytes, decoder: msgspec.json.Decoder[T]) -> T | Skip:
    """Decode one complete line (without its newline) with a typed decoder.

    Invalid UTF-8 inside an otherwise valid line is replaced, not fatal; a line that is not JSON,
    or JSON that is not an object, is a bad line.
    """
    if not line.strip():
        return Skip.BLANK
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    try:
        return decoder.decode(line)
    except msgspec.ValidationError:
        return _shape_of(line)
    except msgspec.DecodeError:
        pass
    try:
        repaired = line.decode("utf-8", "replace").encode("utf-8")
    except UnicodeError:  # pragma: no cover - replace never raises
        return Skip.BAD_UTF8
    if repaired == line:
        return Skip.BAD_JSON
    try:
        return decoder.decode(repaired)
    except msgspec.ValidationError:
        return _shape_of(repaired)
    except msgspec.DecodeError:
        return Skip.BAD_UTF8


def _shape_of(line: bytes) -> Skip:
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return Skip.BAD_JSON
    return Skip.NO_USAGE if isinstance(value, dict) else Skip.BAD_SHAPE


def iso_to_epoch(value: Any) -> float | None:
    """Seconds since the epoch for an ISO-8601 string with an offset (naive strings are UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def ms_to_epoch(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return float(value) / 1000.0


def count(value: Any) -> int:
    """A token count as recorded: missing, negative, non-numeric or non-finite values give 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if value > 0 else 0
    if isinstance(value, float) and math.isfinite(value) and value > 0:
        return int(value)
    return 0


def first_count(usage: dict[str, Any], *names: str) -> int:
    for name in names:
        if name in usage and usage[name] is not None:
            return count(usage[name])
    return 0


# One call never comes near these; figures beyond them are garbage, and would overflow the
# ledger's 64-bit running sums (a crash on every start: a poison line).
MAX_COUNT = 10**12  # tokens of one kind, or web searches, in one call
MAX_COST = 1e6  # USD for one call


def implausible(tokens: Tokens, cost: float | None) -> bool:
    """Usage no real call has: the line is bad (counted as such), not summed."""
    return (max(tokens.input, tokens.output, tokens.cache_read, tokens.cache_write,
                tokens.web_search) > MAX_COUNT or (cost is not None and cost > MAX_COST))


def money(value: Any) -> float | None:
    """A recorded USD amount: a finite number >= 0, else None (unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


def text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) and value else default


# -- blocks of lines -----------------------------------------------------------------------

USAGE_NEEDLE = b'"usage"'  # no line without these bytes carries usage, in either source
_OPEN, _CLOSE = ord("{"), ord("}")


@dataclass(slots=True)
class BlockParse:
    """What the lines of one block gave: events in line order, bad lines as (offset, bytes
    with the newline, reason), and how many lines there were."""

    events: list[UsageEvent] = field(default_factory=list)
    bad: list[tuple[int, int, Skip]] = field(default_factory=list)
    lines: int = 0


def parse_block(data: bytes, lo: int, hi: int, start: int,
                parse_line: Callable[[bytes], UsageEvent | Skip], max_line: int,
                needle: bytes = USAGE_NEEDLE) -> BlockParse:
    """Every complete line of `data[lo:hi]` (`hi` just after a newline; `lo` at file offset
    `start`) through `parse_line`, except the lines that cannot carry usage.

    A line without `needle` whose bytes start with `{` and end with `}` is a valid line without
    usage and is not decoded (most bytes of a transcript are such lines); every other line goes
    to `parse_line`, cleaned of a trailing CR and leading NUL bytes, exactly as `iter_lines`
    yields it. Lines longer than `max_line` are bad (`Skip.TOO_LONG`).
    """
    out = BlockParse()
    events, bad = out.events, out.bad
    find = data.find
    nxt = find(needle, lo, hi)
    if nxt < 0:
        nxt = hi
    pos, lines = lo, 0
    while pos < hi:
        nl = find(b"\n", pos, hi)
        lines += 1
        if nl - pos > max_line:
            bad.append((start + pos - lo, nl + 1 - pos, Skip.TOO_LONG))
        elif nxt < nl or data[pos] != _OPEN or data[nl - 1] != _CLOSE:
            result = parse_line(clean_line(data[pos:nl]))
            if isinstance(result, Skip):
                if result.is_bad:
                    bad.append((start + pos - lo, nl + 1 - pos, result))
            else:
                events.append(result)
        if nxt < nl:
            nxt = find(needle, nl + 1, hi)
            if nxt < 0:
                nxt = hi
        pos = nl + 1
    out.lines = lines
    return out


def clean_line(raw: bytes) -> bytes:
    """A line as the sources see it: no trailing CR, no leading NUL bytes."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if raw.startswith(b"\x00"):
        raw = raw.lstrip(b"\x00")
    return raw


def cheap_skip(line: bytes, decoder: msgspec.json.Decoder[Any]) -> Skip:
    """A line without usage: an object-shaped line is taken as valid without parsing it (it may
    be tens of MB); anything else is classified properly (and counted if bad)."""
    stripped = line.strip()
    if not stripped:
        return Skip.BLANK
    if stripped.startswith((b"{", b"\xef\xbb\xbf{")) and stripped.endswith(b"}"):
        return Skip.NO_USAGE
    decoded = decode_line(stripped, decoder)
    return decoded if isinstance(decoded, Skip) else Skip.NO_USAGE
