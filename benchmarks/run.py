"""usaged against ccusage 20.0.24, side by side in one run; prints one table and the targets.

    python benchmarks/run.py                      # quick: the 100 MB corpora
    python benchmarks/run.py --sizes 1gb,2gb      # what docs/performance.md reports

Corpora come from ../shared/tools/gen_corpus.py (both formats) and land in bench-data/ (ignored
by git, never committed); they are generated once and reused. ccusage is installed once with
`npm install ccusage@20.0.24` into bench-data/ccusage. Its npm bin is a node shim that starts a
native binary: the benchmark runs that binary directly, so neither npx nor node start-up is
counted against it. Without npm the ccusage columns say "skipped".

Every figure is the median of --runs runs; usaged and ccusage runs alternate (u, c, u, c ...)
on a warm page cache. Wall time is measured around the process; CPU (user + system, children
included) comes from os.wait4. Peak memory, for both tools alike, is the larger of wait4's max
RSS (the largest single process) and the peak of the PSS summed over the process tree, sampled
every 10 ms: usaged's cold scan forks parse workers that share most pages with their parent, and
PSS counts a shared page once in all. The RSS summed over the tree (shared pages counted in
every process) is printed too. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CCUSAGE_VERSION = "20.0.24"


@dataclass(frozen=True)
class Size:
    name: str
    files: int
    mb: int


SIZES = {s.name: s for s in (Size("100mb", 211, 100), Size("1gb", 2000, 1024),
                              Size("2gb", 10000, 2048))}
FORMATS = ("claude", "openclaw")


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    cpu: float  # seconds, user + system, waited-for children included
    rss: float  # MiB, peak: PSS summed over the process tree, at least wait4's max RSS
    rss_sum: float = 0.0  # MiB, peak RSS summed over the process tree (shared pages n times)


@dataclass
class Row:
    measure: str
    size: str
    usaged: str
    ccusage: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(Row(*cells))

    def print(self) -> None:
        head = ("measure", "size", "usaged", f"ccusage {CCUSAGE_VERSION}", "ratio", "target",
                "result")
        table = [head] + [(r.measure, r.size, r.usaged, r.ccusage, r.ratio, r.target, r.result)
                          for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        for n, row in enumerate(table):
            print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
            if n == 0:
                print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for note in self.notes:
            print(f"- {note}")


# -- processes -----------------------------------------------------------------------------


def tree_memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) summed over a process and all its descendants, in MiB (0 once gone).

    PSS counts a page shared by n processes as 1/n in each (forked workers share most of their
    parent's pages), so the PSS sum is the memory the tree really holds; the RSS sum counts
    shared pages once per process."""
    rss = pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for row in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if row.startswith(("Rss:", "Pss:")):
                    kib = int(row.split()[1])
                    if row.startswith("Rss:"):
                        rss += kib
                    else:
                        pss += kib
            for task in os.listdir(f"/proc/{p}/task"):
                stack += [int(c) for c in Path(f"/proc/{p}/task/{task}/children")
                          .read_text().split()]
        except (OSError, ValueError):
            continue
    return rss / 1024, pss / 1024


def run_measured(cmd: Sequence[str], env: dict[str, str], sample_tree: bool = False,
                 stdout: Path | None = None) -> Sample:
    """Run one command to completion; wall, CPU and peak RSS of it (and its children)."""
    out = stdout.open("wb") if stdout else subprocess.DEVNULL
    peak = [0.0, 0.0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE, cwd=_cwd(env))
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            rss, pss = tree_memory_mib(proc.pid)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_tree:
        sampler.start()
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sample_tree:
        sampler.join()
    if stdout:
        out.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    maxrss = usage.ru_maxrss / 1024  # KiB on Linux: the largest single process of the tree
    return Sample(wall, usage.ru_utime + usage.ru_stime, max(maxrss, peak[0]),
                  max(maxrss, peak[1]))


def _cwd(env: dict[str, str]) -> str:
    """`python -m` puts the working folder first on sys.path: run in the tree under test."""
    return env.get("PYTHONPATH") or str(REPO)


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.wall for s in samples),
                  statistics.median(s.cpu for s in samples),
                  statistics.median(s.rss for s in samples),
                  statistics.median(s.rss_sum for s in samples))


