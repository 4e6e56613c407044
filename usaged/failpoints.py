"""Named failpoints for the reliability tests.

`USAGED_FAILPOINTS="name[:n],..."` makes the process SIGKILL itself the n-th time (default: the
first) it reaches the named point; `USAGED_IOFAIL="name:count"` raises ENOSPC at an I/O point
`count` times. Unset in normal use: each check is one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

_hits: dict[str, int] = {}


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


def io_error(name: str) -> None:
    """Raise ENOSPC at the I/O point `name` while its armed count lasts."""
    spec = _spec("USAGED_IOFAIL")
    if name not in spec:
        return
    _hits["io:" + name] = _hits.get("io:" + name, 0) + 1
    if _hits["io:" + name] <= spec[name]:
        raise OSError(errno.ENOSPC, f"injected failure at {name}")
