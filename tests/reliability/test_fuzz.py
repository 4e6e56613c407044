"""Fuzzing the line parsers (hypothesis): no input makes them raise, none stops the daemon.

Arbitrary bytes, and JSON shaped like transcript lines with arbitrary values in every field
(huge, negative, non-finite, wrong types) and bytes flipped. The results are checked as well:
an event's figures are within what the ledger can sum (a poison line used to overflow SQLite's
64-bit integers and crash every start).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usaged.parse import MAX_COST, MAX_COUNT
from usaged.sources import FileLabel, claude_code, openclaw
from usaged.values import Skip, UsageEvent

from .conftest import DaemonFactory, Writer, size_marks, sized

SOURCES = {"openclaw": openclaw.SOURCE, "claude_code": claude_code.SOURCE}
LABEL = FileLabel(agent="main", session="s1")
pytestmark = size_marks(120, 1800)
EXAMPLES = sized(1000, 20_000)  # arbitrary bytes, per source
SHAPED = sized(400, 5000)  # transcript-shaped garbage, per source (slower to generate)
FIELDS = ["type", "id", "parentId", "timestamp", "message", "role", "provider", "model", "usage",
          "input", "output", "cacheRead", "cacheWrite", "totalTokens", "cost", "total",
          "input_tokens", "output_tokens", "cache_read_input_tokens",
          "cache_creation_input_tokens", "cache_creation", "ephemeral_1h_input_tokens",
          "server_tool_use", "web_search_requests", "requestId", "sessionId", "isSidechain",
          "costUSD", "uuid", "data", "stopReason"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["assistant", "message", "progress", "user"]),
    st.integers(min_value=2**62, max_value=2**70), st.just(1e308))
JSONISH = st.recursive(VALUES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=8)),
    max_leaves=40)


def check(result: UsageEvent | Skip) -> None:
    assert isinstance(result, UsageEvent | Skip)
    if isinstance(result, UsageEvent):
        t = result.tokens
        assert all(0 <= v <= MAX_COUNT for v in (t.input, t.output, t.cache_read,
                                                 t.cache_write, t.web_search))
        assert result.line_cost is None or 0 <= result.line_cost <= MAX_COST


@pytest.mark.parametrize("name", sorted(SOURCES))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_parse_line_never_raises_on_arbitrary_bytes(name: str, data: bytes) -> None:
    check(SOURCES[name].parse_line(data, LABEL))


def _line(doc: Any, assistant: bool) -> bytes:
    if assistant and isinstance(doc, dict):  # steer many examples into the usage path
        doc = {"type": "message", "message": {"role": "assistant", "usage": doc}, **doc}
    return json.dumps(doc, allow_nan=True).encode()


@pytest.mark.parametrize("name", sorted(SOURCES))
@settings(max_examples=SHAPED, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=JSONISH, assistant=st.booleans(), flips=st.lists(st.tuples(
    st.integers(0, 10_000), st.integers(0, 255)), max_size=3))
def test_parse_line_never_raises_on_transcript_shaped_garbage(
        name: str, doc: Any, assistant: bool, flips: list[tuple[int, int]]) -> None:
    line = bytearray(_line(doc, assistant))
    check(SOURCES[name].parse_line(bytes(line), LABEL))
    for where, byte in flips:  # and with stray bytes in it
        line[where % len(line)] = byte
    check(SOURCES[name].parse_line(bytes(line).replace(b"\n", b" "), LABEL))


def test_poison_usage_figures_are_bad_lines_not_a_crash() -> None:
    huge = {"type": "message", "id": "a1", "timestamp": "2026-11-30T10:00:00Z",
            "message": {"role": "assistant", "provider": "p", "model": "m", "timestamp": 1,
                        "usage": {"input": 2**62, "output": 2**62, "cost": {"total": 1.0}}}}
    assert openclaw.SOURCE.parse_line(json.dumps(huge).encode(), LABEL) is Skip.BAD_VALUE
    huge["message"]["usage"] = {"input": 5, "cost": {"total": 1e300}}
    assert openclaw.SOURCE.parse_line(json.dumps(huge).encode(), LABEL) is Skip.BAD_VALUE


@pytest.mark.e2e
def test_a_file_of_random_bytes_never_stops_the_daemon(writer: Writer,
                                                       daemon: DaemonFactory) -> None:
    rng = random.Random(5)
    path = writer.session("noise.jsonl")
    writer.append(path, writer.line())
    d = daemon(writer.root, "native")
    noise = bytearray(os.urandom(sized(1, 8) << 20))
    for _ in range(len(noise) // 300):  # lines of random length, some very long
        noise[rng.randrange(len(noise))] = 0x0A
    writer.raw(path, bytes(noise) + b"\n")
    poison = json.loads(writer.line())
    poison["message"]["usage"]["input"] = 2**62
    writer.raw(path, (json.dumps(poison) + "\n").encode() * 3)
    writer.history.difference_update({json.dumps(poison).encode()})  # a bad line, not usage
    writer.append(path, *writer.lines(3))
    doc = d.assert_matches(writer)
    assert doc["windows"]["all_time"]["calls"] == 4
    assert doc["daemon"]["bad_lines"] > 100
    assert len(d.events("daemon_started")) == 1
