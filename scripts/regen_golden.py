"""Regenerate the golden `--help` texts and the generated examples in docs/.

    python scripts/regen_golden.py          # rewrite what is stale (listed on stdout)
    python scripts/regen_golden.py --check  # change nothing; exit 1 and list what is stale

- tests/golden/help-*.txt and the blocks of docs/cli.md between `<!-- help:NAME -->` and
  `<!-- /help:NAME -->`: the output of `python -m usaged [COMMAND ...] --help`, run by this
  interpreter with COLUMNS=100 and colour off so the wrapping is stable (tests/test_cli.py).
- the usage.json example of docs/usage-json.md (between `<!-- example:usage-json -->` markers):
  a real `usaged scan` of the openclaw-edge corpus, cut short (tests/test_schema.py). Its
  `generated_at`, `daemon.pid`, `daemon.last_scan` differ on every run and are only
  rewritten with a change.

Review the diff before committing it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
CLI_DOC = REPO / "docs" / "cli.md"
USAGE_DOC = REPO / "docs" / "usage-json.md"
SHARED = REPO.parent / "shared"
if not SHARED.exists():  # as in tests/conftest.py: CI clones the repo beside a copy of shared/
    SHARED = Path(os.environ.get("USAGED_SHARED", SHARED))
EXAMPLE_CORPUS = SHARED / "corpus" / "openclaw-edge"
# The documented example: this config (as TOML in docs/usage-json.md) and this --now.
EXAMPLE_CONFIG = """\
timezone = "America/Los_Angeles"

[sources.openclaw]
roots = ["<corpus>/openclaw-edge"]

[sources.claude_code]
enabled = false

[budget]
monthly_usd = 50

[capacity]
weekly_tokens = 20000000

[balance]
credit_usd = 100
since = "2026-01-01"
"""
EXAMPLE_NOW = "2026-01-25T12:00:00"
VOLATILE = (("generated_at",), ("daemon", "pid"), ("daemon", "last_scan"))  # wall clock

# golden name -> the command words before `--help`
COMMANDS: dict[str, tuple[str, ...]] = {
    "usaged": (),
    "scan": ("scan",),
    "run": ("run",),
    "status": ("status",),
    "config": ("config",),
    "config-path": ("config", "path"),
    "config-show": ("config", "show"),
    "config-init": ("config", "init"),
    "config-set": ("config", "set"),
    "config-unset": ("config", "unset"),
    "demo": ("demo",),
    "install": ("install",),
    "uninstall": ("uninstall",),
    "doctor": ("doctor",),
}

# Fixed width, no colour (Python 3.14's argparse colours help on a terminal), no user config.
HELP_ENV = {"COLUMNS": "100", "LINES": "50", "NO_COLOR": "1", "PYTHON_COLORS": "0",
            "TERM": "dumb"}


def golden_path(name: str) -> Path:
    return GOLDEN / f"help-{name}.txt"


def normalize(text: str) -> str:
    """Trailing blanks and line ends only. The help texts are identical under Python 3.11,
    3.12 and 3.13; add a rule here (and say which version needs it) if a newer one differs."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"


def help_text(words: tuple[str, ...], python: str = sys.executable) -> str:
    env = {**os.environ, **HELP_ENV}
    done = subprocess.run([python, "-m", "usaged", *words, "--help"], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"usaged {' '.join(words)} --help exited {done.returncode}: "
                           f"{done.stderr.strip()}")
    return normalize(done.stdout)


def doc_block(name: str, text: str) -> str:
    return f"<!-- help:{name} -->\n```text\n{text}```\n<!-- /help:{name} -->"


def doc_block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- help:{re.escape(name)} -->.*?<!-- /help:{re.escape(name)} -->",
                      re.DOTALL)


def refresh_doc(doc: str, texts: dict[str, str]) -> tuple[str, list[str]]:
    """The doc with every marked help block replaced; and the names that have no block."""
    missing = []
    for name, text in texts.items():
        pattern = doc_block_pattern(name)
        if not pattern.search(doc):
            missing.append(name)
            continue
        block = doc_block(name, text)
        doc = pattern.sub(lambda _m: block, doc)  # noqa: B023 (used at once, in this pass)
    return doc, missing


# -- the usage.json example ----------------------------------------------------------------


