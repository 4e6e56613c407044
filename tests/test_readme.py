"""The README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

import re

from conftest import REPO


def commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(python3 -m venv .*?)\n```", text)


def test_readme_has_the_run_and_the_test_command() -> None:
    run, test = commands()
    assert run.endswith("usaged demo")
    assert "pytest" in test and "[test]" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert commands()[1] in ci.splitlines()


def test_example_config_in_config_folder_is_the_shipped_one() -> None:
    shipped = (REPO / "usaged" / "data" / "usaged.example.toml").read_text()
    assert (REPO / "config" / "usaged.example.toml").read_text() == shipped
