"""`usaged config path | show | init | set | unset`, through the CLI, on a config in tmp_path."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from usaged.config import all_keys, load

EXAMPLE = REPO / "config" / "usaged.example.toml"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "usaged.toml"


def conf(run: Run, path: Path, *args: str) -> tuple[int, str, str]:
    return run("--config", str(path), "config", *args)


def data(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


# -- path -----------------------------------------------------------------------------------


def test_path_prints_the_config_flag(cfg: Path, run: Run) -> None:
    assert conf(run, cfg, "path") == (0, f"{cfg}\n", "")


def test_path_defaults_to_xdg_config_home(isolated_home: Path, run: Run) -> None:
    code, out, _ = run("config", "path")
    assert code == 0
    assert out.strip() == str(isolated_home / "xdg_config_home" / "usaged" / "usaged.toml")


def test_path_follows_usaged_config(tmp_path: Path, run: Run,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGED_CONFIG", str(tmp_path / "env.toml"))
    assert run("config", "path")[1].strip() == str(tmp_path / "env.toml")


# -- init -----------------------------------------------------------------------------------


def test_init_writes_the_documented_example(cfg: Path, run: Run) -> None:
    code, out, _ = conf(run, cfg, "init")
    assert code == 0
    assert out.strip() == f"wrote {cfg}"
    assert cfg.read_bytes() == EXAMPLE.read_bytes()
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o644
    assert load(str(cfg), cfg.parent).warnings == ()


def test_init_refuses_to_overwrite_without_force(cfg: Path, run: Run) -> None:
    cfg.parent.mkdir()
    cfg.write_text("[budget]\nmonthly_usd = 75\n")
    code, out, err = conf(run, cfg, "init")
    assert code == 2
    assert out == ""
    assert err.strip() == f"usaged: {cfg}: already exists (use --force to overwrite)"
    assert cfg.read_text() == "[budget]\nmonthly_usd = 75\n"


def test_init_force_overwrites(cfg: Path, run: Run) -> None:
    cfg.parent.mkdir()
    cfg.write_text("[budget]\nmonthly_usd = 75\n")
    assert conf(run, cfg, "init", "--force")[0] == 0
    assert cfg.read_bytes() == EXAMPLE.read_bytes()


# -- show -----------------------------------------------------------------------------------


def shown_keys(text: str) -> dict[str, str]:
    """`show` output as {dotted key: shown value}."""
    keys: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("[") and not line.startswith("[["):
            section = line.strip("[]")
        elif " = " in line and not line.startswith("#"):
            name, _, value = line.partition(" = ")
            keys[f"{section}.{name}" if section else name] = value
    return keys


def test_show_lists_every_schema_key(cfg: Path, run: Run) -> None:
    code, out, _ = conf(run, cfg, "show")
    assert code == 2  # a named file that does not exist
    cfg.parent.mkdir()
    cfg.write_text("")
    code, out, _ = conf(run, cfg, "show")
    assert code == 0
    assert out.startswith(f"# config file: {cfg}\n")
    keys = shown_keys(out)
    assert list(keys) == list(all_keys())
    assert all(v.endswith("  # default") for v in keys.values()), keys


def test_show_without_a_file_shows_the_defaults(run: Run) -> None:
    code, out, _ = run("config", "show")
    assert code == 0
    assert out.startswith("# config file: (none: all defaults)")
    assert list(shown_keys(out)) == list(all_keys())


def test_show_marks_values_that_differ_from_the_default(cfg: Path, run: Run) -> None:
    conf(run, cfg, "init")
    conf(run, cfg, "set", "budget.monthly_usd", "50")
    keys = shown_keys(conf(run, cfg, "show")[1])
    assert keys["budget.monthly_usd"] == "50"
    assert keys["output.json_name"] == '"usage.json"  # default'
    assert keys["timezone"] == "(unset)  # default"


def test_show_lists_price_overrides(cfg: Path, run: Run) -> None:
    cfg.parent.mkdir()
    cfg.write_text("[[prices]]\nprovider = 'ollama'\nmodel = 'llama3'\ninput = 0.25\n")
    out = conf(run, cfg, "show")[1]
    assert "[[prices]]\nprovider = 'ollama'\nmodel = 'llama3'\ninput = 0.25" in out


# -- set ------------------------------------------------------------------------------------


def test_set_writes_the_value(cfg: Path, run: Run) -> None:
    code, out, err = conf(run, cfg, "set", "budget.monthly_usd", "75")
    assert (code, err) == (0, "")
    assert out.strip() == f"budget.monthly_usd = 75 in {cfg}"
    assert data(cfg) == {"budget": {"monthly_usd": 75}}
    assert load(str(cfg), cfg.parent).get("budget.monthly_usd") == 75


def test_set_keeps_every_other_key(cfg: Path, run: Run) -> None:
    conf(run, cfg, "init")
    with cfg.open("a") as fh:
        fh.write("\n[[prices]]\nprovider = 'ollama'\nmodel = 'llama3'\ninput = 0.25\n")
    before = data(cfg)
    assert conf(run, cfg, "set", "budget.monthly_usd", "75")[0] == 0
    after = data(cfg)
    assert after["budget"] == {"monthly_usd": 75}
    after["budget"] = before["budget"]
    assert after == before


def test_set_then_unset_comes_back_to_the_default(cfg: Path, run: Run) -> None:
    conf(run, cfg, "set", "alerts.warn_ratio", "0.5")
    assert load(str(cfg), cfg.parent).get("alerts.warn_ratio") == 0.5
    code, out, _ = conf(run, cfg, "unset", "alerts.warn_ratio")
    assert code == 0
    assert out.strip() == f"alerts.warn_ratio removed from {cfg}"
    assert load(str(cfg), cfg.parent).get("alerts.warn_ratio") == 0.8


@pytest.mark.parametrize(("key", "raw", "reason"), [
    ("budget.monthly_usd", "-5", "budget.monthly_usd: must be greater than 0"),
    ("budget.monthly_usd", "abc", "budget.monthly_usd: expected a number, got the string 'abc'"),
    ("budget.monthly_usd", "0", "must be greater than 0"),
    ("budget.monthly_usd", "true", "got a boolean"),
    ("budget.monthly_usd", "nan", "must be a finite number"),
    ("capacity.weekly_tokens", "[1]", "expected a number, got a list"),
    ("output.refresh_seconds", "1.5", "expected an integer"),
    ("alerts.warn_ratio", "1.5", "alerts.warn_ratio: must not be above alerts.critical_ratio"),
    ("alerts.critical_ratio", "11", "must be a ratio"),
    ("timezone", "Mars/Olympus_Mons", "unknown IANA time zone"),
    ("daemon.watcher", "inotify", "must be 'native', 'polling' or 'none'"),
    ("daemon.debounce_quiet", "10", "must not be above daemon.debounce_max"),
    ("balance.since", "2026-13-01", "YYYY-MM-DD"),
    ("output.file_mode", "999", "octal file mode"),
    ("sources.openclaw.enabled", "yes", "expected true or false"),
])
def test_set_rejects_a_wrong_type_or_range_with_exit_2_and_leaves_the_file(
        key: str, raw: str, reason: str, cfg: Path, run: Run) -> None:
    conf(run, cfg, "init")
    before = cfg.read_bytes()
    code, out, err = conf(run, cfg, "set", key, raw)
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"usaged: {cfg}: ")
    assert reason in err
    assert "Traceback" not in err
    assert cfg.read_bytes() == before


def test_rejected_set_does_not_create_the_file(cfg: Path, run: Run) -> None:
    assert conf(run, cfg, "set", "budget.monthly_usd", "-5")[0] == 2
    assert not cfg.exists()


@pytest.mark.parametrize(("key", "hint"), [
    ("budget.monthly", "budget.monthly_usd"),
    ("capacity.weekly_token", "capacity.weekly_tokens"),
    ("alerts.warning_ratio", "alerts.warn_ratio"),
    ("budgets.monthly_usd", "budget.monthly_usd"),
    ("time_zone", "timezone"),
])
def test_set_unknown_key_suggests_the_right_one(key: str, hint: str, cfg: Path,
                                                run: Run) -> None:
    code, _, err = conf(run, cfg, "set", key, "5")
    assert code == 2
    assert err.strip() == f"usaged: unknown config key '{key}' (did you mean '{hint}'?)"
    assert not cfg.exists()


def test_unset_unknown_key_suggests_the_right_one(cfg: Path, run: Run) -> None:
    code, _, err = conf(run, cfg, "unset", "budget.monthly")
    assert code == 2
    assert "did you mean 'budget.monthly_usd'" in err


@pytest.mark.parametrize(("key", "raw", "stored"), [
    ("timezone", "Europe/Berlin", "Europe/Berlin"),
    ("timezone", '"America/Los_Angeles"', "America/Los_Angeles"),
    ("capacity.weekly_tokens", "800_000_000", 800_000_000),
    ("capacity.burn_window_hours", "12.5", 12.5),
    ("sources.openclaw.enabled", "false", False),
    ("sources.openclaw.roots", '["~/a", "/srv/b"]', ["~/a", "/srv/b"]),
    ("balance.since", "2026-02-01", "2026-02-01"),
    ("output.file_mode", "0600", "0600"),
    ("output.file_mode", "600", "600"),
    ("output.json_name", "claude-usage.json", "claude-usage.json"),
    ("output.json_name", "2026", "2026"),
])
def test_set_reads_the_value_as_toml_or_as_text(key: str, raw: str, stored: Any, cfg: Path,
                                                run: Run) -> None:
    code, _, err = conf(run, cfg, "set", key, raw)
    assert code == 0, err
    assert load(str(cfg), cfg.parent).get(key) == stored


def test_balance_can_be_set_one_key_at_a_time(cfg: Path, run: Run) -> None:
    code, _, err = conf(run, cfg, "set", "balance.since", "2026-02-01")
    assert code == 0
    assert "balance.since is set but balance.credit_usd is not" not in err  # set says nothing
    assert conf(run, cfg, "set", "balance.credit_usd", "100")[0] == 0
    cfg_ = load(str(cfg), cfg.parent)
    assert (cfg_.get("balance.credit_usd"), cfg_.get("balance.since")) == (100, "2026-02-01")
    assert cfg_.warnings == ()


def test_credit_without_since_is_refused(cfg: Path, run: Run) -> None:
    code, _, err = conf(run, cfg, "set", "balance.credit_usd", "100")
    assert code == 2
    assert err.strip() == (f"usaged: {cfg}: balance.since: required when balance.credit_usd "
                           "is set (the date the credit was loaded, YYYY-MM-DD)")
    assert not cfg.exists()


def test_unset_that_would_break_the_file_is_refused(cfg: Path, run: Run) -> None:
    conf(run, cfg, "set", "balance.since", "2026-02-01")
    conf(run, cfg, "set", "balance.credit_usd", "100")
    before = cfg.read_bytes()
    code, _, err = conf(run, cfg, "unset", "balance.since")
    assert code == 2 and "balance.since" in err
    assert cfg.read_bytes() == before


def test_unset_a_key_that_is_not_set(cfg: Path, run: Run) -> None:
    code, out, _ = conf(run, cfg, "unset", "budget.monthly_usd")
    assert code == 0
    assert out.strip() == f"budget.monthly_usd was not set in {cfg}"
    assert not cfg.exists()


def test_set_on_a_broken_file_is_refused(cfg: Path, run: Run) -> None:
    cfg.parent.mkdir()
    cfg.write_text("[budget\n")
    code, _, err = conf(run, cfg, "set", "budget.monthly_usd", "5")
    assert code == 2
    assert f"{cfg}: not valid TOML" in err
    assert cfg.read_text() == "[budget\n"


def test_set_where_a_section_is_not_a_table_is_refused(cfg: Path, run: Run) -> None:
    cfg.parent.mkdir()
    cfg.write_text("budget = 5\n")
    code, _, err = conf(run, cfg, "set", "budget.monthly_usd", "5")
    assert code == 2
    assert err.strip() == (f"usaged: {cfg}: budget: is not a table in the file; "
                           "fix it by hand first")
    assert "Traceback" not in err


def test_set_writes_through_usaged_config(tmp_path: Path, run: Run,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "env.toml"
    monkeypatch.setenv("USAGED_CONFIG", str(target))
    assert run("config", "set", "budget.monthly_usd", "75")[0] == 0
    assert data(target) == {"budget": {"monthly_usd": 75}}


def test_set_leaves_no_temp_files(cfg: Path, run: Run) -> None:
    conf(run, cfg, "set", "budget.monthly_usd", "75")
    conf(run, cfg, "set", "budget.monthly_usd", "-1")
    assert os.listdir(cfg.parent) == [cfg.name]
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o644


@pytest.mark.parametrize("key", [k for k, spec in all_keys().items() if spec.default is not None])
def test_every_key_can_be_set_to_its_shown_default(key: str, cfg: Path, run: Run) -> None:
    default = all_keys()[key].default
    raw = str(default).lower() if isinstance(default, bool) else str(default)
    code, _, err = conf(run, cfg, "set", key, raw)
    assert code == 0, err
    assert load(str(cfg), cfg.parent).get(key) == default
