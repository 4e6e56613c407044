"""The Claude Code source: files, parsing, dedup keys, and the ledger's dedup corrections."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import usage_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usaged import config as config_mod
from usaged.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger
from usaged.pricing import make_pricer
from usaged.sources import FileLabel
from usaged.sources.claude_code import SOURCE
from usaged.values import FileCursor, FileIdentity, Skip, Tokens, UsageEvent

NOW = "2027-01-01T00:00:00+00:00"
SLUG = "-home-user-proj"
S1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
S2 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
LABEL = FileLabel(agent=SLUG, session=S1)


def row(*, msg_id: str | None = "msg_01", request_id: str | None = "req_01",
        session: str = S1, ts: str = "2026-03-10T10:00:00.000Z", input: int = 10,
        output: int = 100, cache_read: int = 0, cache_write: int = 0,
        write_1h: int | None = None, web_search: int | None = None,
        model: str = "claude-sonnet-4-5-20250929", sidechain: bool = False,
        uuid: str = "u-1", cost_usd: float | None = None) -> dict[str, Any]:
    """One Claude Code assistant row (as a dict)."""
    usage: dict[str, Any] = {"input_tokens": input, "output_tokens": output,
                             "cache_creation_input_tokens": cache_write,
                             "cache_read_input_tokens": cache_read}
    if write_1h is not None:
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": cache_write - write_1h,
                                   "ephemeral_1h_input_tokens": write_1h}
    if web_search is not None:
        usage["server_tool_use"] = {"web_search_requests": web_search}
    message: dict[str, Any] = {"model": model, "type": "message", "role": "assistant",
                               "content": [{"type": "text", "text": "ok"}], "usage": usage}
    if msg_id is not None:
        message["id"] = msg_id
    out: dict[str, Any] = {"parentUuid": None, "isSidechain": sidechain, "sessionId": session,
                           "type": "assistant", "message": message, "uuid": uuid,
                           "timestamp": ts}
    if request_id is not None:
        out["requestId"] = request_id
    if cost_usd is not None:
        out["costUSD"] = cost_usd
    return out


def progress(inner: dict[str, Any], session: str = S1) -> dict[str, Any]:
    """A parent-file progress row echoing a subagent's assistant row."""
    return {"parentUuid": "p", "isSidechain": False, "sessionId": session, "type": "progress",
            "data": {"type": "agent_progress", "agentId": "a1", "message": inner},
            "uuid": "progress-uuid", "timestamp": "2026-03-10T10:00:05.000Z"}


