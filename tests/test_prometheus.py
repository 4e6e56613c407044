"""Prometheus export: the exposition (parsed back), the textfile, /metrics, a real Prometheus.

The exposition is checked by parsing it with prometheus_client's parser and, where Debian's
prometheus package is installed (CI installs it), with `promtool check metrics`. The end-to-end
test starts a real Prometheus server on loopback that scrapes a running `python -m usaged run`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import oc_line, oc_session, usage_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from usaged import pipeline, prometheus
from usaged.config import Config, from_mapping
from usaged.ledger import Ledger, ModelTotal, Sums
from usaged.values import FileCursor, FileIdentity, PricedEvent, Tokens, UsageEvent

NOW = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)
HOSTILE = ['evil"model', "back\\slash", "new\nline", 'all "\\\n} of, them=', "ünïcødé 模型",
           "{le=\"0.5\"}", "", " spaced ", "tab\tinside"]
_keys = itertools.count(1)
_files = itertools.count(1)


# -- helpers ----------------------------------------------------------------------------------


def event(ts: float | None, *, model: str = "claude-opus-4-5", provider: str = "anthropic",
          source: str = "openclaw", cost: float | None = 0.5,
          tokens: Tokens | None = None) -> PricedEvent:
    tokens = tokens or Tokens(10, 20, 30, 40)
    ev = UsageEvent(key=next(_keys), source=source,  # type: ignore[arg-type]
                    ts=ts, agent="main", session="s1", provider=provider, model=model,
                    tokens=tokens, line_cost=cost)
    return PricedEvent(ev, cost, "line" if cost is not None else "none")


def commit(ledger: Ledger, *events: PricedEvent) -> None:
    cursor = FileCursor(path=f"/t/{next(_files)}.jsonl", source="openclaw",
                        identity=FileIdentity(0, 0, b"", b""), offset=0, size=0, mtime_ns=0)
    ledger.commit_batch(cursor, list(events))


def config_of(tmp_path: Path, **sections: Any) -> Config:
    data: dict[str, Any] = {"timezone": "UTC", "paths": {"state_dir": str(tmp_path / "state")}}
    data.update(sections)
    return from_mapping(data, None, tmp_path)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger.open(tmp_path / "ledger.db")
    yield book
    book.close()


def document(config: Config, ledger: Ledger, state: str = "running",
             **daemon: Any) -> dict[str, Any]:
    info = {"state": state, "pid": 1, "watcher": "native", "watcher_degraded": False,
            "last_scan": NOW.isoformat(), "config_error": None, **daemon}
    return pipeline.build_document(config, ledger, NOW, info, 0.0)


def parse(text: bytes | str) -> dict[str, Any]:
    """name -> family, by prometheus_client's own parser."""
    raw = text.decode("utf-8") if isinstance(text, bytes) else text
    return {f.name: f for f in text_string_to_metric_families(raw)}


def samples(families: dict[str, Any], name: str) -> list[Sample]:
    return list(families[name].samples)


def one(families: dict[str, Any], name: str) -> float:
    (sample,) = samples(families, name)
    return float(sample.value)


def exposition(config: Config, ledger: Ledger, **kw: Any) -> dict[str, Any]:
    return parse(pipeline.exposition(config, ledger=ledger, doc=document(config, ledger, **kw)))


# -- the exposition ----------------------------------------------------------------------------


