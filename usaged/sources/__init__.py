"""Sources: where transcripts live and how one line becomes a usage event.

Each source is one module exposing a `SOURCE` object that satisfies `Source`. Adding a third
source means adding one module here and naming it in `ALL`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from usaged.config import Config
from usaged.values import Skip, SourceName, UsageEvent


@dataclass(frozen=True, slots=True)
class FileLabel:
    """Who a transcript belongs to: agent (OpenClaw) or project (Claude Code), and session."""

    agent: str
    session: str


class Source(Protocol):
    name: SourceName

    def roots(self, config: Config, env: Mapping[str, str]) -> list[Path]:
        """The folders this source reads, resolved to real paths where they exist."""

    def discover(self, root: Path, on_error: FolderError | None = None) -> Iterator[Path]:
        """Every transcript file under `root` that this source counts. A folder that exists but
        cannot be listed (permission denied) is reported to `on_error`, never skipped silently."""

    def wants(self, path: Path, root: Path) -> bool:
        """Whether a path (seen in an event) is a transcript this source counts."""

    def watch_dirs(self, root: Path) -> list[Path]:
        """The folders to watch recursively for this root."""

    def label(self, path: Path, root: Path) -> FileLabel:
        """Agent / project and session of a transcript file."""

    def parse_line(self, line: bytes, label: FileLabel) -> UsageEvent | Skip:
        """One complete line (no newline) -> a usage event or why there is none."""


FolderError = Callable[[Path, OSError], None]


def folder_error(folder: Path, exc: OSError, on_error: FolderError | None) -> None:
    """Report an unlistable folder; a missing one (or a file where a folder was expected) is
    simply not there."""
    if on_error is not None and not isinstance(exc, FileNotFoundError | NotADirectoryError):
        on_error(folder, exc)


def real_path(path: Path) -> Path:
    """Follow symlinks (a legacy `~/.clawdbot` link, a linked config dir) to the real folder,
    when it exists; otherwise the path as given."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        return path


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (symlinks followed); False for folders, FIFOs, dangling links."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def enabled_sources(config: Config) -> list[Source]:
    from usaged.sources import openclaw

    table: dict[str, Source] = {"openclaw": openclaw.SOURCE}
    try:
        from usaged.sources import claude_code
    except ImportError:  # pragma: no cover - until the module exists
        pass
    else:
        table["claude_code"] = claude_code.SOURCE
    return [src for name, src in table.items() if config.get(f"sources.{name}.enabled")]
