"""Service management: run usaged as a launchd agent (macOS) or a systemd user unit (Linux).

Every external command goes through a `Runner` as an argument list (never a shell). Building the
service file and the list of steps is pure (`launchd_plist`, `systemd_unit`, `install_plan`,
`uninstall_plan`); `install` / `uninstall` run a plan. None of them print.

How the CLI calls it (`config` from `config.load`; the home folder is `config.home`):

    runner = service.SubprocessRunner()
    path, explicit = usaged.config.resolve_config_path(args.config, config.home)
    result = service.install(config, runner, kind=args.kind, dry_run=args.dry_run,
                             config_path=path if explicit else None)   # -> ServiceResult
    print(result.report())
    result = service.uninstall(config, runner, kind=args.kind, purge=args.purge)
    print(result.report())

`usaged doctor` lives in usaged/doctor.py and reuses the spec and runner from here.

`install` / `uninstall` raise `ServiceError` (one line, exit 1) when a step fails.
`python -m usaged.service --write-golden` regenerates `launchd/io.github.usaged.plist`.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from usaged.config import Config
from usaged.errors import ServiceError
from usaged.fsio import atomic_write

Kind = Literal["launchd", "systemd"]
Status = Literal["ok", "warn", "fail"]

DEFAULT_LABEL = "io.github.usaged"
STOP_TIMEOUT = 20  # seconds launchd / systemd wait after SIGTERM before SIGKILL
UNIT_NAME = "usaged.service"
PROCESS_TYPES = frozenset({"Background", "Standard", "Adaptive", "Interactive"})
LAUNCHD_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
MIN_INOTIFY_WATCHES = 65536
GOLDEN = Path(__file__).resolve().parent.parent / "launchd" / f"{DEFAULT_LABEL}.plist"
# Folders macOS guards with privacy permissions (TCC), relative to home; plus /Volumes.
PROTECTED = ("Desktop", "Documents", "Downloads", "Pictures", "Library/Mail", "Library/Messages",
             "Library/Safari", "Library/Mobile Documents", "Library/CloudStorage")
BOOTSTRAP_HINT = ("'Bootstrap failed: 5: Input/output error' usually means the agent is still "
                  "loaded (run `usaged uninstall`, then `usaged install`), disabled, or the "
                  "plist is invalid (`plutil -lint`); run `usaged doctor` and see "
                  "docs/operations.md")
SYSTEMD_HINT = ("`systemctl --user` needs your user session (log in, or run "
                "`loginctl enable-linger $USER`); `usaged doctor` explains more")


class Completed(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def run(self, argv: Sequence[str]) -> Completed:
        """Run one command (an argument list, no shell) and return its exit code and output."""


@dataclass(frozen=True, slots=True)
class SubprocessRunner:
    timeout: float = 60.0

    def run(self, argv: Sequence[str]) -> Completed:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, encoding="utf-8",
                                  errors="replace", check=False, timeout=self.timeout)
        except FileNotFoundError:
            return Completed(127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return Completed(124, "", f"{argv[0]}: no answer after {self.timeout:g} s")
        return Completed(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """Everything a service file depends on. `spec_for` builds it from a config."""

    kind: Kind
    home: Path
    interpreter: str
    state_dir: Path
    label: str = DEFAULT_LABEL
    config_path: Path | None = None

    @property
    def service_file(self) -> Path:
        if self.kind == "launchd":
            return self.home / "Library" / "LaunchAgents" / f"{self.label}.plist"
        return self.home / ".config" / "systemd" / "user" / UNIT_NAME

    @property
    def log_dir(self) -> Path:
        return self.home / "Library" / "Logs" / "usaged"

    def argv(self) -> list[str]:
        config = ["--config", str(self.config_path)] if self.config_path else []
        return [self.interpreter, "-m", "usaged", *config, "run"]


def default_kind(platform: str = sys.platform) -> Kind:
    return "launchd" if platform == "darwin" else "systemd"


def check_interpreter(path: str, kind: Kind = "launchd") -> str:
    """`path` if launchd/systemd can exec it as written; else ServiceError saying why."""
    if "~" in path or "$" in path:
        raise ServiceError(f"interpreter {path!r}: write it out in full: launchd and systemd "
                           "expand neither '~' nor '$VAR'")
    if not os.path.isabs(path):
        raise ServiceError(f"interpreter {path!r}: must be an absolute path")
    if "/shims/" in path:
        raise ServiceError(f"interpreter {path!r} is a pyenv shim; name the real one "
                           "(`pyenv which python`)")
    _check_chars("interpreter", path)
    if kind == "systemd" and any(c in path for c in "\"'\\"):
        raise ServiceError(f"interpreter {path!r}: systemd refuses an executable path holding a "
                           "quote or backslash; move the virtualenv to a plainer path")
    return path


def _check_chars(what: str, text: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ServiceError(f"{what} {text!r}: control characters are not allowed")


def spec_for(config: Config, *, kind: Kind | None = None, interpreter: str | None = None,
             label: str = DEFAULT_LABEL, config_path: str | Path | None = None,
             platform: str = sys.platform) -> ServiceSpec:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", label):
        raise ServiceError(f"label {label!r}: use reverse-DNS letters, digits, '.' and '-'")
    state = config.state_dir
    if not state.is_absolute():
        raise ServiceError(f"paths.state_dir {str(state)!r}: must be an absolute path")
    _check_chars("paths.state_dir", str(state))
    conf = Path(os.path.abspath(config_path)) if config_path else None
    if conf:
        _check_chars("config path", str(conf))
    return ServiceSpec(kind=kind or default_kind(platform), home=config.home, label=label,
                       interpreter=interpreter or sys.executable, state_dir=state,
                       config_path=conf)


# --- service files (pure) -------------------------------------------------------------------

def launchd_plist(spec: ServiceSpec) -> dict[str, Any]:
    logs = spec.log_dir
    return {
        "Label": spec.label,
        "ProgramArguments": spec.argv(),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 30,
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "Nice": 10,
        "ExitTimeOut": STOP_TIMEOUT,
        "StandardOutPath": str(logs / "usaged.out.log"),
        "StandardErrorPath": str(logs / "usaged.err.log"),
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1", "PYTHONUTF8": "1",
                                 "PATH": LAUNCHD_PATH},
        "WorkingDirectory": str(spec.state_dir),
        "SoftResourceLimits": {"NumberOfFiles": 4096},
    }


def plist_bytes(spec: ServiceSpec) -> bytes:
    return plistlib.dumps(launchd_plist(spec), fmt=plistlib.FMT_XML, sort_keys=True)


_SAFE_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPES = {"n": "\n", "t": "\t", "r": "\r", "s": " "}


def systemd_quote(arg: str) -> str:
    """One ExecStart= argument written so that systemd reads back exactly `arg`."""
    if _SAFE_WORD.fullmatch(arg):
        return arg
    body = "".join(_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127
                                       else c) for c in arg)
    return '"' + body.replace("%", "%%").replace("$", "$$") + '"'


def systemd_split(line: str) -> list[str]:
    """The arguments systemd reads from an ExecStart= value (the inverse of `systemd_quote`)."""
    words: list[str] = []
    text, i, word, quote, started = line.replace("%%", "%"), 0, "", "", False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x":
                word, i = word + chr(int(text[i + 2:i + 4], 16)), i + 4
                continue
            word, i = word + _UNESCAPES.get(nxt, nxt), i + 2
            continue
        if quote:
            quote, word = ("", word) if c == quote else (quote, word + c)
        elif c in "\"'":
            quote, started = c, True
        elif c.isspace():
            if started or word:
                words.append(word)
            word, started = "", False
        else:
            word += c
        i += 1
    if quote:
        raise ValueError(f"unbalanced quoting in {line!r}")
    if started or word:
        words.append(word)
    return [w.replace("$$", "$") for w in words]


def systemd_unit(spec: ServiceSpec) -> str:
    exec_start = " ".join(systemd_quote(arg) for arg in spec.argv())
    return f"""\