def alternate(runs: int, first: Callable[[], Sample], second: Callable[[], Sample] | None
              ) -> tuple[Sample, Sample | None]:
    a: list[Sample] = []
    b: list[Sample] = []
    for _ in range(runs):
        a.append(first())
        if second:
            b.append(second())
    return median(a), (median(b) if b else None)


# -- corpora and tools ---------------------------------------------------------------------


def ensure_corpus(data: Path, gen: Path, fmt: str, size: Size) -> Path:
    out = data / "corpus" / f"{fmt}-{size.name}"
    marker = out.with_suffix(".json")
    if marker.exists() and out.is_dir():
        return out
    shutil.rmtree(out, ignore_errors=True)
    print(f"generating {fmt} corpus {size.name} ({size.files} files) ...", file=sys.stderr)
    res = subprocess.run([sys.executable, str(gen), "--format", fmt, "--out", str(out),
                          "--sessions", str(size.files), "--total-mb", str(size.mb),
                          "--seed", "1"], check=True, capture_output=True, text=True)
    marker.write_text(res.stdout.strip().splitlines()[-1] + "\n")
    return out


def warm_page_cache(root: Path) -> None:
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb", buffering=0) as fh:
                while fh.read(1 << 24):
                    pass


def ensure_ccusage(data: Path, report: Report) -> list[str] | None:
    """The command that runs ccusage 20.0.24 without npx: its native binary, else node + shim."""
    prefix = data / "ccusage"
    pkg = prefix / "node_modules" / "ccusage"
    if not (pkg / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            report.notes.append("ccusage skipped: npm is not installed")
            return None
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"ccusage@{CCUSAGE_VERSION}"], check=True, capture_output=True)
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "")
    native = (prefix / "node_modules" / "@ccusage" / f"ccusage-{sys.platform}-{arch}" / "bin"
              / "ccusage")
    if native.exists():
        return [str(native)]
    node = shutil.which("node")
    if node is None:
        report.notes.append("ccusage skipped: no native binary and no node")
        return None
    bin_rel = json.loads((pkg / "package.json").read_text())["bin"]["ccusage"]
    return [node, str(pkg / bin_rel)]


# -- usaged set-ups ------------------------------------------------------------------------