def test_counters_hold_all_time_totals_by_source_provider_model_and_kind(
        tmp_path: Path, ledger: Ledger) -> None:
    this_month, last_year = NOW.timestamp() - 3600, NOW.timestamp() - 400 * 86400
    commit(ledger, event(this_month, cost=1.25), event(last_year, cost=0.75),
           event(None, cost=None, model="local-llm", provider="ollama"))
    fams = exposition(config_of(tmp_path, prometheus={"host": "mini"}), ledger)

    assert fams["usaged_tokens"].type == "counter"
    tokens = {(s.labels["model"], s.labels["kind"]): s.value
              for s in samples(fams, "usaged_tokens") if s.name == "usaged_tokens_total"}
    assert tokens[("claude-opus-4-5", "input")] == 20
    assert tokens[("claude-opus-4-5", "cache_write")] == 80
    assert tokens[("local-llm", "output")] == 20
    cost = {s.labels["model"]: s.value for s in samples(fams, "usaged_cost_usd")}
    assert cost == {"claude-opus-4-5": pytest.approx(2.0), "local-llm": 0.0}
    calls = {s.labels["model"]: s.value for s in samples(fams, "usaged_calls")}
    assert calls == {"claude-opus-4-5": 2, "local-llm": 1}
    unpriced = {s.labels["model"]: s.value for s in samples(fams, "usaged_unpriced_calls")}
    assert unpriced == {"claude-opus-4-5": 0, "local-llm": 1}
    (first, *_) = samples(fams, "usaged_cost_usd")
    assert first.labels == {"host": "mini", "source": "openclaw", "provider": "anthropic",
                            "model": "claude-opus-4-5"}


def test_gauges_match_usage_json(tmp_path: Path, ledger: Ledger) -> None:
    commit(ledger, event(NOW.timestamp() - 60, cost=3.0), event(NOW.timestamp() - 10 * 86400))
    config = config_of(tmp_path, budget={"monthly_usd": 10}, capacity={"weekly_tokens": 1000},
                       balance={"credit_usd": 20, "since": "2026-03-01"})
    doc = document(config, ledger)
    fams = parse(pipeline.exposition(config, doc, ledger))
    w = doc["windows"]
    assert one(fams, "usaged_month_cost_usd") == w["month"]["cost_usd"] == 3.5
    assert one(fams, "usaged_week_tokens") == w["week"]["tokens"]["total"]
    assert one(fams, "usaged_last_7d_tokens") == w["last_7_days"]["tokens"]["total"] == 100
    assert one(fams, "usaged_today_cost_usd") == w["today"]["cost_usd"]
    assert one(fams, "usaged_budget_ratio") == doc["budget"]["ratio"] == 0.35
    assert one(fams, "usaged_capacity_used_ratio") == doc["capacity"]["used_ratio"] == 0.1
    assert one(fams, "usaged_balance_usd") == doc["balance"]["balance_usd"] == 16.5
    assert fams["usaged_month_cost_usd"].type == "gauge"


def test_unset_limits_leave_their_gauges_out(tmp_path: Path, ledger: Ledger) -> None:
    fams = exposition(config_of(tmp_path), ledger)
    for name in ("usaged_budget_ratio", "usaged_budget_usd", "usaged_capacity_used_ratio",
                 "usaged_balance_usd"):
        assert name not in fams
    assert one(fams, "usaged_month_cost_usd") == 0


def test_alert_levels_are_0_1_2_for_every_alert_id(tmp_path: Path, ledger: Ledger) -> None:
    commit(ledger, event(NOW.timestamp() - 60, cost=12.0),
           event(NOW.timestamp() - 60, cost=None, model="mystery"))
    fams = exposition(config_of(tmp_path, budget={"monthly_usd": 10}), ledger)
    levels = {s.labels["id"]: s.value for s in samples(fams, "usaged_alert_level")}
    assert set(levels) >= set(prometheus.ALERT_IDS)
    assert levels["budget"] == 2
    assert levels["unpriced"] == 1
    assert levels["capacity"] == levels["stale"] == 0


