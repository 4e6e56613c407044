"""The command line as a user meets it: `python -m usaged`, help texts, exit codes, errors.

Help texts are golden files (tests/golden/help-*.txt), regenerated with
`python scripts/regen_golden.py` and reviewed as diffs; docs/cli.md embeds the same texts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import load_regen

from usaged import __version__, cli

regen = load_regen()
REGEN_HINT = "run `python scripts/regen_golden.py` and review the diff"


def usaged(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "usaged", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, **regen.HELP_ENV, **(env or {})}, check=False)


# -- help texts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(regen.COMMANDS))
def test_help_text_matches_its_golden_file(name: str) -> None:
    golden = regen.golden_path(name)
    assert golden.exists(), f"{golden} is missing; {REGEN_HINT}"
    assert regen.help_text(regen.COMMANDS[name]) == golden.read_text(), REGEN_HINT


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                   ) -> set[tuple[str, ...]]:
    found = {prefix}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                found |= _command_paths(sub, (*prefix, word))
    return found


def test_every_command_has_a_golden_help_text() -> None:
    assert _command_paths(cli.build_parser()) == set(regen.COMMANDS.values())


def test_cli_doc_shows_every_current_help_text() -> None:
    doc = regen.CLI_DOC.read_text()
    for name in regen.COMMANDS:
        block = regen.doc_block(name, regen.golden_path(name).read_text())
        assert block in doc, f"docs/cli.md: help block '{name}' is missing or stale; {REGEN_HINT}"


# -- python -m usaged ----------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    done = usaged("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"usaged {__version__}\n"


def test_no_command_prints_the_help_and_exits_2() -> None:
    done = usaged()
    assert done.returncode == 2
    assert done.stdout == regen.golden_path("usaged").read_text()


def test_config_without_an_action_is_a_usage_error() -> None:
    done = usaged("config")
    assert done.returncode == 2
    assert "usage: usaged config" in done.stderr and "ACTION" in done.stderr


@pytest.mark.parametrize("args", [["frobnicate"], ["--frobnicate", "scan"], ["scan", "--fast"],
                                  ["status", "--json", "extra"], ["--log-level", "loud", "scan"]])
def test_unknown_command_or_option_exits_2_with_usage(args: list[str]) -> None:
    done = usaged(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: usaged") and "error:" in done.stderr


# -- errors: one line on stderr, no traceback, a documented exit code ---------------------------

BAD_CONFIGS = {
    "invalid value": ("[budget]\nmonthly_usd = -5\n", "budget.monthly_usd"),
    "not TOML": ("[budget\nmonthly_usd = 5\n", "not valid TOML"),
    "unknown time zone": ('timezone = "Mars/Olympus"\n', "timezone"),
    "missing file": (None, "file not found"),
}


def _one_error_line(done: subprocess.CompletedProcess[str], needle: str, path: Path) -> None:
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("usaged: ") and needle in lines[0] and str(path) in lines[0]


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_scan_with_a_bad_config_exits_2_with_one_line(case: str, tmp_path: Path) -> None:
    text, needle = BAD_CONFIGS[case]
    path = tmp_path / "usaged.toml"
    if text is not None:
        path.write_text(text)
    done = usaged("--config", str(path), "scan")
    assert done.returncode == 2
    assert done.stdout == ""
    _one_error_line(done, needle, path)
    assert not (tmp_path / "state").exists()


# `status` reads with a lenient config where it can; a named file that is missing still fails
@pytest.mark.parametrize("case", ["missing file"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_with_an_unreadable_config_exits_2_with_one_line(case: str, as_json: bool,
                                                                tmp_path: Path) -> None:
    text, needle = BAD_CONFIGS[case]
    path = tmp_path / "usaged.toml"
    if text is not None:
        path.write_text(text)
    done = usaged("--config", str(path), "status", *(["--json"] if as_json else []))
    assert done.returncode == 2
    assert done.stdout == ""
    _one_error_line(done, needle, path)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_with_a_broken_config_file_still_reports_with_a_warning(as_json: bool,
                                                                       tmp_path: Path) -> None:
    text, needle = BAD_CONFIGS["not TOML"]
    path = tmp_path / "usaged.toml"
    path.write_text(text)
    done = usaged("--config", str(path), "status", *(["--json"] if as_json else []))
    assert done.returncode == 3  # never started (found with the default settings)
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == 1 and needle in warnings[0] and "default settings" in warnings[0]
    if as_json:
        assert json.loads(done.stdout)["running"] is False
    else:
        assert done.stdout.startswith("usaged: not running")


def test_usaged_config_env_var_names_the_config(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    done = usaged("status", env={"USAGED_CONFIG": str(path)})
    assert done.returncode == 2
    _one_error_line(done, "file not found", path)


def test_a_bad_now_is_a_usage_error(tmp_path: Path, make_config: Any) -> None:
    cfg = make_config(openclaw=[tmp_path / "oc"])
    done = usaged("--config", str(cfg), "scan", "--now", "last tuesday")
    assert done.returncode == 2
    assert done.stderr == "usaged: --now: not an ISO-8601 date or time: 'last tuesday'\n"


def test_status_of_a_never_started_daemon_exits_3(tmp_path: Path, make_config: Any) -> None:
    cfg = make_config(openclaw=[tmp_path / "oc"])
    done = usaged("--config", str(cfg), "status")
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("usaged: not running (never started here)")
