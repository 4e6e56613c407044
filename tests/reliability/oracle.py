"""The oracle: a tiny, slow, independent implementation of the counting rules.

Written from shared/spec/openclaw-sessions.md alone; it imports nothing from usaged, so a bug in
usaged's parser, tailer or ledger cannot hide in both. It reads whole lines (as the Writer saw
them on disk) and applies: one usage event per assistant message line with non-zero tokens or a
cost; dedup key (id, entry timestamp, message timestamp) across all files; tokens = the sum of
the four kinds; cost = `usage.cost.total` when it is a finite number >= 0.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHIVE = re.compile(r"\.jsonl\.(deleted|reset|bak)\.[^/]+$")
KINDS = {
    "input": ("input", "input_tokens", "prompt_tokens"),
    "output": ("output", "output_tokens", "completion_tokens"),
    "cache_read": ("cacheRead", "cache_read_input_tokens"),
    "cache_write": ("cacheWrite", "cache_creation_input_tokens"),
}


@dataclass(frozen=True)
class Totals:
    calls: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0
    unpriced_calls: int = 0

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def same(self, other: Totals) -> bool:
        """Equal, with float cost compared to 1e-9 per call (sums in another order)."""
        ints = ("calls", "input", "output", "cache_read", "cache_write", "unpriced_calls")
        return all(getattr(self, k) == getattr(other, k) for k in ints) and math.isclose(
            self.cost, other.cost, rel_tol=1e-12, abs_tol=1e-9 * max(1, self.calls))

    @classmethod
    def of_doc(cls, doc: dict[str, Any]) -> Totals:
        """The all-time figures of a usage.json document."""
        w = doc["windows"]["all_time"]
        t = w["tokens"]
        return cls(w["calls"], t["input"], t["output"], t["cache_read"], t["cache_write"],
                   float(w["cost_usd"]), w["unpriced_calls"])


@dataclass(frozen=True)
class Usage:
    key: tuple[str, str, str]
    input: int
    output: int
    cache_read: int
    cache_write: int
    cost: float | None

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


def counts_name(name: str) -> bool:
    """The file-name table of the spec: sessions, topics, forks, probes and archives count."""
    if name.startswith("sessions.json") or name.endswith((".lock", ".tmp")):
        return False
    return name.endswith(".jsonl") or ARCHIVE.search(name) is not None


def counted_path(root: Path, path: Path) -> bool:
    """`<root>/agents/<agent>/sessions/<name>` with a name that counts, and a regular file."""
    try:
        rel = path.relative_to(root).parts
    except ValueError:
        return False
    if len(rel) != 4 or rel[0] != "agents" or rel[2] != "sessions" or not counts_name(rel[3]):
        return False
    return path.is_file()


def complete_lines(data: bytes) -> list[bytes]:
    """The newline-terminated lines, cleaned as a reader must: CR, leading NULs, a BOM."""
    out = []
    for raw in data.split(b"\n")[:-1]:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        line = line.lstrip(b"\x00")
        if line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        out.append(line)
    return out


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value) and value > 0:
        return int(value)
    return 0


def _first(usage: dict[str, Any], names: tuple[str, ...]) -> int:
    for name in names:
        if usage.get(name) is not None:
            return _count(usage[name])
    return 0


def usage_of(line: bytes) -> Usage | None:
    """The usage event of one cleaned line, or None."""
    try:
        obj = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("type") != "message":
        return None
    msg = obj.get("message")
    if not isinstance(msg, dict) or msg.get("role") != "assistant":
        return None
    usage = msg.get("usage")
    if not isinstance(usage, dict):
        return None
    kinds = {k: _first(usage, names) for k, names in KINDS.items()}
    cost_obj = usage.get("cost")
    total = cost_obj.get("total") if isinstance(cost_obj, dict) else None
    cost = (float(total) if isinstance(total, int | float) and not isinstance(total, bool)
            and math.isfinite(total) and total >= 0 else None)
    if sum(kinds.values()) == 0 and not cost:
        return None
    key = tuple("" if v is None else str(v)
                for v in (obj.get("id"), obj.get("timestamp"), msg.get("timestamp")))
    return Usage(key, cost=cost, **kinds)  # type: ignore[arg-type]


def expected(lines: Iterable[bytes]) -> Totals:
    """Dedup by key across everything (a repeated key keeps its largest snapshot), then add up."""
    events: dict[tuple[str, str, str], Usage] = {}
    for line in lines:
        u = usage_of(line)
        if u is not None and (u.key not in events or u.tokens > events[u.key].tokens):
            events[u.key] = u
    priced = [u for u in events.values() if u.cost is not None]
    return Totals(
        calls=len(events),
        input=sum(u.input for u in events.values()),
        output=sum(u.output for u in events.values()),
        cache_read=sum(u.cache_read for u in events.values()),
        cache_write=sum(u.cache_write for u in events.values()),
        cost=math.fsum(u.cost for u in priced if u.cost is not None),
        unpriced_calls=len(events) - len(priced),
    )
