"""Claude Code session transcripts (`<config dir>/projects/<project-slug>/<sessionId>.jsonl`).

Reference: docs/sources.md and the spec it cites. One usage event per row that carries
`message.usage`: `assistant` rows, and `progress` rows that echo a subagent's assistant row
(sidechain copies). Dedup key: (message.id, requestId), else (message.id, sessionId); rows without
a message id are keyed on (sessionId, timestamp, uuid) and never merge with another row. The
ledger keeps the largest snapshot of a key and drops sidechain replays (Ledger.commit_batch).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from usaged.config import Config
from usaged.parse import (
    cheap_skip,
    count,
    decode_line,
    dedup_key,
    implausible,
    iso_to_epoch,
    money,
    text,
)
from usaged.pricing import normalise_model
from usaged.sources import FileLabel, FolderError, folder_error, real_path
from usaged.values import Skip, SourceName, Tokens, UsageEvent

DEFAULT_DIRS = (".claude", ".config/claude")
PROJECTS = "projects"
SUBAGENTS = "subagents"
SUFFIX = ".jsonl"
SYNTHETIC = "<synthetic>"
PROVIDER = "anthropic"
_USAGE = b'"usage"'


class _Message(msgspec.Struct):
    id: Any = None
    model: Any = None
    usage: Any = None


class _Row(msgspec.Struct):
    """The fields of an assistant row (also the row a progress row embeds)."""

    type: Any = None
    message: _Message | None = None
    requestId: Any = None  # noqa: N815 - the transcript's own field names
    sessionId: Any = None  # noqa: N815
    timestamp: Any = None
    uuid: Any = None
    isSidechain: Any = None  # noqa: N815
    costUSD: Any = None  # noqa: N815


class _ProgressData(msgspec.Struct):
    message: _Row | None = None


class _Line(_Row):
    data: _ProgressData | None = None


_DECODER = msgspec.json.Decoder(_Line)


class ClaudeCodeSource:
    name: SourceName = "claude_code"

    def roots(self, config: Config, env: Mapping[str, str]) -> list[Path]:
        configured = config.get("sources.claude_code.roots")
        if configured is not None:
            raw = [config.expand(r) for r in configured]
        elif env.get("CLAUDE_CONFIG_DIR", "").strip():
            raw = [config.expand(part.strip())
                   for part in env["CLAUDE_CONFIG_DIR"].split(",") if part.strip()]
        else:
            raw = [config.home / d for d in DEFAULT_DIRS]
        return list(dict.fromkeys(real_path(p) for p in raw))

    def discover(self, root: Path, on_error: FolderError | None = None) -> Iterator[Path]:
        """Every *.jsonl under projects/, in path order; symlinked folders are followed, each
        real folder and each real file is visited once (loop-safe)."""
        projects = root / PROJECTS
        seen_dirs: set[tuple[int, int]] = set()
        seen_files: set[tuple[int, int]] = set()
        yield from _walk(projects, seen_dirs, seen_files, on_error)

    def wants(self, path: Path, root: Path) -> bool:
        try:
            rel = path.relative_to(root).parts
        except ValueError:
            return False
        return len(rel) >= 3 and rel[0] == PROJECTS and rel[-1].endswith(SUFFIX)

    def watch_dirs(self, root: Path) -> list[Path]:
        projects = root / PROJECTS
        return [projects] if projects.is_dir() else [root]

    def label(self, path: Path, root: Path) -> FileLabel:
        """agent = project slug; session = file stem, or the parent session of a subagent file
        (`<slug>/<sessionId>/subagents/agent-<id>.jsonl`)."""
        try:
            rel = path.relative_to(root / PROJECTS).parts
        except ValueError:
            rel = path.parts[-2:]
        slug = rel[0] if len(rel) > 1 else path.parent.name
        parents = rel[1:-1]
        if SUBAGENTS in parents:
            index = len(parents) - 1 - parents[::-1].index(SUBAGENTS)
            if index > 0:
                return FileLabel(agent=slug, session=parents[index - 1])
        return FileLabel(agent=slug, session=_stem(path.name))

    def parse_line(self, line: bytes, label: FileLabel) -> UsageEvent | Skip:
        if _USAGE not in line:
            return cheap_skip(line, _DECODER)
        decoded = decode_line(line, _DECODER)
        if isinstance(decoded, Skip):
            return decoded
        row: _Row
        if decoded.type == "assistant":
            row, sidechain = decoded, decoded.isSidechain is True
        elif decoded.type == "progress" and decoded.data is not None \
                and decoded.data.message is not None:
            row, sidechain = decoded.data.message, True
        else:
            return Skip.NO_USAGE
        return _event(row, decoded, sidechain, label)


def _event(row: _Row, outer: _Line, sidechain: bool, label: FileLabel) -> UsageEvent | Skip:
    msg = row.message
    if msg is None or not isinstance(msg.usage, dict):
        return Skip.NO_USAGE
    model = text(msg.model, "unknown")
    if model == SYNTHETIC:
        return Skip.NOT_A_CALL
    tokens = usage_tokens(msg.usage)
    line_cost = money(row.costUSD)
    if implausible(tokens, line_cost):
        return Skip.BAD_VALUE
    if tokens.total == 0 and tokens.web_search == 0 and not line_cost:
        return Skip.NOT_A_CALL
    session = text(row.sessionId) or text(outer.sessionId) or label.session
    timestamp = row.timestamp if row.timestamp is not None else outer.timestamp
    msg_id = text(msg.id) or None
    request_id = text(row.requestId) or None
    return UsageEvent(
        key=event_key(msg_id, request_id, session, timestamp, row.uuid),
        source="claude_code",
        ts=iso_to_epoch(timestamp),
        agent=label.agent,
        session=label.session,
        provider=PROVIDER,
        model=normalise_model(model) or "unknown",
        tokens=tokens,
        line_cost=line_cost,
        msg_id=msg_id,
        request_id=request_id,
        sidechain=sidechain,
    )


def usage_tokens(usage: dict[str, Any]) -> Tokens:
    """Token counts of a `message.usage` object. `cache_write` is every cache write; the
    `cache_creation` breakdown says how much of it was written with a 1-hour TTL."""
    cache_write = count(usage.get("cache_creation_input_tokens"))
    one_hour = 0
    breakdown = usage.get("cache_creation")
    if isinstance(breakdown, dict):
        five_minute = count(breakdown.get("ephemeral_5m_input_tokens"))
        one_hour = count(breakdown.get("ephemeral_1h_input_tokens"))
        cache_write = max(cache_write, five_minute + one_hour)
    server_tools = usage.get("server_tool_use")
    searches = count(server_tools.get("web_search_requests")) \
        if isinstance(server_tools, dict) else 0
    return Tokens(
        input=count(usage.get("input_tokens")),
        output=count(usage.get("output_tokens")),
        cache_read=count(usage.get("cache_read_input_tokens")),
        cache_write=cache_write,
        cache_write_1h=min(one_hour, cache_write),
        web_search=searches,
    )


def event_key(msg_id: str | None, request_id: str | None, session: str, timestamp: Any,
              uuid: Any) -> int:
    """(message.id, requestId), else (message.id, sessionId); a row without a message id is
    its own call, keyed on what identifies the row itself so that reading it again matches."""
    if msg_id and request_id:
        return dedup_key("claude_code", "req", msg_id, request_id)
    if msg_id:
        return dedup_key("claude_code", "session", msg_id, session)
    return dedup_key("claude_code", "row", session, timestamp, uuid)


def _walk(folder: Path, seen_dirs: set[tuple[int, int]], seen_files: set[tuple[int, int]],
          on_error: FolderError | None) -> Iterator[Path]:
    """Files of a folder first (sessions before their subagents), then its subfolders."""
    try:
        st = folder.stat()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        folder_error(folder, exc, on_error)
        return
    if (st.st_dev, st.st_ino) in seen_dirs:
        return
    seen_dirs.add((st.st_dev, st.st_ino))
    subfolders: list[Path] = []
    for entry in entries:
        try:
            if entry.is_dir():  # follows symlinks
                subfolders.append(folder / entry.name)
                continue
            if not entry.name.endswith(SUFFIX):
                continue
            fst = entry.stat()  # follows symlinks: one stat tells a regular file and its inode
        except OSError:
            continue
        if not stat.S_ISREG(fst.st_mode):
            continue
        if (fst.st_dev, fst.st_ino) not in seen_files:
            seen_files.add((fst.st_dev, fst.st_ino))
            yield folder / entry.name  # cheaper than parsing entry.path again
    for sub in subfolders:
        yield from _walk(sub, seen_dirs, seen_files, on_error)


def _stem(name: str) -> str:
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


SOURCE = ClaudeCodeSource()
__all__ = ["SOURCE", "ClaudeCodeSource", "event_key", "usage_tokens"]
