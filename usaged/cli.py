"""The command line: argument parsing and the one error funnel.

Exit codes (docs/cli.md): 0 done; 1 runtime failure; 2 bad usage or config;
3 the daemon is not running (`usaged status` only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from usaged import __version__, logs
from usaged.config import Config, from_mapping, load
from usaged.errors import (
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_USAGE,
    ConfigError,
    UsagedError,
    UsageError,
)

EPILOG = """\
exit codes: 0 done, 1 failure, 2 bad usage or config, 3 daemon not running (status)
config: --config FILE, else $USAGED_CONFIG, else ~/.config/usaged/usaged.toml
docs: docs/cli.md, docs/configuration.md"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usaged",
        description="An exact, always-current usage dashboard for the AI agents you run\n"
                    "(OpenClaw / Clawdbot, Claude Code).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"usaged {__version__}")
    parser.add_argument("--config", metavar="FILE", help="config file (TOML)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="log detail on stderr (default: info)")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto",
                        help="JSON lines or readable text (default: JSON unless a terminal)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    scan = sub.add_parser(
        "scan", help="bring the ledger up to date once, write the outputs, exit",
        description="Read what was appended to the transcripts since the last scan, update "
                    "the ledger, write usage.json and usage.html, print a one-line summary.")
    scan.add_argument("--now", metavar="ISO",
                      help="compute every window as of this instant (ISO-8601; without an "
                           "offset it is read in the configured zone); later events are "
                           "left out")
    scan.set_defaults(func=cmd_scan)

    run = sub.add_parser(
        "run", help="run the daemon in the foreground (what launchd / systemd start)",
        description="Watch the transcripts, keep the ledger current and rewrite the outputs "
                    "within seconds of every change. Stops cleanly on SIGTERM / SIGINT.")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser(
        "status", help="is the daemon running; how current are the figures; alerts",
        description="Report on the daemon (from its lock and heartbeat) and the current "
                    "figures, read from the ledger without scanning transcripts. Exit code 0 "
                    "when the daemon runs, 3 when it does not, 1 when the state is unusable.")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    conf = sub.add_parser("config", help="show or edit the config file",
                          description="Show or edit the config file (TOML). `set` validates "
                                      "the value; a running daemon picks changes up by itself.")
    csub = conf.add_subparsers(dest="action", metavar="ACTION", required=True)
    csub.add_parser("path", help="print the config file's path")
    csub.add_parser("show", help="print the effective configuration, every key")
    init = csub.add_parser("init", help="write the documented example config")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    cset = csub.add_parser("set", help="set KEY to VALUE (e.g. budget.monthly_usd 75)")
    cset.add_argument("key", help="dotted key, e.g. budget.monthly_usd (see `config show`)")
    cset.add_argument("value", help="a TOML value: 75, 0.9, \"UTC\", '[\"~/a\"]'; a bare word "
                                    "is a string")
    cunset = csub.add_parser("unset", help="remove KEY (back to its default)")
    cunset.add_argument("key", help="dotted key, e.g. budget.monthly_usd")
    conf.set_defaults(func=cmd_config)

    demo = sub.add_parser(
        "demo", help="run the whole pipeline on bundled sample sessions, no set-up needed",
        description="Copy bundled sample sessions into a temporary folder, run the daemon on "
                    "them and simulate an agent appending a turn every few seconds. Prints the "
                    "dashboard's path. Stops on Ctrl-C or after --duration seconds.")
    demo.add_argument("--duration", type=float, metavar="SECONDS",
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--interval", type=float, default=3.0, metavar="SECONDS",
                      help="seconds between simulated agent turns (default: 3)")
    demo.add_argument("--dir", metavar="FOLDER", help="work in this folder (kept afterwards)")
    demo.set_defaults(func=cmd_demo)

    install = sub.add_parser(
        "install", help="run usaged as a service (launchd agent on macOS, systemd --user unit "
                        "on Linux)",
        description="Write the launchd plist (or systemd user unit) for this interpreter and "
                    "load it. Idempotent. --dry-run prints the file and the exact commands and "
                    "changes nothing.")
    install.add_argument("--kind", choices=["launchd", "systemd"],
                         help="service manager (default: launchd on macOS, systemd elsewhere)")
    install.add_argument("--dry-run", action="store_true", help="print, change nothing")
    install.set_defaults(func=cmd_install)
    uninstall = sub.add_parser(
        "uninstall", help="stop and remove the service (state and outputs are kept)",
        description="Stop and remove the service. The ledger and the dashboard are kept "
                    "unless --purge is given.")
    uninstall.add_argument("--kind", choices=["launchd", "systemd"],
                           help="service manager (default: by platform)")
    uninstall.add_argument("--purge", action="store_true",
                           help="also delete the state folder and the outputs")
    uninstall.add_argument("--dry-run", action="store_true", help="print, change nothing")
    uninstall.set_defaults(func=cmd_uninstall)
    doctor = sub.add_parser(
        "doctor", help="check the installation and explain what is wrong",
        description="Check the service file's interpreter, the source folders (and Full Disk "
                    "Access on macOS), the state and output folders, the config, whether the "
                    "service is loaded, and inotify limits on Linux. Exit 1 if a check fails.")
    doctor.add_argument("--kind", choices=["launchd", "systemd"],
                        help="service manager (default: by platform)")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    fmt = None if args.log_format == "auto" else args.log_format == "json"
    logs.configure(args.log_level, json=fmt)
    try:
        code: int = args.func(args)
        return code
    except UsagedError as exc:
        print(f"usaged: {exc}", file=sys.stderr)
        return exc.exit_code
    except sqlite3.DatabaseError as exc:
        print(f"usaged: state database error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `usaged status | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def load_config(args: argparse.Namespace) -> Config:
    config = load(args.config)
    for warning in config.warnings:
        print(f"usaged: warning: {warning}", file=sys.stderr)
    return config


def parse_now(raw: str | None, config: Config) -> dt.datetime | None:
    """An ISO-8601 instant; without an offset it is local to the configured zone, and a date
    alone means the END of that day (`--now 2026-12-03` is "as of December 3")."""
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            value = dt.datetime.combine(day, dt.time.max)
        else:
            value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"--now: not an ISO-8601 date or time: {raw!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=config.zone)
    return value.astimezone(dt.UTC)


def cmd_scan(args: argparse.Namespace) -> int:
    from usaged import pipeline

    config = load_config(args)
    now = parse_now(args.now, config)
    lock = pipeline.state_lock(config)
    if not lock.acquire():
        raise UsagedError(
            f"the daemon is running (pid {lock.holder_pid()}) and keeps "
            f"{pipeline.output_paths(config)[0]} current; `usaged status` shows the figures")
    ledger = pipeline.open_ledger(config)
    try:
        ingestor = pipeline.Ingestor(config, ledger)
        for root in ingestor.roots():
            if not root.path.is_dir():
                print(f"usaged: warning: {root.source.name} folder not found: {root.path} "
                      "(nothing read from it)", file=sys.stderr)
        progress = _progress if sys.stderr.isatty() else None
        counters = ingestor.scan_all(progress)
        if progress:
            print("\r\033[K", end="", file=sys.stderr)
        scanned = pipeline.now_utc()
        daemon = {"state": "scan", "pid": os.getpid(), "watcher": None,
                  "last_scan": scanned.astimezone(config.zone).isoformat()}
        doc = pipeline.build_document(config, ledger, now or scanned, daemon)
        json_path, html_path = pipeline.write_outputs(config, doc, ledger)
        ledger.set_meta({"last_scan": str(scanned.timestamp()),
                         "last_write": str(pipeline.now_utc().timestamp())})
    finally:
        ledger.close()
        lock.release()
    month = doc["windows"]["month"]
    unread = f", {len(counters.unreadable)} unreadable" if counters.unreadable else ""
    print(f"scanned {counters.files_seen} files ({counters.files_read} read, "
          f"{_size(counters.bytes_read)}): {counters.events_new} new events, "
          f"{counters.bad_lines} bad lines{unread}; month {month['tokens']['total']:,} tokens, "
          f"${month['cost_usd']:.2f}; wrote {json_path} and {html_path.name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from usaged import daemon

    return daemon.run(load_config(args), args.config)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from usaged import status
    from usaged.config import load_lenient

    # lenient: an invalid edit must not hide the daemon's state; it is shown as a warning
    try:
        config = load_lenient(args.config)
    except ConfigError as exc:
        if exc.key is not None or "file not found" in exc.reason:
            raise
        print(f"usaged: warning: {exc}; looking for the daemon with the default settings",
              file=sys.stderr)
        config = from_mapping({}, None, Path.home())
    for warning in config.warnings:
        print(f"usaged: warning: {warning}", file=sys.stderr)
    report = status.gather(config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(status.format_text(report))
    return 0 if report["running"] else EXIT_NOT_RUNNING


def cmd_config(args: argparse.Namespace) -> int:
    from usaged import configfile
    from usaged.config import resolve_config_path

    home = Path.home()
    path, _ = resolve_config_path(args.config, home)
    if args.action == "path":
        print(path)
    elif args.action == "show":
        print(configfile.show(load_config(args)), end="")
    elif args.action == "init":
        configfile.init(path, args.force)
        print(f"wrote {path}")
    elif args.action == "set":
        value = configfile.set_value(path, args.key, args.value, home)
        print(f"{args.key} = {value!r} in {path}")
    else:
        removed = configfile.unset_value(path, args.key, home)
        print(f"{args.key} {'removed from' if removed else 'was not set in'} {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from usaged import demo

    if args.log_level == "info":  # the demo prints its own story; daemon logs only on trouble
        fmt = None if args.log_format == "auto" else args.log_format == "json"
        logs.configure("warning", json=fmt)
    folder = Path(args.dir) if args.dir else None
    return demo.run(args.duration, args.interval, folder, sys.stdout)


def cmd_install(args: argparse.Namespace) -> int:
    from usaged import service
    from usaged.config import resolve_config_path

    config = load_config(args)
    path, explicit = resolve_config_path(args.config, config.home)
    result = service.install(config, service.SubprocessRunner(), kind=args.kind,
                             dry_run=args.dry_run,
                             config_path=path.resolve() if explicit else None)
    print(result.report())
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from usaged import service

    result = service.uninstall(load_config(args), service.SubprocessRunner(), kind=args.kind,
                               purge=args.purge, dry_run=args.dry_run)
    print(result.report())
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from usaged import doctor, service
    from usaged.sources import enabled_sources

    try:
        config: Config | UsagedError = load_config(args)
    except UsagedError as exc:
        config = exc
    roots = [] if not isinstance(config, Config) else [
        (src.name, root) for src in enabled_sources(config)
        for root in src.roots(config, os.environ)]
    checks = doctor.doctor(config, service.SubprocessRunner(), roots=roots, kind=args.kind)
    print(doctor.format_checks(checks))
    return EXIT_FAILURE if doctor.worst(checks) == "fail" else 0


def _progress(i: int, n: int, path: str) -> None:
    if i == n or i % 25 == 0:
        print(f"\rscanning {i}/{n} files  {Path(path).name[:50]}\033[K", end="",
              file=sys.stderr, flush=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover
