"""`usaged demo`: the whole pipeline on bundled sample sessions, with a simulated agent.

The bundled sessions (real-format OpenClaw transcripts) are copied into a temporary folder with
their timestamps moved so that the newest line is a few minutes old; the daemon runs on them
with a config of its own, and an agent appends an assistant turn every few seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from usaged import config as config_mod
from usaged.daemon import Daemon

MODELS = [("anthropic", "claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75),
          ("anthropic", "claude-opus-4-5", 5.0, 25.0, 0.50, 6.25),
          ("anthropic", "claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25)]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _shift_line(raw: str, delta: float) -> str:
    try:
        line = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if isinstance(line.get("timestamp"), str):
        ts = dt.datetime.fromisoformat(line["timestamp"]).timestamp() + delta
        line["timestamp"] = _iso(ts)
    msg = line.get("message")
    if isinstance(msg, dict) and isinstance(msg.get("timestamp"), int | float):
        msg["timestamp"] = int(msg["timestamp"] + delta * 1000)
    return json.dumps(line, separators=(",", ":"))


def copy_sessions(dest: Path, now: float) -> list[Path]:
    """Copy the bundled sessions under dest/agents/main/sessions, ending a few minutes ago."""
    src = resources.files("usaged").joinpath("data/demo/agents/main/sessions")
    texts = {entry.name: entry.read_text("utf-8") for entry in src.iterdir()
             if entry.name.endswith(".jsonl")}
    latest = max(dt.datetime.fromisoformat(json.loads(ln)["timestamp"]).timestamp()
                 for text in texts.values() for ln in text.splitlines()
                 if ln.strip() and '"timestamp":"' in ln)
    delta = (now - 300) - latest
    out = dest / "agents" / "main" / "sessions"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(texts.items()):
        lines = [_shift_line(ln, delta) for ln in text.splitlines() if ln.strip()]
        path = out / name
        path.write_text("\n".join(lines) + "\n", "utf-8")
        written.append(path)
    return written


def agent_turn(rng: random.Random, now: float) -> str:
    provider, model, p_in, p_out, p_read, p_write = rng.choice(MODELS)
    usage = {"input": rng.randint(5, 60), "output": rng.randint(80, 1500),
             "cacheRead": rng.randint(10_000, 60_000), "cacheWrite": rng.randint(0, 3_000)}
    parts = {"input": usage["input"] * p_in / 1e6, "output": usage["output"] * p_out / 1e6,
             "cacheRead": usage["cacheRead"] * p_read / 1e6,
             "cacheWrite": usage["cacheWrite"] * p_write / 1e6}
    line: dict[str, Any] = {
        "type": "message", "id": f"{rng.getrandbits(32):08x}", "parentId": None,
        "timestamp": _iso(now),
        "message": {"role": "assistant", "content": [{"type": "text", "text": "(demo turn)"}],
                    "api": "anthropic-messages", "provider": provider, "model": model,
                    "usage": {**usage, "totalTokens": sum(usage.values()),
                              "cost": {**parts, "total": sum(parts.values())}},
                    "stopReason": "stop", "timestamp": int(now * 1000)}}
    return json.dumps(line, separators=(",", ":")) + "\n"


def run(duration: float | None, interval: float, folder: Path | None, out: Any) -> int:
    base = folder or Path(tempfile.mkdtemp(prefix="usaged-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    sessions = copy_sessions(base / "openclaw", time.time())
    cfg_path = base / "usaged.toml"
    cfg_path.write_text(tomli_w.dumps({
        "paths": {"state_dir": str(base / "state")},
        "sources": {"openclaw": {"roots": [str(base / "openclaw")]},
                    "claude_code": {"enabled": False}},
        "daemon": {"debounce_quiet": 0.5, "debounce_max": 2.0, "scan_interval": 30},
        "output": {"refresh_seconds": 5},
        "budget": {"monthly_usd": 1.5}, "capacity": {"weekly_tokens": 500_000},
        "balance": {"credit_usd": 20.0, "since": dt.date.today().replace(day=1).isoformat()},
    }))
    config = config_mod.load(str(cfg_path))
    daemon = Daemon(config, str(cfg_path))
    html = config.output_dir / "usage.html"
    print(f"usaged demo: {len(sessions)} sample sessions in {base / 'openclaw'}", file=out)
    print(f"dashboard:   {html.as_uri()}  (reloads every 5 s)", file=out)
    print(f"JSON:        {config.output_dir / 'usage.json'}", file=out)
    print("a simulated agent appends a turn every "
          f"{interval:g} s; stop with Ctrl-C" + (f" or after {duration:g} s" if duration else ""),
          file=out, flush=True)
    quit_agent = threading.Event()
    agent = threading.Thread(target=_agent, args=(daemon, quit_agent, sessions[-1], interval,
                                                  out), name="demo-agent")
    agent.start()
    timer = threading.Timer(duration or 0, _stop, args=(daemon, quit_agent, agent))
    if duration:
        timer.start()
    try:
        code = daemon.run()
    finally:
        timer.cancel()
        quit_agent.set()
        agent.join()
    print(f"usaged demo: stopped after {daemon.writes} dashboard writes; files kept in {base}",
          file=out)
    return code


def _stop(daemon: Daemon, quit_agent: threading.Event, agent: threading.Thread) -> None:
    """--duration is over: the agent stops first, so the daemon's last write sees every turn."""
    quit_agent.set()
    agent.join()
    daemon.stopping.set()
    daemon.inbox.wake()


def _agent(daemon: Daemon, quit_agent: threading.Event, session: Path, interval: float,
           out: Any) -> None:
    rng = random.Random(7)
    turns = 0
    while not quit_agent.wait(interval) and not daemon.stopping.is_set():
        with session.open("a", encoding="utf-8") as fh:
            fh.write(agent_turn(rng, time.time()))
        turns += 1
        print(f"agent: turn {turns} appended to {session.name}", file=out, flush=True)
