"""Measure the daemon: append -> usage.json latency, CPU per append, RSS, idle CPU.

    python benchmarks/daemon_latency.py [--files 2000] [--appends 40] [--idle 60]

Builds a temporary OpenClaw tree of --files transcripts, starts `python -m usaged run` on it
(native watcher, scan interval one hour so only events explain an update), appends one line at
a time and times until usage.json shows it. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def line(n: int) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return (json.dumps({
        "type": "message", "id": f"{n:08x}", "parentId": None, "timestamp": ts,
        "message": {"role": "assistant", "provider": "anthropic", "model": "claude-opus-4-5",
                    "usage": {"input": 10, "output": n % 1000 + 1, "cacheRead": 500,
                              "cacheWrite": 0, "cost": {"total": 0.001}},
                    "timestamp": int(time.time() * 1000) + n}}) + "\n").encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return 0.0


def calls(out: Path) -> int:
    try:
        return int(json.loads(out.read_text())["windows"]["all_time"]["calls"])
    except (OSError, ValueError, KeyError):
        return -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--appends", type=int, default=40)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU sampling")
    ap.add_argument("--quiet", type=float, default=0.2, help="debounce_quiet (s)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="usaged-bench-"))
    sessions = base / "oc" / "agents" / "main" / "sessions"
    sessions.mkdir(parents=True)
    n = 0
    for i in range(args.files):
        n += 1
        (sessions / f"s{i:05d}.jsonl").write_bytes(line(n))
    cfg = base / "usaged.toml"
    cfg.write_text(f'timezone = "UTC"\n[paths]\nstate_dir = "{base}/state"\n'
                   f'[sources.openclaw]\nroots = ["{base}/oc"]\n[sources.claude_code]\n'
                   f'enabled = false\n[daemon]\nscan_interval = 3600\n'
                   f'debounce_quiet = {args.quiet}\ndebounce_max = 2.0\nmin_interval = 0.0\n')
    out = base / "state" / "dashboard" / "usage.json"
    proc = subprocess.Popen([sys.executable, "-m", "usaged", "--config", str(cfg), "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        while calls(out) != args.files:
            time.sleep(0.05)
            if time.monotonic() - start > 300:
                raise SystemExit("daemon did not settle")
        cold = time.monotonic() - start
        time.sleep(1.0)
        latencies = []
        cpu0 = cpu_seconds(proc.pid)
        for k in range(args.appends):
            n += 1
            want = args.files + k + 1
            target = sessions / f"s{(k * 37) % args.files:05d}.jsonl"
            t0 = time.monotonic()
            with target.open("ab") as fh:
                fh.write(line(n))
            while calls(out) != want:
                time.sleep(0.002)
            latencies.append((time.monotonic() - t0) * 1000)
            time.sleep(args.quiet + 0.3)
        cpu_per_append = (cpu_seconds(proc.pid) - cpu0) / args.appends * 1000
        rss = rss_mib(proc.pid)
        time.sleep(2.0)
        idle0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle = (cpu_seconds(proc.pid) - idle0) / (time.monotonic() - t0) * 100
        lat = sorted(latencies)
        p95 = lat[max(0, round(0.95 * len(lat)) - 1)]
        print(f"files                          {args.files}")
        print(f"first scan + write (s)         {cold:.2f}")
        print(f"append -> usage.json median ms {statistics.median(lat):.1f}  "
              f"(debounce_quiet {args.quiet * 1000:.0f} ms)")
        print(f"append -> usage.json p95 ms    {p95:.1f}")
        print(f"CPU per append (ms)            {cpu_per_append:.1f}")
        print(f"steady RSS (MiB)               {rss:.1f}")
        print(f"idle CPU over {args.idle:.0f} s (%)        {idle:.3f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
