"""Service management: plist/unit generation, install/uninstall against fake launchctl and
systemctl executables on PATH, and `doctor` checks. Nothing here touches the real home."""

from __future__ import annotations

import configparser
import json
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usaged import doctor, service
from usaged.config import Config, from_mapping
from usaged.errors import ConfigError, ServiceError
from usaged.service import Completed, ServiceSpec, SubprocessRunner

PY = sys.executable
LABEL = service.DEFAULT_LABEL

FAKE = """\
#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open({log!r}, "a") as fh:
    fh.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
loaded = {loaded!r}
if name == "launchctl" and sys.argv[1] == "bootout":
    if not os.path.exists(loaded):
        print("Boot-out failed: 3: No such process", file=sys.stderr)
        sys.exit(3)
    os.remove(loaded)
if name == "launchctl" and sys.argv[1] == "bootstrap":
    if os.environ.get("FAKE_FAIL") == "bootstrap":
        print("Bootstrap failed: 5: Input/output error", file=sys.stderr)
        sys.exit(5)
    if not os.path.exists(sys.argv[-1]):
        print("Bootstrap failed: 2: No such file or directory", file=sys.stderr)
        sys.exit(2)
    open(loaded, "w").close()
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def make_config(home: Path, **paths: str) -> Config:
    return from_mapping({"paths": {"state_dir": str(home / "usaged"), **paths}}, None, home)


@pytest.fixture
def config(home: Path) -> Config:
    return make_config(home)


@pytest.fixture
def commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[list[str]]]:
    """Fake launchctl and systemctl first on PATH; returns a reader of the argv they got."""
    bin_dir, log = tmp_path / "bin", tmp_path / "commands.log"
    bin_dir.mkdir()
    for name in ("launchctl", "systemctl"):
        fake = bin_dir / name
        fake.write_text(FAKE.format(python=PY, log=str(log), loaded=str(tmp_path / "loaded")))
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def read() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return read


class FakeRunner:
    def __init__(self, result: Completed | None = None) -> None:
        self.result = result or Completed(0, "", "")
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str]) -> Completed:
        self.calls.append(tuple(argv))
        return self.result


def spec(home: Path, kind: service.Kind = "launchd", interpreter: str = PY,
         **kw: Any) -> ServiceSpec:
    return ServiceSpec(kind, home, interpreter, home / "usaged", **kw)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*"))


# --- the plist ------------------------------------------------------------------------------

def test_plist_round_trips_through_plistlib(home: Path) -> None:
    data = service.plist_bytes(spec(home))
    assert plistlib.loads(data) == service.launchd_plist(spec(home))
    assert data.startswith(b"<?xml")


def test_plist_values_have_launchd_types(home: Path) -> None:
    plist = plistlib.loads(service.plist_bytes(spec(home)))
    bools = {"RunAtLoad": True, "LowPriorityIO": True}
    ints = {"ThrottleInterval": 30, "Nice": 10, "ExitTimeOut": 20}
    for key, value in bools.items():  # bool first: True is also an int
        assert isinstance(plist[key], bool) and plist[key] is value, key
    for key, number in ints.items():
        assert not isinstance(plist[key], bool) and isinstance(plist[key], int), key
        assert plist[key] == number
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["KeepAlive"]["SuccessfulExit"] is False
    limit = plist["SoftResourceLimits"]["NumberOfFiles"]
    assert not isinstance(limit, bool) and limit == 4096
    assert all(isinstance(v, str) for v in plist["EnvironmentVariables"].values())
    assert plist["EnvironmentVariables"] == {
        "PYTHONUNBUFFERED": "1", "PYTHONUTF8": "1", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    assert not {"WatchPaths", "StartInterval"} & plist.keys()


def test_plist_paths_are_absolute(home: Path) -> None:
    plist = service.launchd_plist(spec(home))
    assert plist["ProgramArguments"] == [PY, "-m", "usaged", "run"]
    for key in ("StandardOutPath", "StandardErrorPath", "WorkingDirectory"):
        assert os.path.isabs(plist[key]), key
    assert os.path.isabs(plist["ProgramArguments"][0])
    assert Path(plist["StandardErrorPath"]).parent == home / "Library" / "Logs" / "usaged"
    assert plist["WorkingDirectory"] == str(home / "usaged")


@pytest.mark.parametrize("label", [LABEL, "com.example.usage"])
def test_plist_label_is_the_file_name_stem(home: Path, label: str) -> None:
    target = spec(home, label=label)
    assert service.launchd_plist(target)["Label"] == label
    assert target.service_file.name == f"{label}.plist"
    assert target.service_file.parent == home / "Library" / "LaunchAgents"


def test_plist_process_type_is_allowed(home: Path) -> None:
    assert service.launchd_plist(spec(home))["ProcessType"] in service.PROCESS_TYPES
    assert {"Background", "Standard", "Adaptive", "Interactive"} == service.PROCESS_TYPES


def test_golden_plist_matches_generated() -> None:
    golden = Path(__file__).resolve().parent.parent / "launchd" / f"{LABEL}.plist"
    assert golden.read_bytes() == service.golden_plist(), (
        "launchd/io.github.usaged.plist is stale: run `python -m usaged.service --write-golden` "
        "and review the diff")


def test_config_path_is_passed_before_the_command(home: Path, config: Config) -> None:
    target = service.spec_for(config, kind="launchd", config_path=home / "u.toml")
    assert service.launchd_plist(target)["ProgramArguments"] == [
        PY, "-m", "usaged", "--config", str(home / "u.toml"), "run"]


@pytest.mark.parametrize("bad", ["python3", "bin/python", "~/venv/bin/python",
                                 "$HOME/venv/bin/python", "/home/u/.pyenv/shims/python"])
def test_interpreter_must_be_a_literal_absolute_path(config: Config, bad: str) -> None:
    with pytest.raises(ServiceError, match="interpreter"):
        service.install(config, FakeRunner(), kind="launchd", interpreter=bad, dry_run=True)


def test_systemd_refuses_an_executable_with_quotes(config: Config) -> None:
    odd = "/o'brien/bin/python3"
    with pytest.raises(ServiceError, match="systemd refuses"):
        service.install(config, FakeRunner(), kind="systemd", interpreter=odd, dry_run=True)
    assert service.install(config, FakeRunner(), kind="launchd", interpreter=odd, dry_run=True)


def test_uninstall_does_not_care_about_the_interpreter(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "")
    runner = FakeRunner()
    service.uninstall(config, runner, kind="systemd", uid=1000)
    assert runner.calls[0] == ("systemctl", "--user", "disable", "--now", "usaged.service")


def test_kind_defaults_by_platform() -> None:
    assert service.default_kind("darwin") == "launchd"
    assert service.default_kind("linux") == "systemd"


# --- the systemd unit -----------------------------------------------------------------------

@pytest.mark.parametrize(("arg", "quoted"), [
    ("/usr/bin/python3", "/usr/bin/python3"),
    ("/Users/Jane Doe/venv/bin/python", '"/Users/Jane Doe/venv/bin/python"'),
    ("/data/100%/u.toml", '"/data/100%%/u.toml"'),
    ("/a/$HOME/u.toml", '"/a/$$HOME/u.toml"'),
    ('/a/"q"\\b', '"/a/\\"q\\"\\\\b"'),
    ("", '""'),
])
def test_systemd_quote(arg: str, quoted: str) -> None:
    assert service.systemd_quote(arg) == quoted
    assert service.systemd_split(quoted) == [arg]


@given(st.lists(st.text(st.characters(codec="utf-8")), max_size=5))
def test_systemd_quote_round_trips(args: list[str]) -> None:
    line = " ".join(service.systemd_quote(a) for a in args)
    assert service.systemd_split(line) == args
    assert "\n" not in line


def read_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_unit_has_the_spec_keys(home: Path) -> None:
    unit = read_unit(service.systemd_unit(spec(home, "systemd")))
    assert dict(unit["Unit"]) == {
        "Description": unit["Unit"]["Description"],
        "StartLimitIntervalSec": "300", "StartLimitBurst": "5"}
    assert dict(unit["Service"]) == {
        "Type": "simple", "ExecStart": f"{PY} -m usaged run", "Restart": "on-failure",
        "RestartSec": "10", "TimeoutStopSec": "20", "Nice": "10", "IOSchedulingClass": "idle",
        "LimitNOFILE": "4096", "Environment": "PYTHONUNBUFFERED=1 PYTHONUTF8=1",
        "WorkingDirectory": str(home / "usaged")}
    assert dict(unit["Install"]) == {"WantedBy": "default.target"}


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    odd = tmp_path / "Jane Doe 100%" / "bin"  # verify checks that ExecStart's file exists
    odd.mkdir(parents=True)
    (odd / "python3").symlink_to(PY)
    target = ServiceSpec("systemd", tmp_path, str(odd / "python3"), tmp_path / "st ate %h",
                         config_path=tmp_path / "c $x \"q\" 'a'.toml")
    unit = tmp_path / "unit" / service.UNIT_NAME
    unit.parent.mkdir()
    unit.write_text(service.systemd_unit(target))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    if "Failed to initialize manager" in done.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()}")
    problems = [line for line in done.stderr.splitlines() if service.UNIT_NAME in line]
    assert done.returncode == 0 and not problems, done.stderr


# --- install / uninstall against fake launchctl and systemctl -------------------------------

def test_launchd_install_boots_out_writes_then_bootstraps(
        config: Config, home: Path, commands: Callable[[], list[list[str]]]) -> None:
    result = service.install(config, SubprocessRunner(), kind="launchd", platform="darwin", uid=501)
    plist = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert commands() == [["launchctl", "bootout", f"gui/501/{LABEL}"],
                          ["launchctl", "bootstrap", "gui/501", str(plist)]]
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"][0] == PY
    assert plist.stat().st_mode & 0o777 == 0o644
    assert (home / "Library" / "Logs" / "usaged").is_dir()
    assert (home / "usaged").is_dir()
    assert "kickstart -k" in result.report()


def test_failing_bootstrap_raises_a_clear_service_error(
        config: Config, commands: Callable[[], list[list[str]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", "bootstrap")
    with pytest.raises(ServiceError) as caught:
        service.install(config, SubprocessRunner(), kind="launchd", platform="darwin", uid=501)
    message = str(caught.value)
    assert "launchctl bootstrap gui/501" in message
    assert "exit code 5" in message
    assert "Bootstrap failed: 5: Input/output error" in message
    assert "usaged doctor" in message and "\n" not in message


def test_launchd_install_twice_gives_the_same_result(
        config: Config, home: Path, commands: Callable[[], list[list[str]]]) -> None:
    service.install(config, SubprocessRunner(), kind="launchd", platform="darwin", uid=501)
    first, first_files = commands(), files_under(home)
    content = (home / "Library" / "LaunchAgents" / f"{LABEL}.plist").read_bytes()
    service.install(config, SubprocessRunner(), kind="launchd", platform="darwin", uid=501)
    assert commands() == first + first
    assert files_under(home) == first_files  # no stray temp files
    assert (home / "Library" / "LaunchAgents" / f"{LABEL}.plist").read_bytes() == content


def test_systemd_install_writes_unit_then_enables(
        config: Config, home: Path, commands: Callable[[], list[list[str]]]) -> None:
    result = service.install(config, SubprocessRunner(), kind="systemd", platform="linux", uid=1000)
    unit = home / ".config" / "systemd" / "user" / "usaged.service"
    assert commands() == [["systemctl", "--user", "daemon-reload"],
                          ["systemctl", "--user", "enable", "--now", "usaged.service"]]
    assert unit.read_text() == service.systemd_unit(spec(home, "systemd"))
    assert "loginctl enable-linger" in result.report()
    service.install(config, SubprocessRunner(), kind="systemd", platform="linux", uid=1000)
    assert commands()[2:] == commands()[:2]


def test_systemd_reinstall_with_a_changed_unit_restarts(
        config: Config, commands: Callable[[], list[list[str]]], tmp_path: Path) -> None:
    service.install(config, SubprocessRunner(), kind="systemd", platform="linux")
    other = tmp_path / "venv2" / "python3"
    other.parent.mkdir()
    other.symlink_to(PY)
    service.install(config, SubprocessRunner(), kind="systemd", platform="linux",
                    interpreter=str(other))
    assert commands()[-1] == ["systemctl", "--user", "restart", "usaged.service"]


def test_install_refuses_a_service_kind_foreign_to_the_system(
        config: Config, home: Path, commands: Callable[[], list[list[str]]]) -> None:
    with pytest.raises(ServiceError, match="cannot run on linux.*--dry-run"):
        service.install(config, SubprocessRunner(), kind="launchd", platform="linux")
    assert commands() == [] and files_under(home) == []


@pytest.mark.parametrize("kind", ["launchd", "systemd"])
def test_dry_run_changes_nothing(config: Config, home: Path, kind: service.Kind,
                                 commands: Callable[[], list[list[str]]]) -> None:
    result = service.install(config, SubprocessRunner(), kind=kind, uid=501, dry_run=True)
    assert commands() == [] and files_under(home) == []
    report = result.report()
    assert report.startswith("Dry run: nothing was changed.")
    assert service.service_file_content(spec(home, kind)).decode().rstrip() in report
    for argv in result.plan.commands:
        assert " ".join(argv) in report


def test_launchd_uninstall_boots_out_and_keeps_state(
        config: Config, home: Path, commands: Callable[[], list[list[str]]]) -> None:
    service.install(config, SubprocessRunner(), kind="launchd", platform="darwin", uid=501)
    (home / "usaged" / "usaged.db").write_text("x")
    service.uninstall(config, SubprocessRunner(), kind="launchd", uid=501)
    assert commands()[2:] == [["launchctl", "bootout", f"gui/501/{LABEL}"]]
    assert not (home / "Library" / "LaunchAgents" / f"{LABEL}.plist").exists()
    assert (home / "usaged" / "usaged.db").exists()


def test_systemd_uninstall_disables_removes_and_reloads(
        config: Config, home: Path, commands: Callable[[], list[list[str]]]) -> None:
    service.install(config, SubprocessRunner(), kind="systemd", platform="linux")
    service.uninstall(config, SubprocessRunner(), kind="systemd")
    assert commands()[2:] == [["systemctl", "--user", "disable", "--now", "usaged.service"],
                              ["systemctl", "--user", "daemon-reload"]]
    assert not (home / ".config" / "systemd" / "user" / "usaged.service").exists()


def test_uninstall_when_not_installed_is_fine(
        config: Config, commands: Callable[[], list[list[str]]]) -> None:
    result = service.uninstall(config, SubprocessRunner(), kind="launchd", uid=501)
    assert "exit 3, fine: the agent was not loaded" in result.report()


def test_purge_removes_state_and_only_usaged_outputs(
        home: Path, commands: Callable[[], list[list[str]]]) -> None:
    config = make_config(home, output_dir=str(home / "Sites"))
    service.install(config, SubprocessRunner(), kind="launchd", platform="darwin", uid=501)
    sites = home / "Sites"
    sites.mkdir()
    for name in ("usage.json", "usage.html", "index.html"):
        (sites / name).write_text("x")
    service.uninstall(config, SubprocessRunner(), kind="launchd", uid=501, purge=True)
    assert not (home / "usaged").exists()
    assert not (home / "Library" / "Logs" / "usaged").exists()
    assert sorted(p.name for p in sites.iterdir()) == ["index.html"]


@pytest.mark.parametrize("state", ["", "Documents"])
def test_purge_refuses_a_folder_that_may_hold_other_files(home: Path, state: str) -> None:
    config = from_mapping({"paths": {"state_dir": str(home / state)}}, None, home)
    with pytest.raises(ServiceError, match="refusing to delete"):
        service.uninstall(config, FakeRunner(), kind="systemd", purge=True)


def test_subprocess_runner_reports_a_missing_command() -> None:
    done = SubprocessRunner().run(["usaged-no-such-command-x"])
    assert done.returncode == 127 and "not found" in done.stderr


# --- doctor ---------------------------------------------------------------------------------

def check(checks: list[doctor.Check], name: str) -> doctor.Check:
    return next(c for c in checks if c.name == name)


@pytest.mark.parametrize("kind", ["launchd", "systemd"])
def test_doctor_fails_when_the_installed_interpreter_is_gone(
        config: Config, home: Path, kind: service.Kind) -> None:
    gone = str(home / "old venv" / "bin" / "python3")
    target = spec(home, kind, interpreter=gone)
    target.service_file.parent.mkdir(parents=True)
    target.service_file.write_bytes(service.service_file_content(target))
    found = check(doctor.doctor(config, FakeRunner(), kind=kind), "interpreter")
    assert found.status == "fail"
    assert gone in found.detail and "does not exist" in found.detail
    assert "usaged install" in found.detail


@pytest.mark.parametrize("junk", [b"", b"<?xml version='1.0'?><plist><dict><key>a</key>"])
def test_doctor_fails_on_an_unreadable_plist(config: Config, home: Path, junk: bytes) -> None:
    target = spec(home)
    target.service_file.parent.mkdir(parents=True)
    target.service_file.write_bytes(junk)
    found = check(doctor.doctor(config, FakeRunner(), kind="launchd"), "interpreter")
    assert found.status == "fail" and "cannot read" in found.detail


def test_doctor_accepts_an_existing_interpreter(config: Config, tmp_path: Path) -> None:
    service.install(config, FakeRunner(), kind="systemd", platform="linux")
    (tmp_path / "watches").write_text("524288\n")
    checks = doctor.doctor(config, FakeRunner(), kind="systemd", platform="linux",
                            inotify_path=tmp_path / "watches")
    assert check(checks, "interpreter").status == "ok"
    assert doctor.worst(checks) == "ok"


def test_doctor_warns_when_not_installed(config: Config) -> None:
    checks = doctor.doctor(config, FakeRunner(Completed(113, "", "Could not find service")),
                            kind="launchd", platform="darwin")
    assert check(checks, "interpreter").status == "warn"
    assert check(checks, "service").status == "warn"


def test_doctor_warns_about_missing_roots(config: Config, home: Path) -> None:
    (home / "claude").mkdir()
    checks = doctor.doctor(config, FakeRunner(), roots=[("openclaw", home / ".openclaw"),
                                                         ("claude_code", home / "claude")])
    assert check(checks, "source openclaw").status == "warn"
    assert "does not exist" in check(checks, "source openclaw").detail
    assert check(checks, "source claude_code").status == "ok"


def test_doctor_names_the_real_interpreter_for_full_disk_access(
        config: Config, home: Path, tmp_path: Path) -> None:
    (home / "Documents" / "agents").mkdir(parents=True)
    link = tmp_path / "venv" / "python3"
    link.parent.mkdir()
    link.symlink_to(PY)
    checks = doctor.doctor(config, FakeRunner(), kind="launchd", interpreter=str(link),
                            roots=[("openclaw", home / "Documents" / "agents")])
    found = check(checks, "source openclaw")
    assert found.status == "warn" and "Full Disk Access" in found.detail
    assert os.path.realpath(PY) in found.detail


@pytest.mark.parametrize(("value", "status"), [("8192", "warn"), ("524288", "ok")])
def test_doctor_checks_the_inotify_limit(config: Config, tmp_path: Path, value: str,
                                         status: str) -> None:
    limit = tmp_path / "max_user_watches"
    limit.write_text(f"{value}\n")
    checks = doctor.doctor(config, FakeRunner(), kind="systemd", platform="linux",
                            inotify_path=limit)
    assert check(checks, "inotify").status == status
    assert value in check(checks, "inotify").detail


def test_doctor_shows_status_output_and_judges_only_the_exit_code(config: Config) -> None:
    runner = FakeRunner(Completed(0, "state = not running (whatever it says)\n", ""))
    checks = doctor.doctor(config, runner, kind="launchd", uid=501, platform="darwin")
    assert runner.calls == [("launchctl", "print", f"gui/501/{LABEL}")]
    assert check(checks, "service").status == "ok"
    assert "| state = not running (whatever it says)" in doctor.format_checks(checks)


def test_doctor_fails_when_installed_but_not_running(config: Config, home: Path) -> None:
    service.install(config, FakeRunner(), kind="systemd", platform="linux")
    runner = FakeRunner(Completed(3, "Active: failed", ""))
    checks = doctor.doctor(config, runner, kind="systemd", platform="linux")
    assert runner.calls == [("systemctl", "--user", "status", "usaged.service")]
    assert check(checks, "service").status == "fail"
    assert "journalctl --user -u usaged.service" in check(checks, "service").detail


def test_doctor_reports_a_config_error(home: Path) -> None:
    error = ConfigError(str(home / "usaged.toml"), "daemon.watcher", "must be 'native'")
    checks = doctor.doctor(error, FakeRunner(), home=home, platform="darwin")
    assert check(checks, "config").status == "fail"
    assert "daemon.watcher" in check(checks, "config").detail
    assert doctor.worst(checks) == "fail"


def test_doctor_checks_state_and_output_folders(config: Config, home: Path) -> None:
    checks = doctor.doctor(config, FakeRunner(), platform="darwin")
    assert check(checks, "state folder").status == "ok"
    assert "does not exist yet" in check(checks, "output folder").detail
