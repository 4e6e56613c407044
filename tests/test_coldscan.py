"""A cold scan in parse workers leaves exactly the ledger a serial scan leaves."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import CASES, CORPUS
from structlog.testing import capture_logs

from usaged import coldscan, pipeline
from usaged.config import load
from usaged.sources import FileLabel


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """Every Claude Code case (one project per case) and both OpenClaw corpora."""
    claude = tmp_path / "claude"
    for case in sorted((CASES / "claude-code").iterdir()):
        projects = case / "claude" / "projects"
        if projects.is_dir():
            for project in projects.iterdir():
                shutil.copytree(project, claude / "projects" / f"{case.name}-{project.name}",
                                symlinks=True)
    openclaw = tmp_path / "openclaw"
    for name in ("openclaw-small", "openclaw-edge"):
        agents = CORPUS / name / "agents"
        for agent in agents.iterdir():
            shutil.copytree(agent, openclaw / "agents" / f"{name}-{agent.name}", symlinks=True)
    return claude, openclaw


def _scan(folder: Path, make_config: Any, claude: Path, openclaw: Path) -> list[Any]:
    cfg = load(make_config(openclaw=[openclaw], claude=[claude]))
    cfg_dir = folder / "state"
    ledger = pipeline.Ledger.open(cfg_dir / "usaged.db")
    try:
        with capture_logs():
            counters = pipeline.Ingestor(cfg, ledger).scan_all()
        q = ledger.conn.execute
        return [counters.events_new, counters.bad_lines, counters.files_read,
                q("SELECT key, source, ts, agent, session, provider, model, input, output, "
                  "cache_read, cache_write, cost, msg_id, request_id, sidechain, path "
                  "FROM events ORDER BY key").fetchall(),
                q("SELECT * FROM buckets ORDER BY 1, 2, 3, 4, 5").fetchall(),
                q("SELECT * FROM sessions ORDER BY 1, 2, 3").fetchall(),
                q("SELECT path, offset, bad_lines, events, head_hash, tail_hash FROM files "
                  "ORDER BY path").fetchall()]
    finally:
        ledger.close()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_parallel_cold_scan_equals_the_serial_one(start: str, tmp_path: Path, make_config: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    claude, openclaw = _tree(tmp_path)
    serial = _scan(tmp_path / "serial", make_config, claude, openclaw)
    monkeypatch.setattr(coldscan, "MIN_BYTES", 0)
    monkeypatch.setattr(coldscan, "_cpus", lambda: 2)
    if start == "spawn":  # what the daemon uses (it has threads)
        monkeypatch.setattr(coldscan.threading, "active_count", lambda: 2)
    calls: list[int] = []
    real = coldscan.ingest_all
    monkeypatch.setattr(coldscan, "ingest_all",
                        lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
    parallel = _scan(tmp_path / "parallel", make_config, claude, openclaw)
    assert calls == [2]
    assert parallel == serial
    assert serial[0] > 0 and serial[3]


def test_a_file_replaced_after_planning_is_read_serially(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":1}\n')
    job = coldscan.Job(str(path), "openclaw", FileLabel("a", "s"), 0, 0, 0, 1 << 20,
                       1 << 20)
    coldscan._start_worker(())
    assert coldscan._read_file(job) is None  # (dev, ino) differ from the plan's
    missing = coldscan.Job(str(tmp_path / "gone.jsonl"), "openclaw",
                           FileLabel("a", "s"), 0, 0, 0, 1 << 20, 1 << 20)
    assert coldscan._read_file(missing) is None


def test_small_catch_ups_are_read_here(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"x\n" * 10)
    root = pipeline.Root(None, tmp_path)  # type: ignore[arg-type]
    assert coldscan.workers_for([(root, path), (root, path)], {}) == 0
