"""Editing the config file: `usaged config path | show | init | set | unset`.

Values are parsed as TOML (`75`, `0.9`, `"UTC"`, `["~/a", "~/b"]`; a bare word is a string),
validated against config.SCHEMA, and the whole file is validated again before it is written
(atomically, with tomli-w). Comments are not kept by `set` / `unset`.
"""

from __future__ import annotations

import difflib
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from usaged.config import Config, all_keys, from_mapping, read_toml, validate_value
from usaged.errors import ConfigError, UsageError
from usaged.fsio import atomic_write


def example_text() -> str:
    return resources.files("usaged").joinpath("data/usaged.example.toml").read_text("utf-8")


def init(path: Path, force: bool = False) -> None:
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists (use --force to overwrite)")
    atomic_write(path, example_text().encode(), 0o644)


def parse_value(raw: str, kind: type | tuple[type, ...] = ()) -> Any:
    """`raw` read as a TOML value; a bare word, or anything given for a text-only key, as text."""
    if kind is str:  # `output.file_mode 0644`, `output.json_name 2026.json` mean the text
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            return raw
        return value if isinstance(value, str) else raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _read(path: Path) -> dict[str, Any]:
    return read_toml(path) if path.exists() else {}


def _parts(key: str) -> list[str]:
    known = all_keys()
    if key not in known:
        hint = difflib.get_close_matches(key, list(known), n=1)
        raise UsageError(f"unknown config key '{key}'"
                         + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    parts = key.split(".")
    return ["sources", parts[1], parts[2]] if parts[0] == "sources" else parts


def set_value(path: Path, key: str, raw: str, home: Path) -> Any:
    parts = _parts(key)
    spec = all_keys()[key]
    value = validate_value(str(path), key, spec, parse_value(raw, spec.kind))
    data = _read(path)
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(str(path), ".".join(parts[: i + 1]),
                              "is not a table in the file; fix it by hand first")
    node[parts[-1]] = value
    _write(path, data, home)
    return value


def unset_value(path: Path, key: str, home: Path) -> bool:
    parts = _parts(key)
    data = _read(path)
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            return False
        node = node[part]
    if parts[-1] not in node:
        return False
    del node[parts[-1]]
    _write(path, data, home)
    return True


def _write(path: Path, data: dict[str, Any], home: Path) -> None:
    from_mapping(data, path, home)  # the whole file must stay valid
    atomic_write(path, tomli_w.dumps(data).encode(), 0o644)


def show(config: Config) -> str:
    """The effective configuration, every key, with `# default` beside untouched ones."""
    lines = [f"# config file: {config.path or '(none: all defaults)'}"]
    section = None
    for key, spec in all_keys().items():
        head, _, name = key.rpartition(".")
        if head != section:
            section = head
            lines.append(f"\n[{head}]" if head else "")
        value = config.get(key)
        shown = tomli_w.dumps({"v": value})[4:].strip() if value is not None else "(unset)"
        mark = "  # default" if value == spec.default else ""
        lines.append(f"{name} = {shown}{mark}")
    for p in config.prices:
        lines.append(f"\n[[prices]]\nprovider = {p.provider!r}\nmodel = {p.model!r}")
        lines.extend(f"{k} = {v}" for k, v in p.rates.items() if v is not None)
    return "\n".join(lines).lstrip("\n") + "\n"