# Written by `usaged install`; changes here are overwritten. See docs/operations.md.
[Unit]
Description=usaged: usage dashboard for AI-agent transcripts
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
ExecStart={exec_start}
WorkingDirectory={str(spec.state_dir).replace("%", "%%")}
Restart=on-failure
RestartSec=10
TimeoutStopSec={STOP_TIMEOUT}
Nice=10
IOSchedulingClass=idle
LimitNOFILE=4096
Environment=PYTHONUNBUFFERED=1 PYTHONUTF8=1

[Install]
WantedBy=default.target
"""


def service_file_content(spec: ServiceSpec) -> bytes:
    return plist_bytes(spec) if spec.kind == "launchd" else systemd_unit(spec).encode()


# --- plans: the steps of install / uninstall (pure) -----------------------------------------

@dataclass(frozen=True, slots=True)
class Run:
    argv: tuple[str, ...]
    may_fail: str = ""  # why a failure is fine; empty: a failure stops with ServiceError
    hint: str = ""  # added to the ServiceError


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: Path
    mode: int = 0o755


@dataclass(frozen=True, slots=True)
class WriteFile:
    path: Path
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Remove:
    path: Path
    what: Literal["file", "tree", "empty_dir"] = "file"


Step = Run | MakeDir | WriteFile | Remove


@dataclass(frozen=True, slots=True)
class Plan:
    action: Literal["install", "uninstall"]
    kind: Kind
    service_file: Path
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()

    @property
    def commands(self) -> list[tuple[str, ...]]:
        return [step.argv for step in self.steps if isinstance(step, Run)]


def install_plan(spec: ServiceSpec, uid: int, previous: bytes | None = None) -> Plan:
    """Steps to install (or reinstall) the service; `previous` is the file it replaces."""
    content = service_file_content(spec)
    dirs = (MakeDir(spec.state_dir, 0o700),)
    if spec.kind == "launchd":
        target = f"gui/{uid}/{spec.label}"
        steps: tuple[Step, ...] = (
            *dirs, MakeDir(spec.log_dir),
            Run(("launchctl", "bootout", target), may_fail="the agent was not loaded"),
            WriteFile(spec.service_file, content),
            Run(("launchctl", "bootstrap", f"gui/{uid}", str(spec.service_file)),
                hint=BOOTSTRAP_HINT))
        notes: tuple[str, ...] = (f"logs: {spec.log_dir}/",
                                  f"restart: launchctl kickstart -k {target}",
                                  "check: usaged doctor")
    else:
        ctl = ("systemctl", "--user")
        restart = (Run((*ctl, "restart", UNIT_NAME), hint=SYSTEMD_HINT),) if (
            previous is not None and previous != content) else ()
        steps = (*dirs, WriteFile(spec.service_file, content),
                 Run((*ctl, "daemon-reload"), hint=SYSTEMD_HINT),
                 Run((*ctl, "enable", "--now", UNIT_NAME), hint=SYSTEMD_HINT), *restart)
        notes = (f"logs: journalctl --user -u {UNIT_NAME}",
                 f"restart: systemctl --user restart {UNIT_NAME}",
                 "keep it running while you are logged out: loginctl enable-linger $USER",
                 "check: usaged doctor")
    return Plan("install", spec.kind, spec.service_file, steps, notes)


def uninstall_plan(spec: ServiceSpec, uid: int, purge: bool = False,
                   output_dir: Path | None = None, output_files: Sequence[str] = ()) -> Plan:
    """Steps to stop and remove the service; with `purge`, also usaged's state and outputs."""
    if spec.kind == "launchd":
        steps: list[Step] = [
            Run(("launchctl", "bootout", f"gui/{uid}/{spec.label}"),
                may_fail="the agent was not loaded"),
            Remove(spec.service_file)]
    else:
        ctl = ("systemctl", "--user")
        steps = [Run((*ctl, "disable", "--now", UNIT_NAME), may_fail="it was not enabled"),
                 Remove(spec.service_file),
                 Run((*ctl, "daemon-reload"), may_fail="no user session; the unit is gone")]
    kept = f"{spec.state_dir}" + (f" and {output_dir}" if output_dir else "")
    notes = [f"kept: {kept} (`usaged uninstall --purge` removes usaged's files there)"]
    if purge:
        steps += _purge_steps(spec, output_dir, output_files)
        notes = []
    return Plan("uninstall", spec.kind, spec.service_file, tuple(steps), tuple(notes))


