"""`python launcher.py <usaged args>`: the daemon with test-only fault injection installed.

CI runs as root, where `chmod 000` blocks nothing, and the interpreter lives under /root, which
an unprivileged user cannot reach; so permission faults are injected in-process instead:

- USAGED_TEST_DENY=<file>: while <file> exists, each path it lists (one per line; a folder
  covers everything under it) raises PermissionError from os.open / os.scandir / os.stat-free
  reads, exactly as a path without read permission would.
- USAGED_TEST_CLOCK=<file>: time.time() is shifted by the number of seconds in <file> (read on
  every call while it exists): a wall-clock jump. time.monotonic() is left alone.
"""

from __future__ import annotations

import errno
import os
import sys
import time


def _deny_list(control: str) -> tuple[str, ...]:
    try:
        with open(control, encoding="utf-8") as fh:
            return tuple(p.rstrip("/") for p in fh.read().splitlines() if p.strip())
    except FileNotFoundError:
        return ()


def install_deny(control: str) -> None:
    real_open, real_scandir = os.open, os.scandir

    def denied(path: object) -> bool:
        try:
            text = os.fsdecode(path)  # type: ignore[arg-type]
        except TypeError:  # an fd
            return False
        return any(text == p or text.startswith(p + "/") for p in _deny_list(control))

    def guarded_open(path: object, flags: int, *args: object, **kw: object) -> int:
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))  # type: ignore[arg-type]
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    def guarded_scandir(path: object = ".") -> object:
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))  # type: ignore[arg-type]
        return real_scandir(path)  # type: ignore[arg-type]

    os.open = guarded_open  # type: ignore[assignment]
    os.scandir = guarded_scandir  # type: ignore[assignment]


def install_clock(control: str) -> None:
    real_time = time.time

    def shifted() -> float:
        try:
            with open(control, encoding="utf-8") as fh:
                return real_time() + float(fh.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return real_time()

    time.time = shifted


def main() -> int:
    if os.environ.get("USAGED_TEST_DENY"):
        install_deny(os.environ["USAGED_TEST_DENY"])
    if os.environ.get("USAGED_TEST_CLOCK"):
        install_clock(os.environ["USAGED_TEST_CLOCK"])
    from usaged.cli import main as usaged_main

    return usaged_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