def test_health_gauges(tmp_path: Path, ledger: Ledger) -> None:
    config = config_of(tmp_path)
    fams = exposition(config, ledger, watcher_degraded=True, config_error="bad key")
    assert one(fams, "usaged_up") == 1
    assert one(fams, "usaged_last_scan_timestamp_seconds") == NOW.timestamp()
    assert one(fams, "usaged_watcher_degraded") == 1
    assert one(fams, "usaged_config_error") == 1
    for name in ("usaged_files", "usaged_bad_lines", "usaged_unreadable_files"):
        assert one(fams, name) == 0
    stopped = exposition(config, ledger, state="stopped", last_scan="")
    assert one(stopped, "usaged_up") == 0
    assert "usaged_last_scan_timestamp_seconds" not in stopped


def test_every_family_has_help_type_and_a_host_label(tmp_path: Path, ledger: Ledger) -> None:
    commit(ledger, event(NOW.timestamp()))
    config = config_of(tmp_path, budget={"monthly_usd": 10}, prometheus={"host": "box-1"})
    text = pipeline.exposition(config, document(config, ledger), ledger).decode()
    fams = parse(text)
    for fam in fams.values():
        assert fam.documentation, fam.name
        assert fam.type in ("counter", "gauge"), fam.name
        assert fam.samples, fam.name
        for s in fam.samples:
            assert s.labels["host"] == "box-1", s
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert typed == {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    for fam in fams.values():
        if fam.type == "counter":
            assert f"# TYPE {fam.name}_total counter" in text


def test_host_label_defaults_to_the_host_name(tmp_path: Path, ledger: Ledger) -> None:
    fams = exposition(config_of(tmp_path), ledger)
    assert {s.labels["host"] for s in samples(fams, "usaged_up")} == {socket.gethostname()}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_label_values_round_trip(tmp_path: Path, ledger: Ledger, name: str) -> None:
    commit(ledger, event(NOW.timestamp(), model=name, provider=name, cost=0.25))
    config = config_of(tmp_path, prometheus={"host": name})
    text = pipeline.exposition(config, document(config, ledger), ledger)
    fams = parse(text)
    (cost,) = samples(fams, "usaged_cost_usd")
    host = name or socket.gethostname()  # an empty host setting means the default
    assert cost.labels == {"host": host, "source": "openclaw", "provider": name, "model": name}
    assert cost.value == 0.25
    assert b"\n" not in text.split(b"model=", 1)[1].split(b"}")[0]  # the newline is escaped
    promtool_accepts(text)


def test_labels_that_cannot_be_utf8_are_replaced_not_fatal(tmp_path: Path,
                                                           ledger: Ledger) -> None:
    doc = document(config_of(tmp_path), ledger)
    totals = [ModelTotal("openclaw", "p", "bad\ud800model", Sums(calls=1, input=5, cost=0.5))]
    fams = parse(prometheus.render(doc, totals, "h\udfffost"))
    (cost,) = samples(fams, "usaged_cost_usd")
    assert cost.labels["model"] == "bad?model" and cost.labels["host"] == "h?ost"


def promtool_accepts(text: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            timeout=30)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package `prometheus`; .ci/run "
                           "installs it)")
def test_promtool_check_metrics_accepts_the_exposition(tmp_path: Path, ledger: Ledger) -> None:
    commit(ledger, event(NOW.timestamp(), cost=1.0), event(None, cost=None, model="x"))
    config = config_of(tmp_path, budget={"monthly_usd": 10}, capacity={"weekly_tokens": 1e6},
                       balance={"credit_usd": 5, "since": "2026-01-01"})
    promtool_accepts(pipeline.exposition(config, document(config, ledger), ledger))


# -- docs/multi-machine.md: its examples are checked ------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "multi-machine.md"


def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_config_examples_are_valid(tmp_path: Path) -> None:
    blocks = doc_blocks("toml")
    assert len(blocks) >= 2
    for block in blocks:
        config = from_mapping(tomllib.loads(block), None, tmp_path)
        assert not config.warnings, config.warnings


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package `prometheus`; .ci/run "
                           "installs it)")
def test_doc_scrape_config_passes_promtool_check_config(tmp_path: Path) -> None:
    (block,) = doc_blocks("yaml")
    path = tmp_path / "prometheus.yml"
    path.write_text(block)
    result = subprocess.run([str(shutil.which("promtool")), "check", "config", str(path)],
                            capture_output=True, timeout=30)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


# -- counters never go down ---------------------------------------------------------------------

costs = st.one_of(st.none(), st.floats(0, 50, allow_nan=False, allow_infinity=False),
                  st.sampled_from([0.1, 0.2, 0.3, 1e-9, 1 / 3]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(costs, st.integers(0, 4), st.booleans()), min_size=1, max_size=40))
def test_counters_never_decrease_while_events_arrive(batch: list[tuple[float | None, int, bool]]
                                                     ) -> None:
    with tempfile.TemporaryDirectory() as folder:
        book = Ledger.open(Path(folder) / "l.db")
        try:
            seen: dict[tuple[str, str, str], Sums] = {}
            for cost, quarter, undated in batch:
                ts = None if undated else NOW.timestamp() - quarter * 900.0
                commit(book, event(ts, cost=cost, model=f"m{quarter % 2}"))
                for t in book.totals():
                    key = (t.source, t.provider, t.model)
                    before = seen.get(key, Sums())
                    for field in ("calls", "input", "output", "cache_read", "cache_write",
                                  "cost", "unpriced_calls", "unpriced_tokens"):
                        assert getattr(t.sums, field) >= getattr(before, field), field
                    seen[key] = t.sums
        finally:
            book.close()


def test_counter_cost_matches_the_ledger_to_a_nanodollar(ledger: Ledger) -> None:
    values = [0.1, 0.2, 0.3, 1 / 3, 12.000000001, 7e-10]
    commit(ledger, *(event(NOW.timestamp() - i * 900, cost=c) for i, c in enumerate(values)))
    (total,) = ledger.totals()
    assert total.sums.cost == pytest.approx(sum(values), abs=len(values) * 1e-9)
    assert total.sums.calls == len(values)


# -- the textfile ------------------------------------------------------------------------------


def test_textfile_is_written_with_every_output_write(tmp_path: Path, ledger: Ledger) -> None:
    target = tmp_path / "textfile" / "usaged.prom"
    config = config_of(tmp_path, prometheus={"textfile": str(target)},
                       output={"file_mode": "0640"})
    commit(ledger, event(NOW.timestamp(), cost=2.0))
    pipeline.write_outputs(config, document(config, ledger), ledger)
    assert one(parse(target.read_bytes()), "usaged_month_cost_usd") == 2.0
    assert target.stat().st_mode & 0o777 == 0o640
    commit(ledger, event(NOW.timestamp(), cost=1.0))
    pipeline.write_outputs(config, document(config, ledger), ledger)
    assert one(parse(target.read_bytes()), "usaged_month_cost_usd") == 3.0
    assert sorted(p.name for p in target.parent.iterdir()) == ["usaged.prom"]  # no temp files


def test_no_textfile_unless_configured(tmp_path: Path, ledger: Ledger) -> None:
    config = config_of(tmp_path)
    json_path, _ = pipeline.write_outputs(config, document(config, ledger), ledger)
    assert not list(tmp_path.rglob("*.prom"))
    assert json_path.exists()


def test_scan_writes_the_textfile(tmp_path: Path, make_config: Any, run: Any) -> None:
    root = tmp_path / "oc"
    oc_session(root).write_bytes(oc_line(cost=0.5) + oc_line(cost=0.25))
    target = tmp_path / "node" / "usaged.prom"
    cfg = make_config(openclaw=[root], prometheus={"textfile": str(target)})
    code, _, err = run("--config", str(cfg), "scan")
    assert code == 0, err
    fams = parse(target.read_bytes())
    assert sum(s.value for s in samples(fams, "usaged_cost_usd")) == pytest.approx(0.75)
    assert one(fams, "usaged_up") == 0  # a one-off scan is not a running daemon


