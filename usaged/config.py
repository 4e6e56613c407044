"""Configuration: one TOML file, every key optional, validated against one declarative schema.

`SCHEMA` below is the single source of truth for keys, types, defaults and meanings; the docs
(docs/configuration.md) and `usaged config set` are checked against it by tests.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from usaged.errors import ConfigError

Check = Callable[[Any], str | None]  # returns the reason a value is invalid, or None


@dataclass(frozen=True, slots=True)
class Key:
    kind: type | tuple[type, ...]
    default: Any
    help: str
    check: Check | None = None


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _ratio(v: Any) -> str | None:
    return None if 0 < v <= 10 else "must be a ratio between 0 and 10 (0.8 means 80 %)"


def _zone(v: Any) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown IANA time zone {v!r} (for example 'Europe/Berlin' or 'UTC')"
    return None


def _watcher(v: Any) -> str | None:
    return None if v in ("native", "polling", "none") else "must be 'native', 'polling' or 'none'"


def _mode(v: Any) -> str | None:
    try:
        m = int(v, 8)
    except ValueError:
        return "must be an octal file mode such as '0644'"
    return None if 0 <= m <= 0o777 else "must be an octal file mode between '0000' and '0777'"


def _date(v: Any) -> str | None:
    if isinstance(v, dt.datetime):  # a TOML date-time: only the date is meant
        return "must be a date (YYYY-MM-DD), not a date and time"
    if isinstance(v, dt.date):
        return None
    try:
        dt.date.fromisoformat(v)
    except ValueError:
        return "must be a date written YYYY-MM-DD"
    return None


def _listen(v: Any) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be HOST:PORT, for example '127.0.0.1:9464'"
    return None


def _str_list(v: Any) -> str | None:
    return None if all(isinstance(x, str) for x in v) else "must be a list of folder paths"


NUM = (int, float)
OPT_NUM = (int, float, type(None))

# section -> key -> Key. A section named "" holds top-level keys.
SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "timezone": Key(str, None, "IANA time zone for days, weeks and months; default: the "
                        "machine's zone", _zone),
    },
    "paths": {
        "state_dir": Key(str, None, "where the ledger (usaged.db) and the lock live; default "
                         "per platform (see docs/configuration.md)"),
        "output_dir": Key(str, None, "where usage.json and usage.html are written; default "
                          "`dashboard/` in the state dir"),
    },
    "output": {
        "json_name": Key(str, "usage.json", "file name of the JSON output"),
        "html_name": Key(str, "usage.html", "file name of the HTML dashboard"),
        "file_mode": Key(str, "0644", "octal mode of the output files", _mode),
        "refresh_seconds": Key(int, 60, "how often the open dashboard reloads itself", _positive),
        "top_sessions": Key(int, 20, "how many sessions the top-sessions list holds", _positive),
        "chart_days": Key(int, 30, "days shown in the dashboard's daily chart", _positive),
    },
    "sources.openclaw": {
        "enabled": Key(bool, True, "read OpenClaw / Clawdbot transcripts"),
        "roots": Key(list, None, "state dirs holding agents/; default: resolved as OpenClaw "
                     "does ($OPENCLAW_STATE_DIR, ~/.openclaw, legacy names)", _str_list),
    },
    "sources.claude_code": {
        "enabled": Key(bool, True, "read Claude Code transcripts"),
        "roots": Key(list, None, "Claude config dirs holding projects/; default: "
                     "$CLAUDE_CONFIG_DIR, else ~/.claude and ~/.config/claude", _str_list),
    },
    "daemon": {
        "watcher": Key(str, "native", "'native' (inotify / FSEvents), 'polling', or 'none' "
                       "(periodic scan only)", _watcher),
        "scan_interval": Key(NUM, 60.0, "seconds between reconciliation scans", _positive),
        "debounce_quiet": Key(NUM, 1.0, "write outputs once changes are quiet this long (s)",
                              _non_negative),
        "debounce_max": Key(NUM, 5.0, "but no later than this after the first change (s)",
                            _positive),
        "min_interval": Key(NUM, 0.5, "never two output writes closer than this (s)",
                            _non_negative),
        "read_chunk": Key(int, 1 << 20, "bytes read at a time from a transcript", _positive),
        "max_line_bytes": Key(int, 16 << 20, "longer lines are skipped (and logged)", _positive),
    },
    "budget": {
        "monthly_usd": Key(OPT_NUM, None, "monthly spending budget in USD (calendar month)",
                           _positive),
    },
    "capacity": {
        "weekly_tokens": Key(OPT_NUM, None, "tokens you can use in a rolling 7 days", _positive),
        "burn_window_hours": Key(NUM, 24, "hours of recent use that set the burn rate",
                                 _positive),
    },
    "balance": {
        "credit_usd": Key(OPT_NUM, None, "prepaid credit loaded on `since`", _non_negative),
        "since": Key((str, dt.date), None, "date the credit was loaded (YYYY-MM-DD, local)",
                     _date),
    },
    "alerts": {
        "warn_ratio": Key(NUM, 0.8, "warning when a ratio reaches this", _ratio),
        "critical_ratio": Key(NUM, 1.0, "critical when a ratio reaches this", _ratio),
        "balance_low_usd": Key(NUM, 10.0, "balance warning below this; critical at or below 0",
                               _non_negative),
        "session_review_tokens": Key(NUM, 10_000_000, "flag sessions that reach this many "
                                     "tokens (all time)", _positive),
    },
    "prometheus": {
        "textfile": Key(str, None, "write Prometheus metrics to this file (node_exporter's "
                        "textfile collector) with every output write; off when unset"),
        "listen": Key(str, None, "serve /metrics on this HOST:PORT (e.g. '127.0.0.1:9464'); "
                      "off when unset", _listen),
        "host": Key(str, None, "the `host` label on every metric; default: the host name"),
    },
}

PRICE_KEYS: dict[str, Key] = {
    "provider": Key(str, None, "provider as written in transcripts (e.g. 'ollama')"),
    "model": Key(str, None, "model id as written in transcripts"),
    "input": Key(NUM, 0.0, "USD per million input tokens", _non_negative),
    "output": Key(NUM, 0.0, "USD per million output tokens", _non_negative),
    "cache_read": Key(NUM, 0.0, "USD per million cache-read tokens", _non_negative),
    "cache_write": Key(NUM, 0.0, "USD per million 5-minute cache-write tokens", _non_negative),
    "cache_write_1h": Key(OPT_NUM, None, "USD per million 1-hour cache-write tokens "
                          "(default: cache_write)", _non_negative),
    "web_search": Key(NUM, 0.0, "USD per web-search request", _non_negative),
    "long_context_threshold": Key(OPT_NUM, None, "prompt tokens above which the long_* rates "
                                  "apply to the whole call", _positive),
    "long_input": Key(OPT_NUM, None, "long-context input rate", _non_negative),
    "long_output": Key(OPT_NUM, None, "long-context output rate", _non_negative),
    "long_cache_read": Key(OPT_NUM, None, "long-context cache-read rate", _non_negative),
    "long_cache_write": Key(OPT_NUM, None, "long-context 5-minute cache-write rate",
                            _non_negative),
    "long_cache_write_1h": Key(OPT_NUM, None, "long-context 1-hour cache-write rate",
                               _non_negative),
}


@dataclass(frozen=True, slots=True)
class PriceOverride:
    provider: str
    model: str
    rates: Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class Config:
    """Validated configuration. `values` maps "section.key" to a value (defaults filled in)."""

    path: Path | None
    values: Mapping[str, Any]
    prices: tuple[PriceOverride, ...] = ()
    warnings: tuple[str, ...] = ()
    home: Path = field(default_factory=Path.home)

    def get(self, dotted: str) -> Any:
        return self.values[dotted]

    @property
    def zone(self) -> ZoneInfo:
        name = self.values["timezone"]
        return ZoneInfo(name) if name else local_zone()

    @property
    def state_dir(self) -> Path:
        configured = self.values["paths.state_dir"]
        return self.expand(configured) if configured else default_state_dir(self.home)

    @property
    def output_dir(self) -> Path:
        configured = self.values["paths.output_dir"]
        return self.expand(configured) if configured else self.state_dir / "dashboard"

    @property
    def file_mode(self) -> int:
        return int(self.values["output.file_mode"], 8)

    def expand(self, raw: str) -> Path:
        if raw == "~" or raw.startswith("~/"):
            return self.home / raw[2:]
        return Path(os.path.expandvars(raw))


def dotted(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def all_keys() -> dict[str, Key]:
    return {dotted(s, k): spec for s, keys in SCHEMA.items() for k, spec in keys.items()}


def local_zone() -> ZoneInfo:
    """The machine's zone: $TZ, else /etc/localtime's link target, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return ZoneInfo("UTC")
    marker = "zoneinfo/"
    if marker in target:
        try:
            return ZoneInfo(target.split(marker, 1)[1])
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def default_state_dir(home: Path) -> Path:
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "usaged"
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else home / ".local" / "state") / "usaged"


