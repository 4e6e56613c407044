"""Named failpoints for the reliability tests.

`USAGED_FAILPOINTS="name[:n],..."` makes the process SIGKILL itself the n-th time (default: the
first) it reaches the named point; `USAGED_IOFAIL="name:count[@after],..."` makes an I/O point
fail `count` times (after letting the first `after` pass): `io_error` points raise ENOSPC,
`db_error` points raise what SQLite raises on a full disk. Unset in normal use: each check is
one dictionary lookup.

Points: after_read_before_commit, ledger_before_commit (every ledger write, before COMMIT),
after_commit, before_output_rename (kill); write_output, watch_handler, watch_schedule (OSError);
ledger_write (every ledger write transaction, sqlite3.OperationalError SQLITE_FULL).
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3

_hits: dict[str, int] = {}
SQLITE_FULL = 13


def _spec(var: str) -> dict[str, int]:
    raw = os.environ.get(var, "")
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, _, n = item.partition(":")
        out[name] = int(n) if n.isdigit() else 1
    return out


def hit(name: str) -> None:
    """SIGKILL this process if the failpoint `name` is armed and its count is reached."""
    spec = _spec("USAGED_FAILPOINTS")
    if name not in spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= spec[name]:
        os.kill(os.getpid(), signal.SIGKILL)


def _io_armed(name: str) -> bool:
    raw = os.environ.get("USAGED_IOFAIL", "")
    for item in filter(None, (p.strip() for p in raw.split(","))):
        point, _, rest = item.partition(":")
        if point != name:
            continue
        count, _, after = rest.partition("@")
        n = _hits["io:" + name] = _hits.get("io:" + name, 0) + 1
        skip = int(after) if after.isdigit() else 0
        return skip < n <= skip + (int(count) if count.isdigit() else 1)
    return False


def io_error(name: str) -> None:
    """Raise ENOSPC at the I/O point `name` while its armed count lasts."""
    if _io_armed(name):
        raise OSError(errno.ENOSPC, f"injected failure at {name}")


def db_error(name: str) -> None:
    """Raise SQLite's "database or disk is full" at the point `name` while its count lasts."""
    if _io_armed(name):
        exc = sqlite3.OperationalError(f"database or disk is full (injected at {name})")
        exc.sqlite_errorcode = SQLITE_FULL
        exc.sqlite_errorname = "SQLITE_FULL"
        raise exc