def encode(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def parse(r: dict[str, Any] | bytes, label: FileLabel = LABEL) -> UsageEvent | Skip:
    line = r if isinstance(r, bytes) else json.dumps(r).encode()
    return SOURCE.parse_line(line, label)


def event(r: dict[str, Any] | bytes, label: FileLabel = LABEL) -> UsageEvent:
    ev = parse(r, label)
    assert isinstance(ev, UsageEvent), ev
    return ev


def transcript(root: Path, session: str = S1, slug: str = SLUG, sub: str | None = None) -> Path:
    folder = root / "projects" / slug
    if sub is not None:
        folder = folder / session / "subagents"
        path = folder / f"agent-{sub}.jsonl"
    else:
        path = folder / f"{session}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    return path


def append(path: Path, *rows: dict[str, Any]) -> None:
    with path.open("ab") as fh:
        fh.write(encode(*rows))


def scan(run: Any, make_config: Any, tmp_path: Path, root: Path) -> dict[str, Any]:
    code, _, err = run("--config", str(make_config(claude=[root])), "scan", "--now", NOW)
    assert code == 0, err
    return usage_json(tmp_path)


def total(doc: dict[str, Any]) -> int:
    return int(doc["windows"]["all_time"]["tokens"]["total"])


# -- parsing -------------------------------------------------------------------------------


def test_assistant_row_becomes_an_anthropic_event_with_a_normalised_model() -> None:
    ev = event(row(model="anthropic/claude-4.6-sonnet", input=3, output=7, cache_read=11,
                   cache_write=13))
    assert ev.source == "claude_code" and ev.provider == "anthropic"
    assert ev.model == "claude-sonnet-4-6"
    assert ev.tokens == Tokens(input=3, output=7, cache_read=11, cache_write=13)
    assert (ev.agent, ev.session) == (SLUG, S1)
    assert (ev.msg_id, ev.request_id, ev.sidechain) == ("msg_01", "req_01", False)
    assert ev.ts == 1773136800.0


def test_one_hour_cache_writes_are_kept_as_their_own_part() -> None:
    ev = event(row(cache_write=50_000, write_1h=40_000))
    assert (ev.tokens.cache_write, ev.tokens.cache_write_1h) == (50_000, 40_000)


def test_cache_write_breakdown_without_total_still_counts() -> None:
    r = row()
    r["message"]["usage"].pop("cache_creation_input_tokens")
    r["message"]["usage"]["cache_creation"] = {"ephemeral_5m_input_tokens": 5,
                                               "ephemeral_1h_input_tokens": 7}
    assert (event(r).tokens.cache_write, event(r).tokens.cache_write_1h) == (12, 7)


def test_web_search_requests_are_counted() -> None:
    assert event(row(web_search=3)).tokens.web_search == 3


def test_cost_recorded_on_an_old_row_is_the_line_cost() -> None:
    assert event(row(cost_usd=0.0123)).line_cost == 0.0123
    assert event(row()).line_cost is None


@pytest.mark.parametrize("r", [
    row(model="<synthetic>", input=0, output=0),
    row(model="<synthetic>", input=5),
    row(input=0, output=0),
], ids=["synthetic", "synthetic-with-usage", "zero-usage"])
def test_synthetic_and_zero_usage_rows_are_not_calls(r: dict[str, Any]) -> None:
    assert parse(r) is Skip.NOT_A_CALL


def test_progress_row_is_a_sidechain_copy_of_the_subagent_row() -> None:
    inner = row(msg_id="msg_sub", request_id="req_sub", sidechain=True, uuid="sub-uuid")
    echo = event(progress(inner))
    direct = event(inner)
    assert echo.sidechain and echo.key == direct.key
    assert (echo.tokens, echo.ts) == (direct.tokens, direct.ts)


@pytest.mark.parametrize("line", [
    b'{"type":"user","message":{"role":"user","content":"hi"}}',
    b'{"type":"file-history-snapshot","snapshot":{}}',
    b'{"type":"summary","summary":"x"}',
], ids=["user", "snapshot", "summary"])
def test_rows_without_usage_are_skipped_without_counting_as_bad(line: bytes) -> None:
    assert parse(line) is Skip.NO_USAGE


@pytest.mark.parametrize("line", [
    json.dumps(row()).encode()[:-40],  # truncated mid-row (carries "usage")
    b"\x01\x02 not json",
    b"[1, 2, 3]",
], ids=["truncated", "garbage", "array"])
def test_malformed_lines_are_bad(line: bytes) -> None:
    result = parse(line)
    assert isinstance(result, Skip) and result.is_bad


def test_blank_line_is_not_bad() -> None:
    assert parse(b"   ") is Skip.BLANK


# -- dedup keys ----------------------------------------------------------------------------


def test_key_is_message_and_request_id_across_sessions() -> None:
    assert event(row(session=S1)).key == event(row(session=S2, ts="2027-01-01T00:00:00Z")).key
    assert event(row(request_id="req_01")).key != event(row(request_id="req_02")).key


def test_key_without_request_id_is_scoped_by_session() -> None:
    a = event(row(msg_id="ocgo", request_id=None, session=S1))
    b = event(row(msg_id="ocgo", request_id=None, session=S2))
    assert a.key != b.key
    assert a.key == event(row(msg_id="ocgo", request_id=None, session=S1, output=999)).key


def test_rows_without_message_id_never_merge_but_rereading_one_matches() -> None:
    a = row(msg_id=None, uuid="u-1")
    assert event(a).key == event(dict(a)).key
    assert event(a).key != event(row(msg_id=None, uuid="u-2")).key


# -- files ---------------------------------------------------------------------------------


def _config(home: Path, roots: list[str] | None = None) -> config_mod.Config:
    data: dict[str, Any] = {"sources": {"claude_code": {"roots": roots}}} if roots else {}
    return config_mod.from_mapping(data, None, home)


def test_default_roots_are_both_config_dirs_under_home(tmp_path: Path) -> None:
    assert SOURCE.roots(_config(tmp_path), {}) == [tmp_path / ".claude",
                                                   tmp_path / ".config" / "claude"]


def test_claude_config_dir_list_replaces_the_defaults(tmp_path: Path) -> None:
    env = {"CLAUDE_CONFIG_DIR": f"{tmp_path}/a, {tmp_path}/b"}
    assert SOURCE.roots(_config(tmp_path), env) == [tmp_path / "a", tmp_path / "b"]


def test_configured_roots_win_over_the_environment(tmp_path: Path) -> None:
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "env")}
    assert SOURCE.roots(_config(tmp_path, ["~/cfg"]), env) == [tmp_path / "cfg"]


