"""The config file: defaults, the example, unknown keys, invalid values, the CLI funnel."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO

from usaged import config, pipeline
from usaged.config import PRICE_KEYS, SCHEMA, all_keys, load
from usaged.errors import ConfigError

EXAMPLE = REPO / "config" / "usaged.example.toml"
PACKAGED_EXAMPLE = REPO / "usaged" / "data" / "usaged.example.toml"
DOCS = REPO / "docs" / "configuration.md"


def write(tmp_path: Path, text: str | bytes, name: str = "usaged.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# -- defaults and locations -----------------------------------------------------------------


def test_no_file_means_every_default(isolated_home: Path) -> None:
    cfg = load(None, isolated_home)
    assert cfg.path is None
    assert cfg.warnings == ()
    assert cfg.prices == ()
    assert dict(cfg.values) == {k: spec.default for k, spec in all_keys().items()}


def test_defaults_give_state_and_output_dirs_under_xdg_state_home(isolated_home: Path) -> None:
    cfg = load(None, isolated_home)
    state = isolated_home / "xdg_state_home" / "usaged"
    assert cfg.state_dir == state
    assert cfg.output_dir == state / "dashboard"
    assert pipeline.output_paths(cfg) == (state / "dashboard" / "usage.json",
                                          state / "dashboard" / "usage.html")


def test_default_zone_is_the_machines(isolated_home: Path, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    assert load(None, isolated_home).zone == ZoneInfo("Asia/Kathmandu")


def test_default_file_is_under_xdg_config_home(isolated_home: Path) -> None:
    path = isolated_home / "xdg_config_home" / "usaged" / "usaged.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[budget]\nmonthly_usd = 75\n")
    cfg = load(None, isolated_home)
    assert cfg.path == path
    assert cfg.get("budget.monthly_usd") == 75


def test_without_xdg_config_home_the_file_is_in_dot_config(
        isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config.default_config_path(isolated_home) == (
        isolated_home / ".config" / "usaged" / "usaged.toml")


def test_usaged_config_env_wins_over_the_default_and_config_flag_over_both(
        tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, "[budget]\nmonthly_usd = 1\n", "env.toml")
    flag_file = write(tmp_path, "[budget]\nmonthly_usd = 2\n", "flag.toml")
    monkeypatch.setenv("USAGED_CONFIG", str(env_file))
    assert load(None, isolated_home).get("budget.monthly_usd") == 1
    assert load(str(flag_file), isolated_home).get("budget.monthly_usd") == 2


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(str(tmp_path / "missing.toml"), tmp_path)


def test_tilde_in_paths_means_the_home_folder(tmp_path: Path, isolated_home: Path) -> None:
    cfg = load(str(write(tmp_path, '[paths]\nstate_dir = "~/st"\noutput_dir = "~/out"\n')),
               isolated_home)
    assert cfg.state_dir == isolated_home / "st"
    assert cfg.output_dir == isolated_home / "out"


# -- the documented example -----------------------------------------------------------------


def test_example_shipped_in_the_package_is_the_one_in_config() -> None:
    assert PACKAGED_EXAMPLE.read_bytes() == EXAMPLE.read_bytes()


def test_example_loads_without_warnings_and_every_key_it_sets_is_valid(tmp_path: Path) -> None:
    cfg = load(str(EXAMPLE), tmp_path)
    assert cfg.warnings == ()
    raw = flatten(tomllib.loads(EXAMPLE.read_text()))
    assert raw, "the example sets no key"
    known = all_keys()
    for key, value in raw.items():
        assert key in known, key
        assert cfg.get(key) == value, key


def enabled_example(tmp_path: Path) -> Path:
    """The example with its commented-out limits switched on, as a user would."""
    text = re.sub(r"^# (monthly_usd|weekly_tokens|credit_usd|since) = ", r"\1 = ",
                  EXAMPLE.read_text(), flags=re.M)
    path = tmp_path / "enabled.toml"
    path.write_text(text)
    return path


def test_example_limits_are_off_until_the_user_sets_them(tmp_path: Path) -> None:
    cfg = load(str(EXAMPLE), tmp_path)
    assert cfg.get("budget.monthly_usd") is None
    assert cfg.get("capacity.weekly_tokens") is None
    assert cfg.get("balance.credit_usd") is None


def test_example_sets_every_threshold_of_the_issue(tmp_path: Path) -> None:
    cfg = load(str(enabled_example(tmp_path)), tmp_path)
    assert cfg.get("budget.monthly_usd") == 50
    assert cfg.get("capacity.weekly_tokens") == 800_000_000
    assert cfg.get("capacity.burn_window_hours") == 24
    assert cfg.get("balance.credit_usd") == 100
    assert cfg.get("balance.since") == "2026-01-01"
    assert cfg.get("alerts.warn_ratio") == 0.8
    assert cfg.get("alerts.critical_ratio") == 1.0
    assert cfg.get("alerts.balance_low_usd") == 10
    assert cfg.get("alerts.session_review_tokens") == 10_000_000


def test_example_values_reach_the_metrics_settings(tmp_path: Path) -> None:
    s = pipeline.settings_from(load(str(enabled_example(tmp_path)), tmp_path))
    assert (s.monthly_usd, s.weekly_tokens, s.credit_usd) == (50, 800_000_000, 100)
    assert s.balance_since == dt.date(2026, 1, 1)
    assert (s.warn_ratio, s.critical_ratio, s.balance_low_usd) == (0.8, 1.0, 10.0)


def test_example_keys_not_set_are_commented_out_and_known() -> None:
    commented = re.findall(r"^# ?([a-z_]+) = ", EXAMPLE.read_text(), flags=re.M)
    names = {k.rpartition(".")[2] for k in all_keys()} | set(PRICE_KEYS)
    assert commented
    assert set(commented) <= names


# -- unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "unknown", "hint"), [
    ("[budget]\nmonthly_usdd = 5\n", "budget.monthly_usdd", "budget.monthly_usd"),
    ("[budgett]\nmonthly_usd = 5\n", "budgett.monthly_usd", "budget.monthly_usd"),
    ("[alerts]\nwarn_ration = 0.5\n", "alerts.warn_ration", "alerts.warn_ratio"),
    ("timezon = 'UTC'\n", "timezon", "timezone"),
    ("[alerts]\ntimezone = 'UTC'\n", "alerts.timezone", "timezone"),
    ("[sources.claude]\nenabled = false\n", "sources.claude.enabled",
     "sources.claude_code.enabled"),
])
def test_unknown_key_is_a_warning_with_did_you_mean(text: str, unknown: str, hint: str,
                                                    tmp_path: Path) -> None:
    path = write(tmp_path, text)
    cfg = load(str(path), tmp_path)
    assert cfg.warnings == (f"{path}: unknown key '{unknown}' (did you mean '{hint}'?); "
                            "ignored",)
    assert dict(cfg.values) == {k: s.default for k, s in all_keys().items()}


def test_unknown_key_without_a_close_match_has_no_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "colour = 'blue'\n")
    assert load(str(path), tmp_path).warnings == (f"{path}: unknown key 'colour'; ignored",)


def test_unknown_key_warning_goes_to_stderr_and_the_command_still_runs(
        tmp_path: Path, run: Any) -> None:
    path = write(tmp_path, f"[paths]\nstate_dir = '{tmp_path / 'state'}'\n"
                           "[budget]\nmonthly_usdd = 5\n")
    code, out, err = run("--config", str(path), "config", "show")
    assert code == 0
    assert "monthly_usd = (unset)" in out
    assert "warning: " in err and "did you mean 'budget.monthly_usd'" in err


# -- invalid values -------------------------------------------------------------------------

INVALID = [
    ("[budget]\nmonthly_usd = 'fifty'\n", "budget.monthly_usd",
     "expected a number, got the string 'fifty'"),
    ("[budget]\nmonthly_usd = -5\n", "budget.monthly_usd", "must be greater than 0"),
    ("[budget]\nmonthly_usd = 0\n", "budget.monthly_usd", "must be greater than 0"),
    ("[budget]\nmonthly_usd = true\n", "budget.monthly_usd", "got a boolean"),
    ("[capacity]\nweekly_tokens = nan\n", "capacity.weekly_tokens", "must be a finite number"),
    ("[capacity]\nburn_window_hours = 0\n", "capacity.burn_window_hours",
     "must be greater than 0"),
    ("timezone = 'Mars/Olympus_Mons'\n", "timezone", "unknown IANA time zone"),
    ("timezone = ''\n", "timezone", "unknown IANA time zone"),
    ("[alerts]\nwarn_ratio = 0.9\ncritical_ratio = 0.8\n", "alerts.warn_ratio",
     "must not be above alerts.critical_ratio"),
    ("[alerts]\nwarn_ratio = 0\n", "alerts.warn_ratio", "must be a ratio"),
    ("[alerts]\nbalance_low_usd = -1\n", "alerts.balance_low_usd", "must be 0 or more"),
    ("[balance]\ncredit_usd = 100\n", "balance.since", "required when balance.credit_usd"),
    ("[balance]\ncredit_usd = -1\nsince = 2026-01-01\n", "balance.credit_usd",
     "must be 0 or more"),
    ("[balance]\ncredit_usd = 5\nsince = '01/02/2026'\n", "balance.since", "YYYY-MM-DD"),
    ("[balance]\ncredit_usd = 5\nsince = 2026-01-01T09:00:00\n", "balance.since",
     "not a date and time"),
    ("[output]\nrefresh_seconds = 1.5\n", "output.refresh_seconds", "expected an integer"),
    ("[output]\nfile_mode = '0999'\n", "output.file_mode", "octal file mode"),
    ("[output]\nfile_mode = 644\n", "output.file_mode", "expected a string"),
    ("[daemon]\nwatcher = 'inotify'\n", "daemon.watcher", "'native', 'polling' or 'none'"),
    ("[daemon]\ndebounce_quiet = 9\ndebounce_max = 5\n", "daemon.debounce_quiet",
     "must not be above daemon.debounce_max"),
    ("[sources.openclaw]\nroots = '~/.openclaw'\n", "sources.openclaw.roots",
     "expected a list"),
    ("[sources.openclaw]\nroots = [1]\n", "sources.openclaw.roots", "list of folder paths"),
    ("[sources.openclaw]\nenabled = 'yes'\n", "sources.openclaw.enabled",
     "expected true or false"),
    ("budget = 50\n", "budget", "must be a table"),
    ("prices = 5\n", "prices", "[[prices]]"),
    ("[[prices]]\nprovider = 'ollama'\n", "prices[0].model", "required"),
    ("[[prices]]\nprovider = 'ollama'\nmodel = 'm'\ninptu = 1\n", "prices[0].inptu",
     "did you mean 'input'"),
    ("[[prices]]\nprovider = 'ollama'\nmodel = 'm'\noutput = -1\n", "prices[0].output",
     "must be 0 or more"),
]


@pytest.mark.parametrize(("text", "key", "reason"), INVALID)
def test_invalid_value_names_file_key_and_reason(text: str, key: str, reason: str,
                                                 tmp_path: Path) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(str(path), tmp_path)
    err = caught.value
    assert (err.path, err.key) == (str(path), key)
    assert reason in err.reason
    assert str(err).startswith(f"{path}: {key}: ")
    assert "\n" not in str(err)


@pytest.mark.parametrize(("text", "reason"), [
    ("[budget\nmonthly_usd = 5\n", "not valid TOML"),
    ("[budget]\nmonthly_usd = 5\nmonthly_usd = 6\n", "not valid TOML"),
    (b"\xff\xfe[budget]\x00", "not UTF-8"),
])
def test_a_file_that_is_not_toml_is_an_error_naming_the_file(text: str | bytes, reason: str,
                                                             tmp_path: Path) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(str(path), tmp_path)
    assert caught.value.path == str(path) and caught.value.key is None
    assert reason in str(caught.value)


def test_a_folder_given_as_the_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path), tmp_path)


def test_since_may_be_a_toml_date_or_a_string(tmp_path: Path) -> None:
    for since in ("2026-03-05", "'2026-03-05'"):
        cfg = load(str(write(tmp_path, f"[balance]\ncredit_usd = 5\nsince = {since}\n")),
                   tmp_path)
        assert cfg.get("balance.since") == "2026-03-05"
        assert pipeline.settings_from(cfg).balance_since == dt.date(2026, 3, 5)


def test_since_without_credit_is_a_warning_and_not_tracked(tmp_path: Path) -> None:
    path = write(tmp_path, "[balance]\nsince = 2026-03-05\n")
    cfg = load(str(path), tmp_path)
    assert cfg.warnings == (f"{path}: balance.since is set but balance.credit_usd is not; "
                            "the balance is not tracked",)
    assert pipeline.settings_from(cfg).credit_usd is None


def test_warn_ratio_may_equal_critical_ratio(tmp_path: Path) -> None:
    cfg = load(str(write(tmp_path, "[alerts]\nwarn_ratio = 0.9\ncritical_ratio = 0.9\n")),
               tmp_path)
    assert cfg.get("alerts.warn_ratio") == cfg.get("alerts.critical_ratio") == 0.9


def test_prices_are_read_with_their_rates(tmp_path: Path) -> None:
    cfg = load(str(write(tmp_path, "[[prices]]\nprovider = 'lmstudio'\nmodel = 'local'\n"
                                   "input = 0.5\noutput = 2\n")), tmp_path)
    (price,) = cfg.prices
    assert (price.provider, price.model) == ("lmstudio", "local")
    assert price.rates == {"input": 0.5, "output": 2.0}


# -- the CLI funnel -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expect"), [
    ("[budget]\nmonthly_usd = -5\n", "budget.monthly_usd: must be greater than 0"),
    ("[budget\n", "not valid TOML"),
    ("[alerts]\nwarn_ratio = 2\ncritical_ratio = 1\n", "alerts.warn_ratio"),
    ("[balance]\ncredit_usd = 100\n", "balance.since"),
    ("timezone = 'Nowhere/Special'\n", "unknown IANA time zone"),
    (b"\x00\x01\x02\xff", "not UTF-8"),
])
def test_bad_config_exits_2_with_one_clear_line(text: str | bytes, expect: str, tmp_path: Path,
                                                run: Any) -> None:
    path = write(tmp_path, text)
    code, out, err = run("--config", str(path), "scan")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"usaged: {path}: ")
    assert expect in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "state").exists()


def test_missing_named_config_exits_2(tmp_path: Path, run: Any) -> None:
    code, _, err = run("--config", str(tmp_path / "nope.toml"), "status")
    assert code == 2
    assert err.strip() == f"usaged: {tmp_path / 'nope.toml'}: file not found"


# -- docs -----------------------------------------------------------------------------------


def test_every_schema_key_is_documented() -> None:
    text = DOCS.read_text()
    missing = [key for key in all_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_every_price_key_is_documented() -> None:
    text = DOCS.read_text()
    missing = [key for key in PRICE_KEYS if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md lacks [[prices]] keys {missing}"


def test_every_section_of_the_schema_is_documented() -> None:
    text = DOCS.read_text()
    assert all(f"[{s}]" in text for s in SCHEMA if s)


# -- lenient loading (for read-only reports such as `usaged status`) ------------------------


@pytest.mark.parametrize(("text", "key", "kept"), [
    ("[budget]\nmonthly_usd = -1\n[capacity]\nweekly_tokens = 1000\n", "budget.monthly_usd",
     {"capacity.weekly_tokens": 1000}),
    ("[alerts]\nwarn_ratio = 0.9\ncritical_ratio = 0.5\n", "alerts.warn_ratio", {}),
    ("[balance]\ncredit_usd = 100\n[budget]\nmonthly_usd = 5\n", "balance.since",
     {"budget.monthly_usd": 5}),
    ("timezone = 'Nowhere/Land'\n[budget]\nmonthly_usd = 5\n", "timezone",
     {"budget.monthly_usd": 5}),
    ("budget = 5\n[capacity]\nweekly_tokens = 1000\n", "budget",
     {"capacity.weekly_tokens": 1000}),
    ("[[prices]]\nprovider = 'x'\n[budget]\nmonthly_usd = 5\n", "prices[0].model",
     {"budget.monthly_usd": 5}),
])
def test_lenient_load_keeps_the_valid_keys_and_warns_about_the_rest(
        text: str, key: str, kept: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError):
        load(str(path), tmp_path)
    cfg = config.load_lenient(str(path), tmp_path)
    assert any(w.startswith(f"{path}: {key}: ") and w.endswith("(using the default)")
               for w in cfg.warnings), cfg.warnings
    for name, value in kept.items():
        assert cfg.get(name) == value
    assert cfg.prices == ()


@pytest.mark.parametrize("text", ["[budget\n", b"\xff\xfe"])
def test_lenient_load_still_refuses_a_file_that_is_not_toml(text: str | bytes,
                                                            tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config.load_lenient(str(write(tmp_path, text)), tmp_path)


def test_lenient_load_of_a_valid_file_is_the_normal_load(tmp_path: Path) -> None:
    assert config.load_lenient(str(EXAMPLE), tmp_path) == load(str(EXAMPLE), tmp_path)


def _doc_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\| `([a-z_.0-9]+)` \|", line)
        if m:
            rows[m[1]] = [c.strip() for c in line.strip("|").split("|")]
    return rows


@pytest.mark.parametrize(("key", "spec"), [*all_keys().items(), *PRICE_KEYS.items()])
def test_documented_default_is_the_schema_default(key: str, spec: Any) -> None:
    row = _doc_rows()[key]
    default = row[2]
    if spec.default is None:
        assert default == "" or default.startswith("unset"), row
    else:
        shown = re.search(r"`([^`]+)`", default)
        assert shown, row
        assert tomllib.loads(f"v = {shown[1]}")["v"] == spec.default, row