def _purge_steps(spec: ServiceSpec, output_dir: Path | None,
                 output_files: Sequence[str]) -> list[Step]:
    for folder in (spec.state_dir, output_dir):
        if folder and (folder == Path(folder.anchor) or spec.home.is_relative_to(folder)):
            raise ServiceError(f"refusing to delete {folder}: it holds your home folder; "
                               "remove usaged's files there by hand")
    if "usaged" not in spec.state_dir.name.lower():
        raise ServiceError(f"refusing to delete {spec.state_dir}: paths.state_dir is not a folder "
                           "named for usaged, so it may hold other files; remove usaged's files "
                           "there by hand")
    steps: list[Step] = [Remove(spec.state_dir, "tree")]
    if output_dir and not output_dir.is_relative_to(spec.state_dir):
        # A configured output folder may hold other files: remove only usaged's own.
        steps += [Remove(output_dir / name) for name in output_files]
        steps.append(Remove(output_dir, "empty_dir"))
    if spec.kind == "launchd":
        steps.append(Remove(spec.log_dir, "tree"))
    return steps


def describe(step: Step) -> str:
    """A step as the command a person would type (for dry runs and reports)."""
    if isinstance(step, Run):
        return shlex.join(step.argv) + (f"   # may fail: {step.may_fail}" if step.may_fail else "")
    where = shlex.quote(str(step.path))
    if isinstance(step, MakeDir):
        return f"mkdir -p -m {step.mode:o} {where}"
    if isinstance(step, WriteFile):
        return f"write {where} (mode {step.mode:04o}, atomically)"
    verb = {"file": "rm -f", "tree": "rm -rf", "empty_dir": "rmdir (if empty)"}[step.what]
    return f"{verb} {where}"


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """What `install` / `uninstall` did (`log`), or, for a dry run, would do."""

    plan: Plan
    dry_run: bool
    log: tuple[str, ...] = ()

    def report(self) -> str:
        plan = self.plan
        if self.dry_run:
            lines = [f"Dry run: nothing was changed. `usaged {plan.action}` would, in order:"]
            lines += [f"  {n}. {describe(s)}" for n, s in enumerate(plan.steps, 1)]
            for step in plan.steps:
                if isinstance(step, WriteFile):
                    lines += ["", f"--- {step.path} ---", step.content.decode().rstrip("\n")]
        else:
            lines = [f"{plan.action}ed the {plan.kind} service {plan.service_file}:"]
            lines += [f"  {entry}" for entry in self.log]
        return "\n".join(lines + ([""] if plan.notes else []) + list(plan.notes))