def default_config_path(home: Path) -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else home / ".config") / "usaged" / "usaged.toml"


def resolve_config_path(cli_path: str | None, home: Path) -> tuple[Path, bool]:
    """The config file to use and whether the user named it explicitly."""
    if cli_path:
        return Path(cli_path), True
    env = os.environ.get("USAGED_CONFIG")
    if env:
        return Path(env), True
    return default_config_path(home), False


def load(cli_path: str | None = None, home: Path | None = None) -> Config:
    """Read and validate the config. A missing default file means "all defaults"."""
    home = home or Path.home()
    path, explicit = resolve_config_path(cli_path, home)
    if not path.exists():
        if explicit:
            raise ConfigError(str(path), None, "file not found")
        return from_mapping({}, None, home)
    return from_mapping(read_toml(path), path, home)


def load_lenient(cli_path: str | None = None, home: Path | None = None) -> Config:
    """Like `load`, but an invalid value falls back to its default and becomes a warning.

    For read-only reports (`usaged status`) that must still work while the file holds a
    mistake. A file that is missing (when named), unreadable or not TOML still raises.
    """
    home = home or Path.home()
    try:
        return load(cli_path, home)
    except ConfigError as exc:
        if exc.key is None:
            raise
    path, _ = resolve_config_path(cli_path, home)
    data = read_toml(path)
    dropped: list[str] = []
    for _ in range(4 * len(all_keys())):
        try:
            config = from_mapping(data, path, home)
        except ConfigError as exc:
            if exc.key is None or not _drop(data, exc.key):
                raise
            dropped.append(f"{exc} (using the default)")
            continue
        return replace(config, warnings=(*dropped, *config.warnings))
    return from_mapping(data, path, home)  # pragma: no cover - every pass drops a key


