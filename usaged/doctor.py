"""`usaged doctor`: check what the installed service needs, and explain what is wrong.

Each check is ok / warn / fail with an explanation; command output (`launchctl print`,
`systemctl --user status`) is shown as is, never parsed beyond its exit code.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.parsers.expat import ExpatError

from usaged.config import Config, default_state_dir
from usaged.errors import UsagedError
from usaged.service import (
    DEFAULT_LABEL,
    INOTIFY_WATCHES,
    MIN_INOTIFY_WATCHES,
    PROTECTED,
    UNIT_NAME,
    Kind,
    Runner,
    ServiceSpec,
    Status,
    default_kind,
    systemd_split,
)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    output: str = ""  # a command's output, shown as is


def doctor(config: Config | UsagedError, runner: Runner, *,
           roots: Sequence[tuple[str, Path]] = (), kind: Kind | None = None,
           uid: int | None = None, label: str = DEFAULT_LABEL, interpreter: str | None = None,
           home: Path | None = None, platform: str = sys.platform,
           inotify_path: Path = INOTIFY_WATCHES,
           min_watches: int = MIN_INOTIFY_WATCHES) -> list[Check]:
    """Check what a running service needs; `config` is the load result or its error."""
    if isinstance(config, Config):
        home, state, output = config.home, config.state_dir, config.output_dir
        checks = [Check("config", "ok", f"{config.path} is valid" if config.path
                        else "no config file: using the defaults")]
        checks += [Check("config", "warn", warning) for warning in config.warnings]
    else:
        home = home or Path.home()
        state = default_state_dir(home)
        output = state / "dashboard"
        checks = [Check("config", "fail", str(config))]
    spec = ServiceSpec(kind or default_kind(platform), home, interpreter or sys.executable,
                       state, label)
    checks += [_check_interpreter(spec), _check_loaded(spec, os.getuid() if uid is None else uid,
                                                       runner),
               _check_writable("state folder", state), _check_writable("output folder", output)]
    checks += [_check_root(name, path, spec) for name, path in roots]
    watcher = config.get("daemon.watcher") if isinstance(config, Config) else "native"
    if platform.startswith("linux") and watcher == "native":
        checks.append(_check_inotify(inotify_path, min_watches))
    return checks


def installed_interpreter(spec: ServiceSpec) -> str | None:
    """The interpreter the installed service file runs (raises OSError/ValueError if unreadable)."""
    if spec.kind == "launchd":
        with spec.service_file.open("rb") as fh:
            args = plistlib.load(fh).get("ProgramArguments")
        return args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None
    for line in spec.service_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("ExecStart="):
            words = systemd_split(line.removeprefix("ExecStart="))
            return words[0] if words else None
    return None


def _check_interpreter(spec: ServiceSpec) -> Check:
    where = spec.service_file
    try:
        named = installed_interpreter(spec)
    except FileNotFoundError:
        return Check("interpreter", "warn", f"not installed ({where} does not exist): run "
                     "`usaged install`")
    except (OSError, ValueError, ExpatError) as exc:  # InvalidFileException is a ValueError
        return Check("interpreter", "fail", f"cannot read {where}: {exc}; run `usaged install`")
    if named is None:
        return Check("interpreter", "fail", f"{where} names no interpreter; run `usaged install`")
    if not (os.path.isfile(named) and os.access(named, os.X_OK)):
        return Check("interpreter", "fail", f"{named}, named in {where}, does not exist: the "
                     "service cannot start (a Homebrew, pyenv or uv upgrade moves interpreters; "
                     "a deleted virtualenv takes its own). Reinstall from the environment that "
                     f"has usaged: `{spec.interpreter} -m usaged install`")
    same = os.path.realpath(named) == os.path.realpath(spec.interpreter)
    note = "" if same else (f" (this command runs {spec.interpreter}; `usaged install` from it "
                            "switches the service to it)")
    return Check("interpreter", "ok", f"{named} exists{note}")


def status_command(spec: ServiceSpec, uid: int) -> tuple[str, ...]:
    if spec.kind == "launchd":
        return ("launchctl", "print", f"gui/{uid}/{spec.label}")
    return ("systemctl", "--user", "status", UNIT_NAME)


def _check_loaded(spec: ServiceSpec, uid: int, runner: Runner) -> Check:
    argv = status_command(spec, uid)
    done = runner.run(argv)
    output, cmd = (done.stdout + done.stderr).strip(), shlex.join(argv)
    if done.returncode == 0:
        return Check("service", "ok", f"`{cmd}` succeeded (its output below)", output)
    if not spec.service_file.exists():
        return Check("service", "warn", f"not installed, not running (`{cmd}` exited "
                     f"{done.returncode}): run `usaged install`", output)
    logs = (f"{spec.log_dir}/usaged.err.log" if spec.kind == "launchd"
            else f"`journalctl --user -u {UNIT_NAME}`")
    return Check("service", "fail", f"installed but not running (`{cmd}` exited "
                 f"{done.returncode}): read {logs}, then run `usaged install` again", output)


def _check_writable(name: str, path: Path) -> Check:
    target = path
    while not target.exists() and target.parent != target:
        target = target.parent
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        return Check(name, "fail", f"{path}: cannot write in {target} ({exc.strerror})")
    if target != path:
        return Check(name, "ok", f"{path} does not exist yet; usaged creates it")
    return Check(name, "ok", f"{path} is writable")


def _protected(path: Path, home: Path) -> bool:
    places = [home / p for p in PROTECTED] + [Path("/Volumes")]
    candidates = (path, Path(os.path.realpath(path)))
    return any(c.is_relative_to(p) for c in candidates for p in places)


def _check_root(name: str, path: Path, spec: ServiceSpec) -> Check:
    title = f"source {name}"
    fda = ""
    if spec.kind == "launchd" and _protected(path, spec.home):
        real = os.path.realpath(spec.interpreter)
        fda = (f"; it is in a privacy-protected folder: give Full Disk Access to {real} (System "
               "Settings > Privacy & Security > Full Disk Access > +, then Cmd-Shift-G and "
               "paste the path), not to the symlink or your terminal")
    try:
        if not path.exists():
            return Check(title, "warn", f"{path} does not exist yet: nothing to count until it "
                         f"does (if your transcripts are elsewhere, set sources.{name}.roots)")
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        return Check(title, "fail", f"{path} is not readable ({exc.strerror}){fda}")
    if fda:
        return Check(title, "warn", f"{path} is readable from here, but the agent runs without "
                     f"your terminal's permissions{fda}")
    return Check(title, "ok", f"{path} is readable")


def _check_inotify(path: Path, minimum: int) -> Check:
    try:
        value = int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        return Check("inotify", "warn", f"cannot read {path} ({exc}); if watching fails, set "
                     "daemon.watcher = 'polling'")
    if value < minimum:
        return Check("inotify", "warn", f"fs.inotify.max_user_watches is {value} (below "
                     f"{minimum}); editors and sync tools share this per-user limit. Raise it: "
                     "`echo fs.inotify.max_user_watches=524288 | sudo tee "
                     "/etc/sysctl.d/90-inotify.conf && sudo sysctl --system`, or set "
                     "daemon.watcher = 'polling'")
    return Check("inotify", "ok", f"fs.inotify.max_user_watches is {value}")


def worst(checks: Sequence[Check]) -> Status:
    statuses = {c.status for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


def format_checks(checks: Sequence[Check]) -> str:
    lines: list[str] = []
    for check in checks:
        lines.append(f"{check.status.upper():<5} {check.name}: {check.detail}")
        lines += [f"      | {line}" for line in check.output.splitlines()]
    return "\n".join(lines)


