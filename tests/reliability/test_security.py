"""Security: what a transcript (or a path) says can never become markup, script, a shell command
or a service-file directive; the daemon's files are private or read-only to others; it listens
on no network socket unless told to."""

from __future__ import annotations

import os
import plistlib
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from usaged import service
from usaged.errors import ServiceError

from .conftest import DaemonFactory, Writer

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = "<script>window.__pwned=1</script>"
IMG = '"><img src=x onerror="window.__pwned=2">'
SVG = "'><svg onload=window.__pwned=3>&amp;&lt;"
HOSTILE_PATH = "/tmp/Jane \"Doe\" 'x' <script>alert(1)</script> & $HOME %h \\ ]]> ;rm -rf ~"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (CI installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--disable-background-networking"])
        yield b
        b.close()


@pytest.mark.browser
def test_hostile_strings_from_transcripts_never_run_as_script_in_the_dashboard(
        writer: Writer, make_config: Any, run: Any, browser: Any, tmp_path: Path) -> None:
    agent = f"<b>{SCRIPT[:-9]}&amp;"  # a folder name cannot hold '/'
    session = writer.session(f"{IMG}.jsonl", agent=agent)
    writer.append(session, writer.line(model=SCRIPT + IMG, provider=SVG, text=SCRIPT),
                  writer.line(model=f"{SVG}{SCRIPT}", provider=IMG))
    cfg = make_config(openclaw=[writer.root], output={"top_sessions": 5})
    code, _, err = run("--config", str(cfg), "scan")
    assert code == 0, err
    html = tmp_path / "state" / "dashboard" / "usage.html"
    assert SCRIPT not in html.read_text()  # escaped, not raw
    context = browser.new_context()
    page = context.new_page()
    requests: list[str] = []
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:")
               else (requests.append(r.request.url), r.abort()))
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("[onload], [onerror]").count() == 0  # no injected element at all
    text = page.locator("body").inner_text()
    assert SCRIPT + IMG in text and SVG in text  # shown, as text
    assert requests == []
    context.close()


@pytest.mark.e2e
def test_state_folder_is_private_and_outputs_are_0644_by_default(
        writer: Writer, daemon: DaemonFactory, tmp_path: Path) -> None:
    writer.append(writer.session(), writer.line())
    d = daemon(writer.root, preexec_fn=lambda: os.umask(0o002))  # a lax umask
    d.assert_matches(writer)
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("usage.json", "usage.html"):
        assert stat.S_IMODE((state / "dashboard" / name).stat().st_mode) == 0o644
    assert stat.S_IMODE((state / "usaged.lock").stat().st_mode) == 0o600


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


@pytest.mark.e2e
def test_no_network_listener_by_default(writer: Writer, daemon: DaemonFactory) -> None:
    writer.append(writer.session(), writer.line())
    d = daemon(writer.root, "native")
    d.assert_matches(writer)
    inodes = _socket_inodes(d.proc_pid)
    network = []
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if len(cols) > 9 and cols[9] in inodes:
                network.append(f"{table}: {row.strip()}")
    assert network == [], network


def test_no_shell_is_ever_spawned_by_usaged() -> None:
    offenders = []
    for path in sorted((REPO / "usaged").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.getoutput", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def _spec(kind: service.Kind, tmp_path: Path) -> service.ServiceSpec:
    return service.ServiceSpec(kind, tmp_path, "/usr/bin/python3", Path(HOSTILE_PATH),
                               config_path=Path(HOSTILE_PATH + "/usaged.toml"))


def test_plist_writer_escapes_hostile_paths(tmp_path: Path) -> None:
    spec = _spec("launchd", tmp_path)
    data = service.plist_bytes(spec)
    assert b"<script>" not in data and b"]]>" not in data
    plist = plistlib.loads(data)
    assert plist["ProgramArguments"] == spec.argv()  # every value comes back as it was
    assert plist["WorkingDirectory"] == HOSTILE_PATH


def test_systemd_unit_writer_escapes_hostile_paths(tmp_path: Path) -> None:
    spec = _spec("systemd", tmp_path)
    unit = service.systemd_unit(spec)
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert service.systemd_split(exec_start.removeprefix("ExecStart=")) == spec.argv()
    workdir = next(ln for ln in unit.splitlines() if ln.startswith("WorkingDirectory="))
    assert workdir.removeprefix("WorkingDirectory=").replace("%%", "%") == HOSTILE_PATH
    assert "%h" not in workdir.replace("%%", "")  # no specifier left to expand


@pytest.mark.parametrize("bad", ["/tmp/a\nExecStartPre=/bin/sh -c evil", "/tmp/a\rb", "/tmp/\x00"])
def test_service_files_refuse_paths_with_control_characters(bad: str, tmp_path: Path) -> None:
    from usaged.config import from_mapping

    config = from_mapping({"paths": {"state_dir": bad}}, None, tmp_path)
    with pytest.raises(ServiceError, match="control characters"):
        service.spec_for(config, kind="systemd")