def test_discover_walks_projects_with_subagents_and_follows_symlinks_once(
        tmp_path: Path) -> None:
    root = tmp_path / "claude"
    main = transcript(root)
    sub = transcript(root, sub="x1")
    other = transcript(root, slug="-other", session=S2)
    for p in (main, sub, other):
        p.write_bytes(b"")
    (root / "projects" / SLUG / "notes.txt").write_text("no")
    outside = tmp_path / "elsewhere" / "-linked"
    outside.mkdir(parents=True)
    (outside / "cccccccc.jsonl").write_bytes(b"")
    os.symlink(outside, root / "projects" / "-linked")
    os.symlink(outside, root / "projects" / "-linked-again")  # same real files: once
    os.symlink(root / "projects", root / "projects" / SLUG / "loop")  # a loop: safe
    found = list(SOURCE.discover(root))
    assert found == [main, sub, root / "projects" / "-linked" / "cccccccc.jsonl", other]
    assert all(SOURCE.wants(p, root) for p in found)
    assert not SOURCE.wants(root / "projects" / SLUG / "notes.txt", root)


def test_label_is_project_slug_and_session_also_for_subagent_files(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    assert SOURCE.label(transcript(root), root) == FileLabel(SLUG, S1)
    assert SOURCE.label(transcript(root, sub="x1"), root) == FileLabel(SLUG, S1)


def test_watch_dirs_is_projects_when_it_exists(tmp_path: Path) -> None:
    assert SOURCE.watch_dirs(tmp_path) == [tmp_path]
    (tmp_path / "projects").mkdir()
    assert SOURCE.watch_dirs(tmp_path) == [tmp_path / "projects"]


# -- dedup across files and scans (through the ledger) --------------------------------------


def test_growing_snapshot_in_a_later_scan_adds_exactly_the_difference(
        tmp_path: Path, make_config: Any, run: Any) -> None:
    root = tmp_path / "claude"
    path = transcript(root)
    append(path, row(output=2, cache_read=1000))
    first = scan(run, make_config, tmp_path, root)
    assert total(first) == 1012
    append(path, row(output=512, cache_read=1000, ts="2026-03-10T10:00:01.000Z"))
    second = scan(run, make_config, tmp_path, root)
    assert total(second) - total(first) == 510
    assert second["windows"]["all_time"]["calls"] == 1
    assert math.isclose(second["windows"]["all_time"]["cost_usd"],
                        (10 * 3 + 512 * 15 + 1000 * 0.3) / 1e6, abs_tol=1e-12)


def test_smaller_snapshot_arriving_later_changes_nothing(tmp_path: Path, make_config: Any,
                                                         run: Any) -> None:
    root = tmp_path / "claude"
    path = transcript(root)
    append(path, row(output=512))
    first = scan(run, make_config, tmp_path, root)
    append(path, row(output=2, ts="2026-03-10T09:00:00.000Z"))
    assert scan(run, make_config, tmp_path, root)["windows"] == first["windows"]


def test_resumed_session_copy_in_another_file_adds_nothing(tmp_path: Path, make_config: Any,
                                                           run: Any) -> None:
    root = tmp_path / "claude"
    append(transcript(root), row(output=300))
    first = scan(run, make_config, tmp_path, root)
    append(transcript(root, session=S2), row(output=300, session=S2),
           row(msg_id="msg_02", request_id="req_02", session=S2, output=7,
               ts="2026-03-10T11:00:00.000Z"))
    second = scan(run, make_config, tmp_path, root)
    assert total(second) - total(first) == 17
    sessions = {s["session"]: s["tokens"]["total"] for s in second["sessions"]}
    assert sessions == {S1: 310, S2: 17}


def test_progress_echo_and_subagent_file_count_once(tmp_path: Path, make_config: Any,
                                                    run: Any) -> None:
    root = tmp_path / "claude"
    sub_row = row(msg_id="msg_sub", request_id="req_sub", sidechain=True, uuid="s", output=40)
    append(transcript(root), row(output=100), progress(sub_row))
    append(transcript(root, sub="x1"), sub_row)
    doc = scan(run, make_config, tmp_path, root)
    assert total(doc) == 110 + 50
    assert doc["windows"]["all_time"]["calls"] == 2


def test_sidechain_replay_of_a_known_parent_is_dropped(tmp_path: Path, make_config: Any,
                                                       run: Any) -> None:
    root = tmp_path / "claude"
    append(transcript(root), row(output=100))
    append(transcript(root, sub="btw"), row(request_id="req_btw", sidechain=True, output=100,
                                            ts="2026-03-10T10:05:00.000Z"))
    doc = scan(run, make_config, tmp_path, root)
    assert total(doc) == 110
    assert doc["windows"]["all_time"]["calls"] == 1


def test_replay_recognised_only_when_its_parent_arrives_later_is_taken_out(
        tmp_path: Path, make_config: Any, run: Any) -> None:
    root = tmp_path / "claude"
    parent_file = transcript(root)
    parent_file.write_bytes(b"")
    append(transcript(root, sub="btw"), row(request_id="req_btw", sidechain=True, output=100,
                                            ts="2026-03-10T10:05:00.000Z"))
    assert total(scan(run, make_config, tmp_path, root)) == 110  # no parent yet: counted
    append(parent_file, row(output=100), row(msg_id="msg_02", request_id="req_02", output=5))
    doc = scan(run, make_config, tmp_path, root)
    assert total(doc) == 110 + 15  # the replay gave way to its parent, not added to it
    assert doc["windows"]["all_time"]["calls"] == 2
    assert [s["tokens"]["total"] for s in doc["sessions"]] == [125]
    assert sum(d["calls"] for d in doc["daily"]) == 2


def test_sidechain_row_with_the_same_request_id_is_the_same_call(
        tmp_path: Path, make_config: Any, run: Any) -> None:
    root = tmp_path / "claude"
    append(transcript(root), row(output=100))
    append(transcript(root, sub="x"), row(sidechain=True, output=100))
    assert total(scan(run, make_config, tmp_path, root)) == 110


def test_unknown_model_is_priced_once_the_config_names_it(tmp_path: Path, make_config: Any,
                                                        run: Any) -> None:
    root = tmp_path / "claude"
    append(transcript(root), row(model="claude-zeta-9-20301231", input=1000, output=0))
    before = scan(run, make_config, tmp_path, root)["windows"]["all_time"]
    assert (before["unpriced_calls"], before["unpriced_tokens"]) == (1, 1000)
    price = {"provider": "anthropic", "model": "claude-zeta-9-20301231", "input": 2.0}
    code, _, err = run("--config", str(make_config(claude=[root], prices=[price])), "scan",
                       "--now", NOW)
    assert code == 0, err
    after = usage_json(tmp_path)["windows"]["all_time"]
    assert (after["unpriced_calls"], after["cost_usd"]) == (0, 0.002)


# -- the ledger: running sums in step, any order, any batching ------------------------------

_ROWS = [
    row(output=2, cache_read=100, ts="2026-03-10T10:00:00Z", uuid="a"),
    row(output=9, cache_read=100, ts="2026-03-10T10:00:01Z", uuid="b"),
    row(output=512, cache_read=100, ts="2026-03-10T10:00:02Z", uuid="c"),
    row(output=512, cache_read=100, ts="2026-03-10T10:00:02Z", session=S2, uuid="c2"),
    row(msg_id="msg_02", request_id="req_02", output=30, ts="2026-03-10T12:00:00Z", uuid="d"),
    row(request_id="req_btw", sidechain=True, output=512, cache_read=100,
        ts="2026-03-10T13:00:00Z", uuid="e"),
    row(msg_id="ocgo", request_id=None, output=3, ts="2026-03-11T10:00:00Z", uuid="f"),
    row(msg_id="ocgo", request_id=None, output=400, ts="2026-03-11T10:00:01Z", uuid="g"),
    row(msg_id="ocgo", request_id=None, session=S2, output=250, ts="2026-03-11T11:00:00Z",
        uuid="h"),
    row(msg_id=None, request_id=None, output=7, ts="2026-03-12T10:00:00Z", uuid="i"),
    row(msg_id="msg_x", request_id="req_x", model="claude-zeta-9", output=70, uuid="j"),
]
_EXPECTED_TOTAL = (10 + 512 + 100) + (10 + 30) + (10 + 400) + (10 + 250) + (10 + 7) + (10 + 70)


def _commit_all(ledger: Ledger, batches: list[list[dict[str, Any]]]) -> None:
    pricer = make_pricer(())
    ident = FileIdentity(0, 0, b"", b"")
    for i, batch in enumerate(batches):
        label = FileLabel(SLUG, S1)
        events = [pricer.price(event(r, label)) for r in batch]
        ledger.commit_batch(FileCursor(f"/f{i}", "claude_code", ident, 0, 0, 0), events)


def _aggregates(ledger: Ledger) -> tuple[list[Any], list[Any]]:
    buckets = ledger.conn.execute(
        "SELECT q, source, agent, provider, model, calls, input, output, cache_read, "
        "cache_write, round(cost, 9), unpriced_calls, unpriced_tokens FROM buckets "
        "ORDER BY 1, 2, 3, 4, 5").fetchall()
    sessions = ledger.conn.execute(
        "SELECT source, agent, session, calls, input, output, cache_read, cache_write, "
        "round(cost, 9), unpriced_calls, unpriced_tokens FROM sessions ORDER BY 1, 2, 3"
    ).fetchall()
    return buckets, sessions


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(len(_ROWS))), cuts=st.sets(st.integers(1, len(_ROWS) - 1)))
def test_any_order_and_batching_gives_the_same_figures_with_sums_in_step(
        tmp_path: Path, order: list[int], cuts: set[int]) -> None:
    db = tmp_path / f"h{os.getpid()}-{hash((tuple(order), tuple(sorted(cuts))))}.db"
    ledger = Ledger.open(db)
    try:
        rows = [_ROWS[i] for i in order]
        bounds = [0, *sorted(cuts), len(rows)]
        _commit_all(ledger, [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
        running = _aggregates(ledger)
        sums = ledger.conn.execute("SELECT sum(input + output + cache_read + cache_write), "
                                   "count(*) FROM events").fetchone()
        assert tuple(sums) == (_EXPECTED_TOTAL, 6)
        with ledger.transaction():
            ledger._rebuild_aggregates()
        assert _aggregates(ledger) == running
    finally:
        ledger.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


# -- state schema --------------------------------------------------------------------------


def test_version_1_state_is_migrated_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "usaged.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO events (key, source, ts, agent, session, provider, model, input, "
               "output, cache_read, cache_write, cache_write_1h, web_search, cost, "
               "cost_source, path) VALUES (1, 'openclaw', 0, 'a', 's', 'p', 'm', 1, 2, 3, 4, "
               "0, 0, 0.5, 'line', '/x')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    ledger = Ledger.open(path)
    try:
        assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        indexes = {r[0] for r in ledger.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "events_msg_id" in indexes
        assert ledger.stats()["events"] == 1
    finally:
        ledger.close()