def usage_example(python: str = sys.executable) -> dict[str, Any]:
    """usage.json of `usaged scan --now EXAMPLE_NOW` with EXAMPLE_CONFIG, cut to an excerpt:
    the last 2 days, the last month, the top model and session; everything else whole."""
    with tempfile.TemporaryDirectory(prefix="usaged-example-") as tmp:
        base = Path(tmp)
        config = EXAMPLE_CONFIG.replace("<corpus>", str(EXAMPLE_CORPUS.parent))
        config += f'\n[paths]\nstate_dir = "{base / "state"}"\n'
        (base / "usaged.toml").write_text(config)
        env = {**os.environ, "HOME": str(base), "XDG_CONFIG_HOME": str(base / "config"),
               "XDG_STATE_HOME": str(base / "xdg-state")}
        for var in ("USAGED_CONFIG", "USAGED_FAILPOINTS", "USAGED_IOFAIL"):
            env.pop(var, None)
        done = subprocess.run([python, "-m", "usaged", "--config", str(base / "usaged.toml"),
                               "scan", "--now", EXAMPLE_NOW], capture_output=True, text=True,
                              env=env, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"usaged scan exited {done.returncode}: {done.stderr.strip()}")
        doc: dict[str, Any] = json.loads((base / "state" / "dashboard" / "usage.json")
                                         .read_text())
    doc["daily"] = doc["daily"][-2:]
    doc["monthly"] = doc["monthly"][-1:]
    doc["models"] = doc["models"][:1]
    doc["sessions"] = doc["sessions"][:1]
    return doc


def compact_json(value: Any, indent: int = 0, prefix: str = "", width: int = 120) -> str:
    """JSON with every object or list that fits in `width` on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or not value or \
            indent + len(prefix) + len(flat) + 1 <= width:
        return " " * indent + prefix + flat
    if isinstance(value, dict):
        inner = [compact_json(v, indent + 2, json.dumps(k) + ": ", width)
                 for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        inner = [compact_json(v, indent + 2, "", width) for v in value]
        opening, closing = "[", "]"
    return (" " * indent + prefix + opening + "\n" + ",\n".join(inner) + "\n"
            + " " * indent + closing)


def example_block(doc: dict[str, Any]) -> str:
    return (f"<!-- example:usage-json -->\n```json\n{compact_json(doc)}\n```\n"
            "<!-- /example:usage-json -->")


EXAMPLE_PATTERN = re.compile(r"<!-- example:usage-json -->\n```json\n(.*?)\n```\n"
                             r"<!-- /example:usage-json -->", re.DOTALL)


def documented_example(text: str) -> dict[str, Any] | None:
    found = EXAMPLE_PATTERN.search(text)
    return None if found is None else dict(json.loads(found.group(1)))


def without_volatile(doc: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    for path in VOLATILE:
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return dict(out)


def refresh_usage_doc(text: str, fresh: dict[str, Any]) -> str:
    """The doc with its example replaced by `fresh`, unless they differ in volatile fields only
    (and the block is already formatted as generated)."""
    old = documented_example(text)
    if old is None:
        return text
    if without_volatile(old) == without_volatile(fresh):
        for path in VOLATILE:  # keep the documented values: no churn
            src, dst = old, fresh
            for key in path[:-1]:
                src, dst = src[key], dst[key]
            dst[path[-1]] = src[path[-1]]
    return EXAMPLE_PATTERN.sub(lambda _m: example_block(fresh), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)

    texts = {name: help_text(words) for name, words in COMMANDS.items()}
    stale = [str(golden_path(n).relative_to(REPO)) for n, t in texts.items()
             if not golden_path(n).exists() or golden_path(n).read_text() != t]
    doc = CLI_DOC.read_text() if CLI_DOC.exists() else ""
    new_doc, missing = refresh_doc(doc, texts)
    if new_doc != doc:
        stale.append(str(CLI_DOC.relative_to(REPO)))
    if missing:
        print(f"docs/cli.md has no help block for: {', '.join(missing)} (add "
              f"'<!-- help:NAME --><!-- /help:NAME -->' where each belongs)", file=sys.stderr)
    usage_doc = USAGE_DOC.read_text() if USAGE_DOC.exists() else ""
    if documented_example(usage_doc) is None:
        missing.append("usage-json example")
        print("docs/usage-json.md has no example block (add '<!-- example:usage-json -->\\n"
              "```json\\n{}\\n```\\n<!-- /example:usage-json -->')", file=sys.stderr)
        new_usage_doc = usage_doc
    else:
        new_usage_doc = refresh_usage_doc(usage_doc, usage_example())
    if new_usage_doc != usage_doc:
        stale.append(str(USAGE_DOC.relative_to(REPO)))
    if args.check:
        for path in stale:
            print(f"stale: {path}")
        if not stale and not missing:
            print(f"up to date: {len(texts)} help texts and the usage.json example")
        return 1 if stale or missing else 0
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        golden_path(name).write_text(text)
    for extra in sorted(set(GOLDEN.glob("help-*.txt")) - {golden_path(n) for n in COMMANDS}):
        extra.unlink()
        print(f"removed {extra.relative_to(REPO)}")
    if new_doc != doc:
        CLI_DOC.write_text(new_doc)
    if new_usage_doc != usage_doc:
        USAGE_DOC.write_text(new_usage_doc)
    for path in stale:
        print(f"updated {path}")
    print(f"{len(texts)} help texts and the usage.json example checked; {len(stale)} file(s) "
          "rewritten")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
