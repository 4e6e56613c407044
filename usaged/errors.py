"""The one exception family. Every message names the file, key or line it is about.

The CLI maps each class to a documented exit code (see docs/cli.md):
0 done, 1 runtime failure, 2 bad usage or config, 3 daemon not running (status only).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


class UsagedError(Exception):
    """Base class: a failure usaged can explain in one line."""

    exit_code = EXIT_FAILURE


class ConfigError(UsagedError):
    """The config file is unreadable or holds an invalid value."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str, key: str | None, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(f"{where}{reason}")


class UsageError(UsagedError):
    """The command line was wrong."""

    exit_code = EXIT_USAGE


class StateError(UsagedError):
    """The state database cannot be used (corrupt, newer schema, unwritable)."""


class AlreadyRunning(UsagedError):
    """Another daemon holds the state lock."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"already running (pid {pid if pid is not None else 'unknown'})")


class ServiceError(UsagedError):
    """Installing or removing the launchd agent / systemd unit failed."""