def execute(plan: Plan, runner: Runner) -> tuple[str, ...]:
    """Run the steps in order; stop with ServiceError at the first one that must not fail."""
    log: list[str] = []
    for step in plan.steps:
        if isinstance(step, Run):
            done = runner.run(step.argv)
            output = " ".join((done.stderr.strip() or done.stdout.strip()).split())
            if done.returncode == 0:
                log.append(f"ran: {shlex.join(step.argv)}")
            elif step.may_fail:
                log.append(f"ran: {shlex.join(step.argv)} (exit {done.returncode}, fine: "
                           f"{step.may_fail})")
            else:
                raise ServiceError(f"`{shlex.join(step.argv)}` failed with exit code "
                                   f"{done.returncode}: {output or 'no output'}. {step.hint}")
            continue
        try:
            _apply(step)
        except OSError as exc:
            raise ServiceError(f"{exc.filename or step.path}: {exc.strerror}") from None
        log.append(f"did: {describe(step)}")
    return tuple(log)


def _apply(step: MakeDir | WriteFile | Remove) -> None:
    if isinstance(step, MakeDir):
        step.path.mkdir(parents=True, exist_ok=True, mode=step.mode)
    elif isinstance(step, WriteFile):
        atomic_write(step.path, step.content, mode=step.mode)
    elif step.what == "tree":
        if step.path.is_dir():
            shutil.rmtree(step.path)
    elif step.what == "empty_dir":
        if step.path.is_dir() and not any(step.path.iterdir()):
            step.path.rmdir()
    else:
        step.path.unlink(missing_ok=True)