def write_config(folder: Path, fmt: str, corpus: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "claude":
        sources = (f'[sources.claude_code]\nroots = ["{corpus}"]\n'
                   "[sources.openclaw]\nenabled = false\n")
    else:
        sources = (f'[sources.openclaw]\nroots = ["{corpus / ".openclaw"}"]\n'
                   "[sources.claude_code]\nenabled = false\n")
    cfg = folder / "usaged.toml"
    cfg.write_text(f'timezone = "UTC"\n[paths]\nstate_dir = "{folder / "state"}"\n'
                   f"{sources}{extra}")
    return cfg


def usaged_cmd(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "usaged", "--log-format", "json", "--config", str(cfg), *args]


def all_time_calls(state: Path) -> int:
    try:
        doc = json.loads((state / "dashboard" / "usage.json").read_text())
        return int(doc["windows"]["all_time"]["calls"])
    except (OSError, ValueError, KeyError):
        return -1


def claude_line(n: int, nonce: str, session: str) -> bytes:
    """One assistant row with usage, unique per (nonce, n)."""
    now = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return (json.dumps({
        "parentUuid": None, "isSidechain": False, "type": "assistant", "sessionId": session,
        "timestamp": ts, "uuid": f"bench-{nonce}-{n}", "requestId": f"req_bench_{nonce}_{n}",
        "message": {"id": f"msg_bench_{nonce}_{n}", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929", "content": [],
                    "usage": {"input_tokens": 10, "output_tokens": n % 1000 + 1,
                              "cache_read_input_tokens": 500,
                              "cache_creation_input_tokens": 0}}},
        separators=(",", ":")) + "\n").encode()


class Appender:
    """Appends usage rows to corpus files and restores their sizes afterwards."""

    def __init__(self, corpus: Path) -> None:
        self.files = sorted(corpus.glob("projects/*/*.jsonl"))
        self.sizes: dict[Path, int] = {}
        self.nonce = f"{os.getpid()}{int(time.time())}"
        self.n = 0

    def append(self) -> None:
        self.n += 1
        path = self.files[(self.n * 7919) % len(self.files)]
        self.sizes.setdefault(path, path.stat().st_size)
        with path.open("ab") as fh:
            fh.write(claude_line(self.n, self.nonce, path.stem))

    def restore(self) -> None:
        for path, size in self.sizes.items():
            os.truncate(path, size)
        self.sizes.clear()


# -- the measurements ----------------------------------------------------------------------


def ratio_row(report: Report, measure: str, size: str, ours: float, theirs: float | None,
              fmt: str, limit: float | None) -> float | None:
    if theirs is None:
        report.add(measure, size, fmt.format(ours), "skipped")
        return None
    ratio = ours / theirs if theirs else float("inf")
    target = f"<= {limit:g}x" if limit is not None else ""
    result = ("PASS" if ratio <= limit else "MISS") if limit is not None else ""
    report.add(measure, size, fmt.format(ours), fmt.format(theirs), f"{ratio:.2f}x", target,
               result)
    return ratio


def cold_scans(args: argparse.Namespace, report: Report, data: Path, cc: list[str] | None,
               env: dict[str, str], fmt: str, size: Size, corpus: Path) -> dict[str, float]:
    work = data / "runs" / f"{fmt}-{size.name}"
    cfg = write_config(work, fmt, corpus)
    state = work / "state"
    warm_page_cache(corpus)

    def ours() -> Sample:
        shutil.rmtree(state, ignore_errors=True)
        return run_measured(usaged_cmd(cfg, "scan"), env, sample_tree=True)

    theirs: Callable[[], Sample] | None = None
    out = work / "ccusage.json"
    if cc is not None:
        if fmt == "claude":
            cc_cmd = [*cc, "claude", "daily", "--json", "--offline"]
            cc_env = {**env, "CLAUDE_CONFIG_DIR": str(corpus)}
        else:
            cc_cmd = [*cc, "openclaw", "daily", "--json", "--offline", "--open-claw-path",
                      str(corpus / ".openclaw")]
            cc_env = env

        def theirs() -> Sample:
            return run_measured(cc_cmd, cc_env, sample_tree=True, stdout=out)

    u, c = alternate(args.runs, ours, theirs)
    label = "Claude Code" if fmt == "claude" else "OpenClaw"
    big = size.name in ("1gb", "2gb")
    ratio_row(report, f"cold scan wall s ({label})", size.name, u.wall, c and c.wall,
              "{:.2f}", 0.5 if big else None)
    report.add(f"cold scan CPU s ({label})", size.name, f"{u.cpu:.2f}",
               f"{c.cpu:.2f}" if c else "skipped")
    ratio_row(report, f"cold scan peak memory MiB ({label})", size.name, u.rss, c and c.rss,
              "{:.0f}", 0.5 if big else None)
    report.add(f"cold scan peak RSS summed over processes MiB ({label})", size.name,
               f"{u.rss_sum:.0f}", f"{c.rss_sum:.0f}" if c else "skipped")
    if c is not None:
        ours_tokens = _usaged_tokens(state)
        theirs_tokens = json.loads(out.read_text()).get("totals", {}).get("totalTokens")
        report.notes.append(f"{label} {size.name}: all-time tokens usaged {ours_tokens:,}, "
                            f"ccusage daily {theirs_tokens:,}")
    return {"ccusage_wall": c.wall if c else float("nan"), "usaged_wall": u.wall}


def _usaged_tokens(state: Path) -> int:
    doc = json.loads((state / "dashboard" / "usage.json").read_text())
    return int(doc["windows"]["all_time"]["tokens"]["total"])


def warm_and_append(args: argparse.Namespace, data: Path, env: dict[str, str], size: Size,
                    corpus: Path) -> tuple[Sample, Sample]:
    """`usaged scan` with nothing changed, then after one appended row (state already full)."""
    work = data / "runs" / f"claude-{size.name}"
    cfg = write_config(work, "claude", corpus)
    if all_time_calls(work / "state") < 0:
        run_measured(usaged_cmd(cfg, "scan"), env)
    warm = median([run_measured(usaged_cmd(cfg, "scan"), env) for _ in range(args.runs)])
    appender = Appender(corpus)
    samples = []
    try:
        for _ in range(args.runs):
            appender.append()
            samples.append(run_measured(usaged_cmd(cfg, "scan"), env))
    finally:
        appender.restore()
        shutil.rmtree(work / "state", ignore_errors=True)  # its offsets no longer match
    return warm, median(samples)


def status_runs(args: argparse.Namespace, data: Path, env: dict[str, str], size: Size,
                corpus: Path) -> Sample:
    work = data / "runs" / f"claude-{size.name}"
    cfg = write_config(work, "claude", corpus)
    if all_time_calls(work / "state") < 0:
        run_measured(usaged_cmd(cfg, "scan"), env)
    return median([_status(cfg, env) for _ in range(args.runs)])


def _status(cfg: Path, env: dict[str, str]) -> Sample:
    t0 = time.perf_counter()
    proc = subprocess.run(usaged_cmd(cfg, "status"), env=env, capture_output=True,
                          cwd=_cwd(env))
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):  # 3: the daemon is not running, as expected here
        raise SystemExit(f"usaged status failed: {proc.stderr.decode()[-2000:]}")
    return Sample(wall, 0.0, 0.0)


