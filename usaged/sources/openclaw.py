"""OpenClaw / Clawdbot / Moltbot session transcripts (pi session format v3).

Reference: docs/sources.md and the counting rules it cites. One usage event per assistant line
with non-zero tokens or a cost; dedup key (entry id, entry timestamp, message timestamp).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from usaged.config import Config
from usaged.parse import (
    decode_line,
    dedup_key,
    first_count,
    implausible,
    iso_to_epoch,
    money,
    ms_to_epoch,
    text,
)
from usaged.sources import FileLabel, FolderError, folder_error, is_regular_file, real_path
from usaged.values import Skip, SourceName, Tokens, UsageEvent

LEGACY_DIRS = (".clawdbot", ".moltbot", ".moldbot")
FORK = re.compile(r"^\d{4}-\d{2}-\d{2}T[\d-]+(?:\.\d+)?Z_(.+)$")
ARCHIVE = re.compile(r"\.jsonl\.(deleted|reset|bak)\.[^/]+$")
IGNORED_SUFFIXES = (".lock", ".tmp")


class _Message(msgspec.Struct):
    role: Any = None
    provider: Any = None
    model: Any = None
    usage: Any = None
    timestamp: Any = None
    stopReason: Any = None  # noqa: N815 - the transcript's own field name


class _Line(msgspec.Struct):
    type: Any = None
    id: Any = None
    timestamp: Any = None
    message: _Message | None = None


_DECODER = msgspec.json.Decoder(_Line)


class OpenClawSource:
    name: SourceName = "openclaw"

    def roots(self, config: Config, env: Mapping[str, str]) -> list[Path]:
        configured = config.get("sources.openclaw.roots")
        if configured is not None:
            return [real_path(config.expand(r)) for r in configured]
        return [real_path(state_dir(env, config.home))]

    def discover(self, root: Path, on_error: FolderError | None = None) -> Iterator[Path]:
        agents = root / "agents"
        try:
            agent_dirs = sorted(os.scandir(agents), key=lambda e: e.name)
        except OSError as exc:
            folder_error(agents, exc, on_error)
            return
        for agent in agent_dirs:
            sessions = Path(agent.path) / "sessions"
            try:
                names = sorted(e.name for e in os.scandir(sessions))
            except OSError as exc:
                folder_error(sessions, exc, on_error)
                continue
            for name in names:
                path = sessions / name
                if counts_name(name) and is_regular_file(path):
                    yield path

    def wants(self, path: Path, root: Path) -> bool:
        try:
            rel = path.relative_to(root).parts
        except ValueError:
            return False
        return len(rel) == 4 and rel[0] == "agents" and rel[2] == "sessions" and counts_name(
            rel[3])

    def watch_dirs(self, root: Path) -> list[Path]:
        agents = root / "agents"
        return [agents] if agents.is_dir() else [root]

    def label(self, path: Path, root: Path) -> FileLabel:
        try:
            agent = path.relative_to(root).parts[1]
        except (ValueError, IndexError):
            agent = path.parent.parent.name
        return FileLabel(agent=agent, session=session_id(path.name))

    def parse_line(self, line: bytes, label: FileLabel) -> UsageEvent | Skip:
        decoded = decode_line(line, _DECODER)
        if isinstance(decoded, Skip):
            return decoded
        msg = decoded.message
        if msg is None or msg.role != "assistant" or not isinstance(msg.usage, dict):
            return Skip.NO_USAGE
        usage: dict[str, Any] = msg.usage
        tokens = Tokens(
            input=first_count(usage, "input", "input_tokens", "prompt_tokens"),
            output=first_count(usage, "output", "output_tokens", "completion_tokens"),
            cache_read=first_count(usage, "cacheRead", "cache_read_input_tokens"),
            cache_write=first_count(usage, "cacheWrite", "cache_creation_input_tokens"),
        )
        cost_obj = usage.get("cost")
        line_cost = money(cost_obj.get("total")) if isinstance(cost_obj, dict) else None
        if implausible(tokens, line_cost):
            return Skip.BAD_VALUE
        if tokens.total == 0 and not line_cost:
            return Skip.NOT_A_CALL
        ts = iso_to_epoch(decoded.timestamp)
        if ts is None:
            ts = ms_to_epoch(msg.timestamp)
        return UsageEvent(
            key=dedup_key("openclaw", decoded.id, _raw(decoded.timestamp), _raw(msg.timestamp)),
            source="openclaw",
            ts=ts,
            agent=label.agent,
            session=label.session,
            provider=text(msg.provider, "unknown"),
            model=text(msg.model, "unknown"),
            tokens=tokens,
            line_cost=line_cost,
        )


def state_dir(env: Mapping[str, str], home: Path) -> Path:
    """OpenClaw's state dir, resolved as OpenClaw itself does."""
    for var in ("OPENCLAW_STATE_DIR", "CLAWDBOT_STATE_DIR"):
        if env.get(var):
            return Path(env[var]).expanduser()
    current = home / ".openclaw"
    if current.exists():
        return current
    for legacy in LEGACY_DIRS:
        if (home / legacy).exists():
            return home / legacy
    return current


def counts_name(name: str) -> bool:
    """The file-name rules: sessions and archives count; index, locks and temp files do not."""
    if name.startswith("sessions.json") or name.endswith(IGNORED_SUFFIXES):
        return False
    return name.endswith(".jsonl") or ARCHIVE.search(name) is not None


def session_id(name: str) -> str:
    """The session a file belongs to: `<ISO>_<uuid>` forks and `<sid>.checkpoint.<id>` copies
    are labelled by their own uuid / session id, archives by the file they were."""
    base = name.split(".jsonl", 1)[0]
    if ".checkpoint." in base:
        base = base.split(".checkpoint.", 1)[0]
    fork = FORK.match(base)
    return fork.group(1) if fork else base


def _raw(value: Any) -> str:
    return "" if value is None else str(value)


SOURCE = OpenClawSource()
__all__ = ["SOURCE", "OpenClawSource", "counts_name", "session_id", "state_dir"]
