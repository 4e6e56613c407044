"""Tail: the new complete lines of a transcript since the stored offset, in bounded chunks.

A file's identity (device, inode, a hash of its first bytes and of the bytes just before the
offset) tells an append from a truncation or a replacement; anything but a plain append is read
again from 0 and the ledger's dedup keeps the totals exact.
"""

from __future__ import annotations

import enum
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from usaged.parse import clean_line
from usaged.values import FileCursor, FileIdentity

HEAD_BYTES = 1024
TAIL_BYTES = 64


class Start(enum.Enum):
    NEW = "new"  # never seen: read from 0
    APPEND = "append"  # same file, grown: read from the stored offset
    UNCHANGED = "unchanged"  # nothing to read
    TRUNCATED = "truncated"  # smaller than the offset: read from 0
    REPLACED = "replaced"  # another inode at the path: read from 0
    REWRITTEN = "rewritten"  # same inode, bytes before the offset changed: read from 0


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line: its bytes (no newline, no CR, leading NULs removed), where it starts
    and the offset just after its newline. `too_long` lines carry no bytes."""

    data: bytes
    start: int
    end: int
    too_long: bool = False


@dataclass(frozen=True, slots=True)
class OpenFile:
    fd: int
    dev: int
    ino: int
    size: int
    mtime_ns: int


class NotRegular(OSError):
    """The path is not a regular file (folder, FIFO, socket ...)."""


def open_regular(path: str) -> OpenFile:
    """Open without blocking (a FIFO named *.jsonl must never hang us) and insist on a file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"not a regular file: {path}")
    except BaseException:
        os.close(fd)
        raise
    return OpenFile(fd=fd, dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def identity_at(fd: int, dev: int, ino: int, offset: int) -> FileIdentity:
    head = os.pread(fd, min(HEAD_BYTES, offset), 0) if offset else b""
    tail_from = max(0, offset - TAIL_BYTES)
    tail = os.pread(fd, offset - tail_from, tail_from) if offset else b""
    return FileIdentity(dev=dev, ino=ino, head_hash=_hash(head), tail_hash=_hash(tail))


def plan_start(f: OpenFile, cursor: FileCursor | None) -> Start:
    """Where reading must begin, given what the ledger remembers of this path."""
    if cursor is None:
        return Start.NEW
    ident = cursor.identity
    if (f.dev, f.ino) != (ident.dev, ident.ino):
        return Start.REPLACED
    if f.size < cursor.offset:
        return Start.TRUNCATED
    if f.size == cursor.size and f.mtime_ns == cursor.mtime_ns and f.size == cursor.offset:
        return Start.UNCHANGED
    now = identity_at(f.fd, f.dev, f.ino, cursor.offset)
    if now.head_hash != ident.head_hash or now.tail_hash != ident.tail_hash:
        return Start.REWRITTEN
    return Start.UNCHANGED if f.size == cursor.offset else Start.APPEND


def iter_lines(fd: int, start: int, chunk: int, max_line: int) -> Iterator[Line]:
    """Complete lines from `start` to the last newline; a trailing partial line is left unread.

    Memory stays bounded by `chunk + max_line`: a longer line is skipped (yielded as too_long).
    """
    read_pos = start
    line_start = start
    pending = bytearray()
    skipping = False
    while True:
        data = os.pread(fd, chunk, read_pos)
        if not data:
            return
        base = read_pos
        read_pos += len(data)
        i = 0
        while True:
            j = data.find(b"\n", i)
            if j < 0:
                if not skipping:
                    pending += data[i:]
                    if len(pending) > max_line:
                        skipping = True
                        pending.clear()
                break
            end = base + j + 1
            if skipping:
                skipping = False
                yield Line(b"", line_start, end, too_long=True)
            else:
                if pending:
                    pending += data[i:j]
                    raw = bytes(pending)
                    pending.clear()
                else:
                    raw = data[i:j]
                if len(raw) > max_line:
                    yield Line(b"", line_start, end, too_long=True)
                else:
                    yield Line(clean_line(raw), line_start, end)
            line_start = end
            i = j + 1


@dataclass(frozen=True, slots=True)
class Block:
    """Complete lines `data[lo:hi]` (`hi` just after a newline) starting at file offset `start`;
    or, when `too_long`, one line longer than the limit, without its bytes, spanning
    `hi - lo` bytes from `start`."""

    data: bytes
    lo: int
    hi: int
    start: int
    too_long: bool = False

    @property
    def end(self) -> int:
        """The offset just after the block's last newline."""
        return self.start + self.hi - self.lo


def iter_blocks(fd: int, start: int, chunk: int, max_line: int) -> Iterator[Block]:
    """The same complete lines as `iter_lines`, a block of whole lines per read.

    One `pread` of `chunk` bytes gives one block (no copy of the bytes); a line that spans reads
    comes as a block of its own, a line longer than `max_line` as a `too_long` block without its
    bytes. Memory stays bounded by about `2 * chunk + max_line`.
    """
    read_pos = start
    pending = bytearray()  # the beginning of a line that continues past the last read
    pending_start = start
    skipping = False
    while True:
        data = os.pread(fd, chunk, read_pos)
        if not data:
            return
        base = read_pos
        read_pos += len(data)
        first = data.find(b"\n")
        if first < 0:
            if not skipping:
                pending += data
                if len(pending) > max_line:
                    skipping = True
                    pending.clear()
            continue
        lo = 0
        if skipping or pending:
            end = base + first + 1
            if not skipping:
                pending += data[:first + 1]
                skipping = len(pending) - 1 > max_line
                if not skipping:
                    yield Block(bytes(pending), 0, len(pending), pending_start)
                pending.clear()
            if skipping:
                yield Block(b"", 0, end - pending_start, pending_start, too_long=True)
                skipping = False
            lo = first + 1
        last = data.rfind(b"\n")
        if last + 1 > lo:
            yield Block(data, lo, last + 1, base + lo)
        pending_start = base + last + 1
        if len(data) - last - 1 > max_line:
            skipping = True
        else:
            pending += data[last + 1:]