def daemon_runs(args: argparse.Namespace, data: Path, env: dict[str, str], size: Size,
                corpus: Path) -> dict[str, float]:
    from daemon_latency import cpu_seconds, rss_mib  # benchmarks/ is on sys.path

    work = data / "runs" / f"daemon-{size.name}"
    shutil.rmtree(work, ignore_errors=True)
    quiet = args.debounce
    cfg = write_config(work, "claude", corpus,
                       f"[daemon]\ndebounce_quiet = {quiet}\ndebounce_max = 2.0\n"
                       "min_interval = 0.0\n")
    state = work / "state"
    out = state / "dashboard" / "usage.json"
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen(usaged_cmd(cfg, "run"), env=env, stdout=log, stderr=log,
                            cwd=_cwd(env))
    appender = Appender(corpus)
    try:
        t0 = time.monotonic()
        while True:  # settled: the first full scan is written and nothing moves any more
            before = all_time_calls(state)
            time.sleep(1.0)
            if before > 0 and all_time_calls(state) == before:
                break
            if time.monotonic() - t0 > 1800 or proc.poll() is not None:
                raise SystemExit(f"daemon did not settle; see {work / 'daemon.log'}")
        first = time.monotonic() - t0
        base = all_time_calls(state)
        time.sleep(1.0)
        latencies = []
        cpu0 = cpu_seconds(proc.pid)
        for k in range(args.appends):
            want = base + k + 1
            stamp = out.stat().st_mtime_ns
            t1 = time.monotonic()
            appender.append()
            while True:
                st = out.stat().st_mtime_ns
                if st != stamp:
                    stamp = st
                    if all_time_calls(state) >= want:
                        break
                if time.monotonic() - t1 > 30:
                    raise SystemExit("usage.json did not show an appended row within 30 s")
                time.sleep(0.001)
            latencies.append((time.monotonic() - t1) * 1000)
            time.sleep(quiet + 0.3)
        cpu_per_append = (cpu_seconds(proc.pid) - cpu0) / args.appends * 1000
        rss = rss_mib(proc.pid)
        time.sleep(2.0)
        idle0, t2 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle = (cpu_seconds(proc.pid) - idle0) / (time.monotonic() - t2) * 100
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
        appender.restore()
    lat = sorted(latencies)
    return {"first": first, "p50": statistics.median(lat),
            "p95": lat[max(0, round(0.95 * len(lat)) - 1)], "cpu": cpu_per_append,
            "rss": rss, "idle": idle, "quiet_ms": quiet * 1000}