def _drop(data: dict[str, Any], key: str) -> bool:
    """Remove the value behind an invalid `key` (or its whole table) from raw TOML data."""
    if key.startswith("prices"):
        return data.pop("prices", None) is not None
    parts = key.split(".")
    if parts[0] == "sources" and len(parts) == 3:
        parts = ["sources", parts[1], parts[2]]
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return True
    table = data.get(parts[0]) if len(parts) > 1 else None
    if table is not None:
        del data[parts[0]]
        return True
    return False


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "not valid TOML: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror or exc}") from None


def from_mapping(data: Mapping[str, Any], path: Path | None, home: Path) -> Config:
    where = str(path) if path else "<defaults>"
    values: dict[str, Any] = {}
    warnings: list[str] = []
    flat = _flatten(data, where)
    known = all_keys()
    for name, value in flat.items():
        if name not in known:
            hint = difflib.get_close_matches(name, list(known) + ["prices"], n=1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
            warnings.append(f"{where}: unknown key '{name}'{suffix}; ignored")
            continue
        values[name] = validate_value(where, name, known[name], value)
    for name, spec in known.items():
        values.setdefault(name, spec.default)
    _check_relations(where, values, warnings)
    raw_prices = data.get("prices", [])
    if not isinstance(raw_prices, list):
        raise ConfigError(where, "prices", "must be an array of tables, written [[prices]]")
    prices = tuple(_price(where, i, raw) for i, raw in enumerate(raw_prices))
    return Config(path=path, values=values, prices=prices, warnings=tuple(warnings), home=home)


def _flatten(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for top, value in data.items():
        if top == "prices":
            continue
        if top in SCHEMA and top:
            if not isinstance(value, dict):
                raise ConfigError(where, top, f"must be a table ([{top}] with keys such as "
                                  f"{next(iter(SCHEMA[top]))}), got {_describe(value)}")
            flat.update({f"{top}.{k}": v for k, v in value.items()})
        elif top == "sources" and isinstance(value, dict):
            for src, sub in value.items():
                if isinstance(sub, dict):
                    flat.update({f"sources.{src}.{k}": v for k, v in sub.items()})
                else:
                    flat[f"sources.{src}"] = sub
        elif isinstance(value, dict) and value:  # an unknown table: hint at its keys
            flat.update({f"{top}.{k}": v for k, v in value.items()})
        else:
            flat[top] = value
    return flat


def validate_value(where: str, name: str, spec: Key, value: Any) -> Any:
    kind = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    if isinstance(value, bool) and bool not in kind:
        raise ConfigError(where, name, f"expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(where, name, f"expected {_kind_name(kind)}, got {_describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(where, name, "must be a finite number")
    if value is not None and spec.check is not None:
        reason = spec.check(value)
        if reason:
            raise ConfigError(where, name, reason)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _check_relations(where: str, values: dict[str, Any], warnings: list[str]) -> None:
    if values["alerts.warn_ratio"] > values["alerts.critical_ratio"]:
        raise ConfigError(where, "alerts.warn_ratio", "must not be above alerts.critical_ratio")
    if values["daemon.debounce_quiet"] > values["daemon.debounce_max"]:
        raise ConfigError(where, "daemon.debounce_quiet", "must not be above daemon.debounce_max")
    # A credit without its date cannot be tracked: an error. A date alone is harmless (the
    # balance stays untracked), so `usaged config set` can add the two keys one at a time.
    if values["balance.credit_usd"] is not None and values["balance.since"] is None:
        raise ConfigError(where, "balance.since", "required when balance.credit_usd is set "
                          "(the date the credit was loaded, YYYY-MM-DD)")
    if values["balance.since"] is not None and values["balance.credit_usd"] is None:
        warnings.append(f"{where}: balance.since is set but balance.credit_usd is not; the "
                        "balance is not tracked")


def _price(where: str, index: int, raw: Any) -> PriceOverride:
    label = f"prices[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, label, "each [[prices]] entry must be a table")
    for req in ("provider", "model"):
        if not isinstance(raw.get(req), str) or not raw[req]:
            raise ConfigError(where, f"{label}.{req}", "required (a non-empty string)")
    rates: dict[str, float | None] = {}
    for name, value in raw.items():
        if name not in PRICE_KEYS:
            hint = difflib.get_close_matches(name, list(PRICE_KEYS), n=1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(where, f"{label}.{name}", f"unknown price key{suffix}")
        checked = validate_value(where, f"{label}.{name}", PRICE_KEYS[name], value)
        if name not in ("provider", "model"):
            rates[name] = None if checked is None else float(checked)
    return PriceOverride(provider=raw["provider"], model=raw["model"], rates=rates)


def _kind_name(kind: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dt.date: "a date", type(None): "nothing"}
    parts = [names.get(k, k.__name__) for k in kind if k is not type(None)]
    if float in kind and int in kind:
        parts = [p for p in parts if p != "an integer"]
    return " or ".join(dict.fromkeys(parts))


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value!r}"
