"""Batch: one transcript's new complete lines -> batches of priced events, ready to commit.

tail (`iter_blocks`) -> parse (`parse_block`, the source's `parse_line`) -> price, for one file
from a given offset. Shared by the serial ingest (`pipeline.Ingestor`) and the parse workers of
a cold scan (`coldscan`), so both read a file exactly alike. No ledger access: a batch carries
the offset just after its last line, which the caller commits together with its events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from usaged.ledger import EventValues, event_values
from usaged.parse import parse_block
from usaged.tail import iter_blocks
from usaged.values import CostSource, Skip, UsageEvent

BATCH_LINES = 5000  # a batch ends at the first block boundary past this many lines

LineParser = Callable[[bytes], UsageEvent | Skip]


@dataclass(slots=True)
class Batch:
    """Lines read up to file offset `end`: their events (as `event_values` rows), their bad
    lines as (offset, bytes, reason), and how many lines there were."""

    end: int
    rows: list[EventValues] = field(default_factory=list)
    bad: list[tuple[int, int, Skip]] = field(default_factory=list)
    lines: int = 0


def read_batches(fd: int, begin: int, chunk: int, max_line: int, parse: LineParser,
                 price: Callable[[UsageEvent], tuple[float | None, CostSource]],
                 batch_lines: int = BATCH_LINES) -> Iterator[Batch]:
    """The batches of the complete lines from `begin`; always at least one (maybe empty)."""
    batch = Batch(begin)
    for block in iter_blocks(fd, begin, chunk, max_line):
        if block.too_long:
            batch.bad.append((block.start, block.hi - block.lo, Skip.TOO_LONG))
            batch.lines += 1
        else:
            got = parse_block(block.data, block.lo, block.hi, block.start, parse, max_line)
            batch.rows += [event_values(ev, *price(ev)) for ev in got.events]
            batch.bad += got.bad
            batch.lines += got.lines
        batch.end = block.end
        if batch.lines >= batch_lines:
            yield batch
            batch = Batch(batch.end)
    yield batch