# --- the three entry points -----------------------------------------------------------------

def install(config: Config, runner: Runner, *, kind: Kind | None = None, uid: int | None = None,
            interpreter: str | None = None, label: str = DEFAULT_LABEL,
            config_path: str | Path | None = None, dry_run: bool = False,
            platform: str = sys.platform) -> ServiceResult:
    """Install or reinstall the service and start it. A dry run changes nothing, on any OS."""
    spec = spec_for(config, kind=kind, interpreter=interpreter, label=label,
                    config_path=config_path, platform=platform)
    check_interpreter(spec.interpreter, spec.kind)
    try:
        previous: bytes | None = spec.service_file.read_bytes()
    except OSError:
        previous = None
    plan = install_plan(spec, os.getuid() if uid is None else uid, previous)
    if dry_run:
        return ServiceResult(plan, dry_run=True)
    if spec.kind != default_kind(platform):
        raise ServiceError(f"a {spec.kind} service cannot run on {platform}; "
                           "`usaged install --dry-run` shows its files on any system")
    if not (os.path.isfile(spec.interpreter) and os.access(spec.interpreter, os.X_OK)):
        raise ServiceError(f"interpreter {spec.interpreter}: not an executable file")
    return ServiceResult(plan, dry_run=False, log=execute(plan, runner))


def uninstall(config: Config, runner: Runner, *, kind: Kind | None = None,
              uid: int | None = None, label: str = DEFAULT_LABEL, purge: bool = False,
              dry_run: bool = False, platform: str = sys.platform) -> ServiceResult:
    """Stop and remove the service. State and outputs stay unless `purge`."""
    spec = spec_for(config, kind=kind, label=label, platform=platform)
    outputs = [config.get("output.json_name"), config.get("output.html_name")]
    plan = uninstall_plan(spec, os.getuid() if uid is None else uid, purge,
                          config.output_dir, outputs)
    if dry_run:
        return ServiceResult(plan, dry_run=True)
    return ServiceResult(plan, dry_run=False, log=execute(plan, runner))


# --- the golden plist (developer helper) ----------------------------------------------------

def golden_plist() -> bytes:
    """The plist for placeholder paths: what launchd/io.github.usaged.plist must hold."""
    home = Path("/Users/USER")
    return plist_bytes(ServiceSpec("launchd", home, "/usr/local/bin/python3",
                                   home / "Library" / "Application Support" / "usaged"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usaged.service",
                                     description="Print the golden launchd plist.")
    parser.add_argument("--write-golden", action="store_true", help=f"write it to {GOLDEN}")
    args = parser.parse_args(argv)
    if args.write_golden:
        atomic_write(GOLDEN, golden_plist())
        print(f"wrote {GOLDEN}")
    else:
        sys.stdout.write(golden_plist().decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