# -- main ----------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100mb",
                    help="comma-separated subset of 100mb (211 files), 1gb (2,000 files), "
                         "2gb (10,000 files); default: 100mb")
    ap.add_argument("--runs", type=int, default=5, help="runs per figure (median); default 5")
    ap.add_argument("--only", default="cold,warm,status,daemon",
                    help="sections to run (comma-separated); default: all")
    ap.add_argument("--appends", type=int, default=30, help="daemon appends per size")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle-CPU sampling")
    ap.add_argument("--debounce", type=float, default=0.2, help="daemon.debounce_quiet (s)")
    ap.add_argument("--data", type=Path, default=REPO / "bench-data",
                    help="where corpora, ccusage and states go (git-ignored)")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="run usaged from this source tree (e.g. a copy of an older version)")
    ap.add_argument("--gen", type=Path, default=REPO.parent / "shared" / "tools" /
                    "gen_corpus.py", help="the corpus generator")
    args = ap.parse_args()
    sizes = [SIZES[s.strip()] for s in args.sizes.split(",") if s.strip()]
    only = set(args.only.split(","))
    data: Path = args.data.resolve()
    home = data / "home"  # neither tool may read the real home folder
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(args.src.resolve()),
           "NO_COLOR": "1"}
    env.pop("CLAUDE_CONFIG_DIR", None)
    report = Report()
    cc = ensure_ccusage(data, report)
    if cc:
        report.notes.append(f"ccusage: {' '.join(cc)} (native binary of the npm package)")
    cc_wall: dict[str, float] = {}
    warm: dict[str, tuple[Sample, Sample]] = {}
    for size in sizes:
        corpora = {fmt: ensure_corpus(data, args.gen, fmt, size) for fmt in FORMATS}
        if "cold" in only:
            for fmt in FORMATS:
                got = cold_scans(args, report, data, cc, env, fmt, size, corpora[fmt])
                if fmt == "claude":
                    cc_wall[size.name] = got["ccusage_wall"]
        if "warm" in only:
            warm[size.name] = warm_and_append(args, data, env, size, corpora["claude"])
        if "status" in only:
            st = status_runs(args, data, env, size, corpora["claude"])
            theirs = cc_wall.get(size.name)
            ratio_row(report, "`usaged status` wall s vs ccusage claude daily", size.name,
                      st.wall, theirs if theirs and theirs == theirs else None, "{:.3f}",
                      0.05 if size.name == "1gb" else None)
        if "daemon" in only:
            d = daemon_runs(args, data, env, size, corpora["claude"])
            files = f"{size.name} ({size.files:,} files)"
            limit = d["quiet_ms"] + 20
            ten_k = size.name == "2gb"
            report.add("daemon first scan + write s", files, f"{d['first']:.1f}")
            report.add("append -> usage.json p50 ms", files, f"{d['p50']:.0f}", "", "",
                       f"<= {limit:.0f} (debounce + 20)" if ten_k else "",
                       ("PASS" if d["p50"] <= limit else "MISS") if ten_k else "")
            report.add("append -> usage.json p95 ms", files, f"{d['p95']:.0f}")
            report.add("daemon CPU per append ms", files, f"{d['cpu']:.1f}")
            report.add("daemon steady RSS MiB", files, f"{d['rss']:.0f}", "", "",
                       "<= 60" if ten_k else "",
                       ("PASS" if d["rss"] <= 60 else "MISS") if ten_k else "")
            report.add(f"daemon idle CPU % over {args.idle:.0f} s", files, f"{d['idle']:.3f}",
                       "", "", "<= 0.1", "PASS" if d["idle"] <= 0.1 else "MISS")
    for name, (w, a) in warm.items():
        files = f"{name} ({SIZES[name].files:,} files)"
        report.add("warm scan (nothing changed) wall s", files, f"{w.wall:.3f}")
        report.add("one-append scan wall s", files, f"{a.wall:.3f}")
        report.add("one-append scan CPU s", files, f"{a.cpu:.3f}")
    if "1gb" in warm and "2gb" in warm:
        r = warm["2gb"][1].wall / warm["1gb"][1].wall
        report.add("one-append scan wall, 10k / 2k files", "2gb / 1gb", f"{r:.2f}x", "", "",
                   "<= 1.2x", "PASS" if r <= 1.2 else "MISS")
    report.notes.append(f"machine: {machine()}; runs per figure: {args.runs} (median), "
                        f"alternating usaged / ccusage; daemon debounce_quiet "
                        f"{args.debounce * 1000:.0f} ms, scan_interval 60 s (default)")
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