# -- /metrics -----------------------------------------------------------------------------------


def get(url: str, method: str = "GET") -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


@pytest.fixture
def server() -> Iterator[prometheus.MetricsServer]:
    srv = prometheus.MetricsServer("127.0.0.1:0")
    yield srv
    srv.close()


def test_server_serves_the_last_published_exposition(server: prometheus.MetricsServer) -> None:
    host, port = server.address
    url = f"http://{host}:{port}/metrics"
    assert get(url)[0] == 503  # nothing rendered yet
    server.publish(b"# HELP a_metric A.\n# TYPE a_metric gauge\na_metric 1.0\n")
    server.publish(b"# HELP a_metric A.\n# TYPE a_metric gauge\na_metric 2.0\n")
    status, body, ctype = get(url)
    assert status == 200 and ctype == prometheus.CONTENT_TYPE
    assert one(parse(body), "a_metric") == 2.0
    assert get(url, "HEAD")[:2] == (200, b"")
    assert get(f"http://{host}:{port}/")[0] == 404


def test_server_stops_on_close() -> None:
    srv = prometheus.MetricsServer("127.0.0.1:0")
    host, port = srv.address
    srv.close()
    assert not srv._thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()


def test_ipv6_loopback_is_served() -> None:
    try:
        srv = prometheus.MetricsServer("[::1]:0")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        srv.publish(b"x 1\n")
        assert get(f"http://[::1]:{srv.address[1]}/metrics")[1] == b"x 1\n"
    finally:
        srv.close()


def test_exporter_logs_a_taken_address_and_carries_on() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    listen = f"127.0.0.1:{taken.getsockname()[1]}"
    exporter = prometheus.Exporter()
    with capture_logs() as logs:
        try:
            assert exporter.serve(listen) is None
            assert exporter.serve(listen) is None  # not retried (nor logged) every write
            moved = exporter.serve("127.0.0.1:0")  # a new address is tried again
            assert moved is not None
        finally:
            exporter.close()
            taken.close()
    failures = [e for e in logs if e["event"] == "prometheus_listen_failed"]
    assert len(failures) == 1 and failures[0]["listen"] == listen
    assert failures[0]["log_level"] == "error"
    assert [e["event"] for e in logs][-2:] == ["prometheus_listening", "prometheus_stopped"]


def test_exporter_follows_the_configured_address() -> None:
    exporter = prometheus.Exporter()
    with capture_logs():
        try:
            first = exporter.serve("127.0.0.1:0")
            assert first is not None and exporter.serve("127.0.0.1:0") is first
            assert exporter.serve(None) is None
            assert not first._thread.is_alive()
        finally:
            exporter.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def now_line(cost: float | None, **kw: Any) -> bytes:
    return oc_line(cost=cost, ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **kw)


def daemon_config(make_config: Any, root: Path, listen: str, **extra: Any) -> Path:
    cfg: Path = make_config(openclaw=[root], daemon={
        "watcher": "native", "scan_interval": 3600, "debounce_quiet": 0.2, "debounce_max": 1.0,
        "min_interval": 0.1}, prometheus={"listen": listen, "host": "e2e-host"}, **extra)
    return cfg


