"""Measure `usaged status` on a large ledger: wall time of the command and of its parts.

    python benchmarks/status_bench.py [--events 200000] [--sessions 2000] [--days 90] [--runs 7]

Builds a temporary state database with --events usage events spread over the last --days days
and --sessions sessions (committed through Ledger.commit_batch, a few batches per file, as the
ingest path does), then times `python -m usaged --config X status --json` as a subprocess (the
wall time a person waits, interpreter start included) and `status.gather` in-process (the work
itself). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

from usaged import config as config_mod
from usaged import status
from usaged.ledger import Ledger
from usaged.values import FileCursor, FileIdentity, PricedEvent, Tokens, UsageEvent

MODELS = [("anthropic", "claude-opus-4-5"), ("anthropic", "claude-sonnet-4-5"),
          ("openai", "gpt-5"), ("ollama", "llama3-local")]
BATCH = 10_000


def build(db: Path, events: int, sessions: int, days: int, seed: int = 7) -> float:
    """Fill the ledger; returns the seconds it took."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    now = time.time()
    started = time.monotonic()
    ledger = Ledger.open(db)
    try:
        files = max(1, events // BATCH)
        for f in range(files):
            batch = []
            for i in range(f * BATCH, min(events, (f + 1) * BATCH)):
                provider, model = MODELS[i % len(MODELS)]
                tokens = Tokens(input=rng.randint(1, 5000), output=rng.randint(1, 3000),
                                cache_read=rng.randint(0, 200_000),
                                cache_write=rng.randint(0, 20_000))
                cost = None if provider == "ollama" else tokens.total * 3e-6
                event = UsageEvent(key=i + 1, source="openclaw",
                                   ts=now - rng.random() * days * 86400,
                                   agent=f"agent{i % 3}", session=f"s{rng.randrange(sessions)}",
                                   provider=provider, model=model, tokens=tokens,
                                   line_cost=cost)
                batch.append(PricedEvent(event, cost, "line" if cost is not None else "none"))
            cursor = FileCursor(path=f"/bench/{f}.jsonl", source="openclaw",
                                identity=FileIdentity(0, 0, b"", b""), offset=len(batch),
                                size=len(batch), mtime_ns=0)
            ledger.commit_batch(cursor, batch)
        ledger.set_meta({"heartbeat_at": str(now), "last_scan": str(now),
                         "last_write": str(now), "started_at": str(now - 3600),
                         "watcher": "native", "watcher_degraded": "0"})
    finally:
        ledger.close()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="usaged-status-bench-") as tmp:
        root = Path(tmp)
        state = root / "state"
        cfg = root / "usaged.toml"
        cfg.write_text(tomli_w.dumps({
            "timezone": "America/Los_Angeles", "paths": {"state_dir": str(state)},
            "sources": {"openclaw": {"enabled": False}, "claude_code": {"enabled": False}},
            "budget": {"monthly_usd": 500}, "capacity": {"weekly_tokens": 5_000_000_000},
            "balance": {"credit_usd": 1000, "since": "2020-01-01"}}))
        env = {**os.environ, "HOME": str(root / "home"), "XDG_STATE_HOME": str(root / "xs"),
               "XDG_CONFIG_HOME": str(root / "xc")}
        build_s = build(state / "usaged.db", args.events, args.sessions, args.days)
        db_mb = sum(p.stat().st_size for p in state.glob("usaged.db*")) / 1e6

        cmd = [sys.executable, "-m", "usaged", "--config", str(cfg), "status", "--json"]
        wall = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, check=False)
            wall.append(time.perf_counter() - t0)
            if proc.returncode not in (0, 3):
                sys.exit(f"status failed ({proc.returncode}): {proc.stderr.decode()}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import usaged.cli"], env=env, check=True)
        startup = time.perf_counter() - t0

        conf = config_mod.load(str(cfg), root / "home")
        inproc = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            status.gather(conf)
            inproc.append(time.perf_counter() - t0)

    print(f"ledger: {args.events:,} events, {args.sessions:,} sessions, {args.days} days, "
          f"{db_mb:.1f} MB (built in {build_s:.1f} s)")
    print(f"{'measure':44} {'median':>9} {'min':>9} {'max':>9}")
    for name, xs in (("`usaged status --json` wall (subprocess)", wall),
                     ("status.gather in-process", inproc)):
        print(f"{name:44} {statistics.median(xs) * 1000:8.0f}ms {min(xs) * 1000:8.0f}ms "
              f"{max(xs) * 1000:8.0f}ms")
    print(f"{'python -c import usaged.cli (startup)':44} {startup * 1000:8.0f}ms")


if __name__ == "__main__":
    main()
