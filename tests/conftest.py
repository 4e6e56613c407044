"""Shared fixtures: an isolated home, config factories, transcript-line factories, the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog
import tomli_w

from usaged import cli

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
if not SHARED.exists():  # CI clones the repo beside a copy of shared/
    SHARED = Path(os.environ.get("USAGED_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
CASES = SHARED / "cases"
SHARED_OK = CORPUS.is_dir() and CASES.is_dir()

# The corpus and case tests read the reference data in ../shared (CI lays it beside the clone).
# Without it they are not collected, and the report header says so.
collect_ignore_glob = [] if SHARED_OK else sorted(
    str(p.relative_to(Path(__file__).parent)) for p in Path(__file__).parent.rglob("*.py")
    if p.name != "conftest.py" and any(
        word in p.read_text(encoding="utf-8") for word in ("CORPUS", "CASES", "SHARED")))


def load_regen() -> ModuleType:
    """scripts/regen_golden.py as a module (the goldens and the documented example)."""
    spec = importlib.util.spec_from_file_location("regen_golden",
                                                  REPO / "scripts" / "regen_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_report_header() -> str:
    if SHARED_OK:
        return f"usaged reference data: {SHARED}"
    return (f"usaged reference data: NOT FOUND at {SHARED}: the corpus and case tests are "
            f"skipped ({len(collect_ignore_glob)} files); set USAGED_SHARED to the shared/ "
            "folder to run them")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run full-size soak tests")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                  ) -> Path:
    """Every test gets its own HOME and XDG dirs: nothing touches the real home folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in ("OPENCLAW_STATE_DIR", "CLAWDBOT_STATE_DIR", "CLAUDE_CONFIG_DIR", "USAGED_CONFIG",
                "USAGED_FAILPOINTS", "USAGED_IOFAIL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """The CLI configures structlog per run; never let one test's stream leak into the next."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
              and not t.daemon]
    assert not leaked, f"threads leaked: {leaked}"


ConfigFactory = Callable[..., Path]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Write a config file: state in tmp_path/state, sources as given (others disabled)."""

    def factory(openclaw: list[Path] | None = None, claude: list[Path] | None = None,
                timezone: str = "UTC", **sections: Any) -> Path:
        data: dict[str, Any] = {"timezone": timezone,
                                "paths": {"state_dir": str(tmp_path / "state")}}
        data["sources"] = {
            "openclaw": {"enabled": openclaw is not None,
                         "roots": [str(p) for p in openclaw or []]},
            "claude_code": {"enabled": claude is not None,
                            "roots": [str(p) for p in claude or []]},
        }
        for key, value in sections.items():
            if key == "prices":
                data["prices"] = value
            else:
                data.setdefault(key, {}).update(value)
        path = tmp_path / "usaged.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    return factory


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = cli.main(["--log-format", "json", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def usage_json(tmp_path: Path) -> dict[str, Any]:
    return read_json(tmp_path / "state" / "dashboard" / "usage.json")


_seq = iter(range(1, 1 << 30))


def oc_line(*, input: int = 10, output: int = 20, cache_read: int = 0, cache_write: int = 0,
            cost: float | None = 0.001, ts: str = "2026-01-15T12:00:00.000Z",
            id: str | None = None, provider: str = "anthropic", model: str = "claude-opus-4-5",
            ms: int | None = None) -> bytes:
    """One OpenClaw assistant line with usage (newline-terminated)."""
    n = next(_seq)
    usage: dict[str, Any] = {"input": input, "output": output, "cacheRead": cache_read,
                             "cacheWrite": cache_write,
                             "totalTokens": input + output + cache_read + cache_write}
    if cost is not None:
        usage["cost"] = {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0,
                         "total": cost}
    line = {"type": "message", "id": id or f"{n:08x}", "parentId": None, "timestamp": ts,
            "message": {"role": "assistant", "content": [{"type": "text", "text": "ok"}],
                        "api": "anthropic-messages", "provider": provider, "model": model,
                        "usage": usage, "stopReason": "stop",
                        "timestamp": ms if ms is not None else 1768478400000 + n}}
    return (json.dumps(line) + "\n").encode()


def oc_session(root: Path, name: str = "s1.jsonl", agent: str = "main") -> Path:
    folder = root / "agents" / agent / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start `python -m usaged run` subprocesses; every one is killed at the end of the test."""
    from harness import DaemonProc

    started: list[DaemonProc] = []

    def start(config: Path, env: dict[str, str] | None = None, wait_ready: bool = True
              ) -> DaemonProc:
        proc = DaemonProc(config, tmp_path / "state" / "dashboard" / "usage.json", env)
        started.append(proc)
        return proc.start(wait_ready)

    yield start
    for proc in started:
        proc.cleanup()
