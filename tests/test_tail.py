"""Tail: complete lines only, any chunking gives the same lines, bounded memory, identity."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from usaged.tail import Start, identity_at, iter_lines, open_regular, plan_start
from usaged.values import FileCursor


def lines_of(path: Path, start: int = 0, chunk: int = 1 << 20, max_line: int = 1 << 20
             ) -> list[tuple[bytes, int, int, bool]]:
    f = open_regular(str(path))
    try:
        return [(ln.data, ln.start, ln.end, ln.too_long)
                for ln in iter_lines(f.fd, start, chunk, max_line)]
    finally:
        os.close(f.fd)


def test_partial_last_line_is_left_for_later(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a":1}\n{"b":')
    assert lines_of(p) == [(b'{"a":1}', 0, 8, False)]
    with p.open("ab") as fh:
        fh.write(b'2}\n')
    assert lines_of(p, start=8) == [(b'{"b":2}', 8, 16, False)]


def test_crlf_and_leading_nul_bytes_are_removed(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a":1}\r\n\x00\x00\x00{"b":2}\n')
    assert [ln[0] for ln in lines_of(p)] == [b'{"a":1}', b'{"b":2}']


def test_too_long_line_is_skipped_without_holding_it(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a":1}\n' + b"x" * 5000 + b'\n{"b":2}\n')
    got = lines_of(p, chunk=64, max_line=1000)
    assert [(d, t) for d, _, _, t in got] == [(b'{"a":1}', False), (b"", True),
                                              (b'{"b":2}', False)]
    assert got[1][1:3] == (8, 5009)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       st.integers(min_value=1, max_value=50), st.binary(max_size=10))
def test_any_chunk_size_gives_the_same_lines(tmp_path_factory: object, lines: list[bytes],
                                             chunk: int, tail: bytes) -> None:
    folder = tmp_path_factory.mktemp("chunks")  # type: ignore[attr-defined]
    p = folder / "a.jsonl"
    body = b"".join(ln + b"\n" for ln in lines) + tail.replace(b"\n", b"")
    p.write_bytes(body)
    whole = lines_of(p, chunk=1 << 16, max_line=1 << 16)
    assert lines_of(p, chunk=chunk, max_line=1 << 16) == whole
    expected = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    assert [w[0] for w in whole] == [ln.lstrip(b"\x00") for ln in expected]


def _cursor(path: Path, offset: int) -> FileCursor:
    f = open_regular(str(path))
    try:
        ident = identity_at(f.fd, f.dev, f.ino, offset)
        return FileCursor(str(path), "openclaw", ident, offset, f.size, f.mtime_ns)
    finally:
        os.close(f.fd)


def _plan(path: Path, cursor: FileCursor | None) -> Start:
    f = open_regular(str(path))
    try:
        return plan_start(f, cursor)
    finally:
        os.close(f.fd)


def test_plan_tells_append_from_truncation_and_rewrite(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"a":1}\n{"b":2}\n')
    cur = _cursor(p, 16)
    assert _plan(p, None) is Start.NEW
    assert _plan(p, cur) is Start.UNCHANGED
    with p.open("ab") as fh:
        fh.write(b'{"c":3}\n')
    assert _plan(p, cur) is Start.APPEND
    os.truncate(p, 0)
    assert _plan(p, cur) is Start.TRUNCATED
    # truncated and regrown PAST the old offset: only the hash before the offset can tell
    p.write_bytes(b'{"x":9}\n{"y":8}\n{"z":7}\n')
    assert _plan(p, cur) is Start.REWRITTEN
    q = tmp_path / "b.jsonl"
    q.write_bytes(b'{"a":1}\n{"b":2}\n{"c":3}\n')
    os.replace(q, p)
    assert _plan(p, cur) is Start.REPLACED