@pytest.mark.e2e
def test_daemon_serves_metrics_and_keeps_them_current(tmp_path: Path, make_config: Any,
                                                      daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    path = oc_session(root)
    path.write_bytes(now_line(1.5))
    port = free_port()
    d = daemon_factory(daemon_config(make_config, root, f"127.0.0.1:{port}"))
    d.wait_calls(1)
    url = f"http://127.0.0.1:{port}/metrics"
    fams = parse(get(url)[1])
    assert one(fams, "usaged_up") == 1
    assert one(fams, "usaged_month_cost_usd") == 1.5
    with path.open("ab") as fh:
        fh.write(now_line(0.5))
    doc = d.wait_calls(2)
    deadline = time.monotonic() + 10
    while one(parse(get(url)[1]), "usaged_month_cost_usd") != doc["windows"]["month"][
            "cost_usd"]:
        assert time.monotonic() < deadline, "/metrics never caught up with usage.json"
        time.sleep(0.1)
    assert d.stop() == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    assert any(e.get("event") == "prometheus_listening" for e in d.log_events())


@pytest.mark.e2e
def test_daemon_with_a_taken_port_logs_an_error_and_runs_on(tmp_path: Path, make_config: Any,
                                                            daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    oc_session(root).write_bytes(now_line(1.0))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        d = daemon_factory(daemon_config(make_config, root, f"127.0.0.1:"
                                         f"{taken.getsockname()[1]}"))
        d.wait_calls(1)
        errors = [e for e in d.log_events() if e.get("event") == "prometheus_listen_failed"]
        assert len(errors) == 1 and errors[0]["level"] == "error"
        assert d.stop() == 0


# -- a real Prometheus scraping a real daemon -----------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


def prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        reply: dict[str, Any] = json.loads(resp.read())
    assert reply["status"] == "success", reply
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    assert PROMETHEUS is not None
    home = tmp_path / "prometheus"
    (home / "data").mkdir(parents=True)
    (home / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: usaged\n    static_configs:\n"
        f"      - targets: ['{target}']\n")
    port = free_port()
    log = home / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={home / 'prometheus.yml'}",
             f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"], stdout=out, stderr=subprocess.STDOUT, cwd=home)
    return proc, f"http://127.0.0.1:{port}", log


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.skipif(PROMETHEUS is None,
                    reason="the `prometheus` server is not installed (Debian package "
                           "`prometheus`; .ci/run installs it, so CI runs this test)")
def test_real_prometheus_reads_this_months_cost_from_the_daemon(
        tmp_path: Path, make_config: Any, daemon_factory: Any) -> None:
    root = tmp_path / "oc"
    path = oc_session(root)
    path.write_bytes(now_line(1.25) + now_line(0.5)
                     + now_line(None, provider="ollama", model="local-llm"))  # unpriced
    port = free_port()
    daemon = daemon_factory(daemon_config(make_config, root, f"127.0.0.1:{port}"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        doc = daemon.wait_calls(3)
        proc, base, log = start_prometheus(tmp_path, f"127.0.0.1:{port}")
        want = doc["windows"]["month"]["cost_usd"]
        assert want == 1.75
        deadline = time.monotonic() + 60
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):  # not listening yet
                got = prometheus_query(base, 'usaged_month_cost_usd{host="e2e-host"}')
                if got:
                    break
            time.sleep(0.25)
        assert got, f"no sample scraped in 60 s:\n{log.read_text()[-3000:]}"
        (series,) = got
        assert series["metric"]["job"] == "usaged"
        assert series["metric"]["instance"] == f"127.0.0.1:{port}"
        assert float(series["value"][1]) == usage_json(tmp_path)["windows"]["month"]["cost_usd"]

        by_model = prometheus_query(base, "sum by (host, model) (usaged_cost_usd_total)")
        assert {(r["metric"]["host"], r["metric"]["model"]): float(r["value"][1])
                for r in by_model} == {("e2e-host", "claude-opus-4-5"): 1.75,
                                       ("e2e-host", "local-llm"): 0.0}
        (up,) = prometheus_query(base, "usaged_up")
        assert up["value"][1] == "1"
        (health,) = prometheus_query(base, 'up{job="usaged"}')
        assert health["value"][1] == "1"
        for query in doc_blocks("promql"):  # every query of docs/multi-machine.md runs
            prometheus_query(base, query.strip())
        (by_host,) = prometheus_query(base, "sum by (host) (usaged_month_cost_usd)")
        assert by_host["metric"] == {"host": "e2e-host"} and float(by_host["value"][1]) == want
    finally:
        if proc is not None:
            stop_process(proc)
        daemon.stop()
