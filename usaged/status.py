"""`usaged status`: is the daemon alive, how current is the ledger, what are the figures.

Running is decided by the kernel lock in the state dir (a stale or reused pid never reads as
running); the heartbeat in the ledger says when it was last seen. The ledger is opened
read-only and no transcript is read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

from usaged import pipeline
from usaged.config import Config
from usaged.ledger import Ledger


def _float(meta: dict[str, str], key: str) -> float | None:
    try:
        return float(meta[key])
    except (KeyError, ValueError):
        return None


def _iso(ts: float | None, zone: Any) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, zone).isoformat()


def gather(config: Config) -> dict[str, Any]:
    """The status report. Raises StateError for a corrupt or too-new state database."""
    db = config.state_dir / pipeline.DB_NAME
    lock = pipeline.state_lock(config)
    running = lock.is_held()
    report: dict[str, Any] = {"running": running, "state": "running" if running else "stopped",
                              "state_dir": str(config.state_dir), "database": str(db),
                              "config": str(config.path) if config.path else None}
    if not db.exists():
        report.update(state="never started" if not running else "starting",
                      pid=lock.holder_pid() if running else None)
        return report
    ledger = Ledger.open_readonly(db)
    try:
        meta = ledger.meta()
        now = time.time()
        last_scan, last_write = _float(meta, "last_scan"), _float(meta, "last_write")
        seen, started = _float(meta, "heartbeat_at"), _float(meta, "started_at")
        zone = config.zone
        stats = ledger.stats()
        daemon = {"state": report["state"], "pid": lock.holder_pid() if running else None,
                  "watcher": meta.get("watcher")}
        doc = pipeline.build_document(config, ledger, pipeline.now_utc(), daemon,
                                      (now - last_scan) if last_scan else None)
    finally:
        ledger.close()
    report.update({
        "pid": daemon["pid"],
        "last_seen": _iso(seen, zone),
        "uptime_seconds": (now - started) if running and started else None,
        "watcher": meta.get("watcher"),
        "watcher_degraded": meta.get("watcher_degraded") == "1",
        "last_scan": _iso(last_scan, zone),
        "last_write": _iso(last_write, zone),
        "lag_seconds": (now - last_write) if last_write else None,
        "files": stats["files"], "files_gone": stats["gone"], "events": stats["events"],
        "bad_lines": stats["bad_lines"], "unreadable_files": stats["unreadable"],
        "database_bytes": _db_bytes(db),
        "price_table": meta.get("price_table_date"),
        "config_error": meta.get("config_error") or None,
        "week": doc["windows"]["week"], "last_7_days": doc["windows"]["last_7_days"],
        "month": doc["windows"]["month"], "budget": doc["budget"],
        "capacity": doc["capacity"], "balance": doc["balance"], "alerts": doc["alerts"],
        "output": str(pipeline.output_paths(config)[0]),
    })
    if not running:
        report["state"] = "stopped"
    return report


def _db_bytes(db: Path) -> int:
    """The database with its WAL and shared-memory files (not the `.broken-*` ones set aside)."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(f"{db}{suffix}").stat().st_size
    return total


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    return f"{s // 86400} days ago"


def _since(iso: str | None) -> float | None:
    return None if iso is None else time.time() - dt.datetime.fromisoformat(iso).timestamp()


def _tokens(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def format_text(r: dict[str, Any]) -> str:
    if r["state"] == "never started":
        return (f"usaged: not running (never started here)\nstate:   {r['state_dir']} "
                "(no ledger yet)\nstart it with `usaged run`, or `usaged install` for a service")
    if r["state"] == "starting":  # the lock is held but the ledger is not created yet
        return (f"usaged: starting (pid {r['pid'] or 'unknown'}); no ledger yet in "
                f"{r['state_dir']}")
    lines = []
    if r["running"]:
        up = r["uptime_seconds"] or 0
        degraded = " (DEGRADED: events off, scanning)" if r["watcher_degraded"] else ""
        lines.append(f"usaged: running (pid {r['pid']}, up {_ago(up)[:-4]}), watcher "
                     f"{r['watcher']}{degraded}")
    elif r["last_seen"] is None:
        lines.append("usaged: not running (the daemon has never run on this state; "
                     "start it with `usaged run` or `usaged install`)")
    else:
        lines.append(f"usaged: stopped (last seen {r['last_seen']}, "
                     f"{_ago(_since(r['last_seen']))})")
    lines.append(f"state:   {r['database']} ({r['database_bytes'] / 1e6:.1f} MB); last scan "
                 f"{_ago(_since(r['last_scan']))}, last write {_ago(r['lag_seconds'])}")
    lines.append(f"files:   {r['files']} tracked ({r['files_gone']} gone), "
                 f"{r['unreadable_files']} unreadable; {r['events']:,} events; "
                 f"{r['bad_lines']} bad lines")
    lines.append(f"prices:  shipped table of {r['price_table'] or 'unknown date'}")
    cap = r["capacity"]
    week = f"week:    {_tokens(r['week']['tokens']['total'])} tokens this week; last 7 days " \
           f"{_tokens(r['last_7_days']['tokens']['total'])}"
    if cap["weekly_tokens"]:
        week += f" of {_tokens(cap['weekly_tokens'])} ({cap['used_ratio']:.1%} used, " \
                f"{cap['left_ratio']:.1%} left)"
    lines.append(week)
    b = r["budget"]
    month = f"month:   ${r['month']['cost_usd']:.2f}"
    if b["monthly_usd"]:
        month += f" of ${b['monthly_usd']:.2f} budget ({b['ratio']:.1%})"
        if b["projected_month_usd"] is not None:
            month += f", projected ${b['projected_month_usd']:.2f}"
    if r["month"]["unpriced_calls"]:
        month += f" + {r['month']['unpriced_calls']} unpriced calls"
    lines.append(month)
    bal = r["balance"]
    lines.append("balance: not tracked" if not bal["tracked"] else
                 f"balance: ${bal['balance_usd']:.2f} left of ${bal['credit_usd']:.2f} "
                 f"(since {bal['since'][:10]})")
    if r["config_error"]:
        lines.append(f"config:  ERROR, running on the last good config: {r['config_error']}")
    if r["alerts"]:
        lines.extend(f"alert:   [{a['level']}] {a['title']}: {a['message']}"
                     for a in r["alerts"])
    else:
        lines.append("alerts:  none")
    lines.append(f"output:  {r['output']}")
    return "\n".join(lines)
