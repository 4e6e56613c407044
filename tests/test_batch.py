"""Reading a file in blocks gives exactly what reading it line by line gives."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from usaged.batch import read_batches
from usaged.parse import USAGE_NEEDLE, parse_block
from usaged.sources import FileLabel
from usaged.sources.claude_code import SOURCE as CLAUDE
from usaged.sources.openclaw import SOURCE as OPENCLAW
from usaged.tail import iter_blocks, iter_lines, open_regular
from usaged.values import Skip, UsageEvent

LABEL = FileLabel(agent="p", session="s")
_ROW = (b'{"type":"assistant","requestId":"r%d","sessionId":"s","timestamp":'
        b'"2025-01-01T00:00:00Z","message":{"id":"m%d","model":"claude-sonnet-4-5",'
        b'"usage":{"input_tokens":%d,"output_tokens":1}}}')
_PIECES = [b'{"type":"user","message":{"content":"no usage here"}}', b"", b"   ", b"{not json",
           b"[1, 2]", b'{"a":1}\r', b'\x00\x00{"a":1}', b'\xef\xbb\xbf{"a":1}', b"\xff\xfe",
           b'{"usage": {"broken"', b'{"text":"the word usage, unquoted"}', b"x" * 300]
_line = st.one_of(st.sampled_from(_PIECES),
                  st.integers(1, 5).map(lambda n: _ROW % (n, n, n)),
                  st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")))


def _by_lines(path: Path, chunk: int, max_line: int
              ) -> tuple[list[UsageEvent], list[tuple[int, Skip]], int]:
    """The reference: iter_lines, then the source's parse_line on every line."""
    f = open_regular(str(path))
    events, bad, n = [], [], 0
    try:
        for ln in iter_lines(f.fd, 0, chunk, max_line):
            n += 1
            if ln.too_long:
                bad.append((ln.start, Skip.TOO_LONG))
                continue
            got = CLAUDE.parse_line(ln.data, LABEL)
            if isinstance(got, Skip):
                if got.is_bad:
                    bad.append((ln.start, got))
            else:
                events.append(got)
    finally:
        os.close(f.fd)
    return events, bad, n


def _by_blocks(path: Path, chunk: int, max_line: int
               ) -> tuple[list[UsageEvent], list[tuple[int, Skip]], int]:
    f = open_regular(str(path))
    events: list[UsageEvent] = []
    bad: list[tuple[int, Skip]] = []
    n = 0
    try:
        for block in iter_blocks(f.fd, 0, chunk, max_line):
            if block.too_long:
                n += 1
                bad.append((block.start, Skip.TOO_LONG))
                continue
            got = parse_block(block.data, block.lo, block.hi, block.start,
                              lambda line: CLAUDE.parse_line(line, LABEL), max_line)
            events += got.events
            bad += [(offset, reason) for offset, _, reason in got.bad]
            n += got.lines
    finally:
        os.close(f.fd)
    return events, bad, n


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_line, max_size=25), tail=st.binary(max_size=8),
       chunk=st.integers(1, 80), max_line=st.integers(8, 400))
def test_blocks_give_the_events_and_bad_lines_of_line_by_line_reading(
        tmp_path_factory: object, lines: list[bytes], tail: bytes, chunk: int,
        max_line: int) -> None:
    folder = tmp_path_factory.mktemp("blocks")  # type: ignore[attr-defined]
    path = folder / "s.jsonl"
    path.write_bytes(b"".join(ln + b"\n" for ln in lines) + tail.replace(b"\n", b""))
    assert _by_blocks(path, chunk, max_line) == _by_lines(path, chunk, max_line)


def test_object_lines_without_usage_are_not_decoded() -> None:
    seen: list[bytes] = []

    def parse(line: bytes) -> UsageEvent | Skip:
        seen.append(line)
        return Skip.NO_USAGE

    data = b'{"a":1}\n{"usage":{}}\n{"b":2}\r\n[3]\n'
    got = parse_block(data, 0, len(data), 0, parse, 1 << 20, USAGE_NEEDLE)
    assert got.lines == 4
    assert seen == [b'{"usage":{}}', b'{"b":2}', b"[3]"]


def test_batches_end_on_block_boundaries_and_cover_every_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    rows = [b'{"type":"message","id":"%d","timestamp":"2025-01-01T00:00:00Z","message":'
            b'{"role":"assistant","usage":{"input":%d}}}' % (i, i + 1) for i in range(50)]
    path.write_bytes(b"\n".join(rows) + b"\n")
    label = FileLabel(agent="a", session="s")
    f = open_regular(str(path))
    try:
        batches = list(read_batches(f.fd, 0, 256, 1 << 20,
                                    lambda line: OPENCLAW.parse_line(line, label),
                                    lambda ev: (None, "none"), batch_lines=7))
    finally:
        os.close(f.fd)
    assert sum(b.lines for b in batches) == 50
    assert sum(len(b.rows) for b in batches) == 50
    assert batches[-1].end == path.stat().st_size
    assert all(b.lines >= 7 for b in batches[:-1])
    assert [b.end for b in batches] == sorted(b.end for b in batches)
