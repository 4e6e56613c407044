"""Prometheus: the figures as metrics, so one Prometheus can watch every machine's usaged.

- `render(doc, totals, host)`: the exposition in Prometheus text format 0.0.4, a pure function
  of the usage.json document and the ledger's all-time totals. Counters (tokens, cost, calls by
  source, provider, model) come from the totals: running sums that only grow, across daemon
  restarts too. Gauges (windows, budget, capacity, balance, alerts, health) come from the
  document. Every series carries a `host` label.
- `MetricsServer` and `Exporter`: the daemon's optional `/metrics` endpoint
  (`prometheus.listen`), a small HTTP server in a daemon thread that serves the last
  exposition the daemon rendered.

Metric names and meanings: docs/multi-machine.md.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import socketserver
import threading
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from usaged import __version__
from usaged.ledger import ModelTotal, Sums

log = structlog.get_logger("usaged")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("input", "output", "cache_read", "cache_write")
# usage.json window -> metric name part ("days" would break promtool's base-unit rule)
WINDOWS = {"today": "today", "week": "week", "last_7_days": "last_7d", "month": "month",
           "last_month": "last_month"}
# Every alert id metrics.alerts can raise: each is exported, as 0 while it is not raised.
ALERT_IDS = ("budget", "budget_projection", "capacity", "balance", "unpriced", "session_review",
             "bad_input", "stale")
LEVELS = {"ok": 0, "warning": 1, "critical": 2}


def default_host() -> str:
    return socket.gethostname()


# -- render (pure) ----------------------------------------------------------------------------


class _Families:
    """A collector holding fixed metric families (what `generate_latest` reads)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(doc: dict[str, Any], totals: Sequence[ModelTotal], host: str) -> bytes:
    """The exposition (text format 0.0.4, UTF-8) of one usage.json document."""
    return generate_latest(_Families(families(doc, totals, host)))


def families(doc: dict[str, Any], totals: Sequence[ModelTotal], host: str) -> list[Metric]:
    h = _label(host)
    return [*_counters(totals, h), *_windows(doc, h), *_limits(doc, h), _alerts(doc, h),
            *_health(doc, h)]


def _counters(totals: Sequence[ModelTotal], host: str) -> list[Metric]:
    merged: dict[tuple[str, str, str], Sums] = {}
    for t in totals:  # label values are cleaned, so two keys could meet: add them up
        key = (_label(t.source), _label(t.provider), _label(t.model))
        merged[key] = merged[key] + t.sums if key in merged else t.sums
    names = ["host", "source", "provider", "model"]
    tokens = CounterMetricFamily(
        "usaged_tokens", "Tokens used, all time, by kind (input, output, cache_read, "
        "cache_write).", labels=[*names, "kind"])
    cost = CounterMetricFamily("usaged_cost_usd", "Cost of the priced calls in USD, all time.",
                               labels=names)
    calls = CounterMetricFamily("usaged_calls", "Model calls, all time.", labels=names)
    unpriced = CounterMetricFamily(
        "usaged_unpriced_calls", "Calls without a known price (their cost is not in "
        "usaged_cost_usd_total), all time.", labels=names)
    unpriced_tokens = CounterMetricFamily(
        "usaged_unpriced_tokens", "Tokens of the calls without a known price, all time.",
        labels=names)
    for key, s in sorted(merged.items()):
        labels = [host, *key]
        for kind in KINDS:
            tokens.add_metric([*labels, kind], getattr(s, kind))
        cost.add_metric(labels, s.cost)
        calls.add_metric(labels, s.calls)
        unpriced.add_metric(labels, s.unpriced_calls)
        unpriced_tokens.add_metric(labels, s.unpriced_tokens)
    return [tokens, cost, calls, unpriced, unpriced_tokens]


def _windows(doc: dict[str, Any], host: str) -> list[Metric]:
    out: list[Metric] = []
    windows = doc["windows"]
    for name, part in WINDOWS.items():
        w = windows[name]
        out.append(_gauge(f"usaged_{part}_tokens", f"Tokens used {_period(name)}.", host,
                          w["tokens"]["total"]))
        out.append(_gauge(f"usaged_{part}_cost_usd",
                          f"Cost of the priced calls {_period(name)}, in USD.", host,
                          w["cost_usd"]))
    out.append(_gauge("usaged_month_unpriced_calls", "Calls this month without a known price.",
                      host, windows["month"]["unpriced_calls"]))
    return out


def _period(window: str) -> str:
    return {"today": "today (local calendar day)", "week": "this ISO week (local, from Monday)",
            "last_7_days": "in the last 168 hours", "month": "this calendar month (local)",
            "last_month": "last calendar month (local)"}[window]


def _limits(doc: dict[str, Any], host: str) -> list[Metric]:
    """Budget, capacity and balance: only the series whose limit is configured."""
    b, c, bal = doc["budget"], doc["capacity"], doc["balance"]
    wanted = [
        ("usaged_budget_usd", "Monthly budget in USD (budget.monthly_usd).", b["monthly_usd"]),
        ("usaged_budget_ratio", "This month's cost divided by the monthly budget.", b["ratio"]),
        ("usaged_budget_projected_month_usd", "This month's cost at month end at the pace so "
         "far, in USD.", b["projected_month_usd"]),
        ("usaged_capacity_weekly_tokens", "Tokens available in a rolling 7 days "
         "(capacity.weekly_tokens).", c["weekly_tokens"]),
        ("usaged_capacity_used_ratio", "Tokens of the last 7 days divided by the weekly "
         "capacity.", c["used_ratio"]),
        ("usaged_balance_usd", "Prepaid credit left in USD (balance.credit_usd minus the cost "
         "since balance.since).", bal["balance_usd"]),
        ("usaged_balance_credit_usd", "Prepaid credit loaded, in USD.", bal["credit_usd"]),
    ]
    return [_gauge(name, text, host, value) for name, text, value in wanted if value is not None]


def _alerts(doc: dict[str, Any], host: str) -> Metric:
    levels = dict.fromkeys(ALERT_IDS, 0)
    for alert in doc["alerts"]:
        levels[str(alert["id"])] = max(levels.get(str(alert["id"]), 0),
                                       LEVELS.get(alert["level"], 0))
    family = GaugeMetricFamily("usaged_alert_level", "Alert level by alert id: 0 ok, 1 warning, "
                               "2 critical.", labels=["host", "id"])
    for id_, level in levels.items():
        family.add_metric([host, _label(id_)], level)
    return family


def _health(doc: dict[str, Any], host: str) -> list[Metric]:
    d = doc.get("daemon") or {}
    out = [
        _gauge("usaged_up", "1 while the daemon runs; 0 in the last write of a stopped daemon "
               "and in a one-off `usaged scan`.", host, d.get("state") == "running"),
        _gauge("usaged_generated_timestamp_seconds", "When these figures were computed (unix "
               "time).", host, _epoch(doc.get("generated_at"))),
        _gauge("usaged_last_scan_timestamp_seconds", "When the last reconciliation scan ended "
               "(unix time).", host, _epoch(d.get("last_scan"))),
        _gauge("usaged_files", "Transcript files the ledger tracks.", host, d.get("files")),
        _gauge("usaged_events", "Usage events in the ledger.", host, d.get("events")),
        _gauge("usaged_bad_lines", "Malformed transcript lines counted (see `usaged status`).",
               host, d.get("bad_lines")),
        _gauge("usaged_unreadable_files", "Transcript files that cannot be read now.", host,
               d.get("unreadable_files")),
        _gauge("usaged_watcher_degraded", "1 when the file watcher fell back to polling or "
               "periodic scans.", host, bool(d.get("watcher_degraded"))),
        _gauge("usaged_config_error", "1 when the config file holds an error (the daemon keeps "
               "the last good config).", host, bool(d.get("config_error"))),
    ]
    info = GaugeMetricFamily("usaged_build_info", "The usaged version (always 1).",
                             labels=["host", "version"])
    info.add_metric([host, __version__], 1)
    return [m for m in out if m.samples] + [info]


def _gauge(name: str, text: str, host: str, value: float | bool | None) -> Metric:
    family = GaugeMetricFamily(name, text, labels=["host"])
    if value is not None:
        family.add_metric([host], float(value))
    return family


def _epoch(iso: Any) -> float | None:
    if not iso or not isinstance(iso, str):
        return None
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return t.timestamp() if t.tzinfo is not None else None


def _label(value: str) -> str:
    """A label value that encodes as UTF-8 (lone surrogates become '?'); escaping of backslash,
    double quote and newline is the exposition writer's."""
    return value.encode("utf-8", "replace").decode("utf-8")


# -- /metrics over HTTP -----------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Any, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.exposition: bytes | None = None
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in DNS (getfqdn): not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    timeout = 10.0
    server_version = f"usaged/{__version__}"

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        self._reply(with_body=True)

    def do_HEAD(self) -> None:
        self._reply(with_body=False)

    def _reply(self, with_body: bool) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(HTTPStatus.NOT_FOUND, "usaged serves /metrics only")
            return
        assert isinstance(self.server, _Server)
        body = self.server.exposition
        if body is None:
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "no figures yet")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (the daemon's log is structlog's JSON lines)."""


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464' -> (host, port); config validation checked the form."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServer:
    """`/metrics` on one address, served from a daemon thread; `publish` swaps what it serves.

    Constructing it binds the socket: an OSError says the address is taken or not local.
    """

    def __init__(self, listen: str) -> None:
        host, port = split_listen(listen)
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_PASSIVE)[0]
        self._httpd = _Server(info[4], info[0])
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.5}, name="usaged-metrics",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when 0 was asked for."""
        return str(self._httpd.server_address[0]), int(self._httpd.server_address[1])

    def publish(self, exposition: bytes) -> None:
        self._httpd.exposition = exposition  # one reference swap: readers see old or new

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class Exporter:
    """The daemon's `/metrics`: started, moved or stopped as `prometheus.listen` says.

    A failed bind is logged once per configured address and the daemon carries on without
    the endpoint; it is tried again when the configured address changes.
    """

    def __init__(self) -> None:
        self.listen: str | None = None
        self.server: MetricsServer | None = None

    def serve(self, listen: str | None) -> MetricsServer | None:
        if listen != self.listen:
            self.close()
            self.listen = listen
            if listen:
                self.server = _start(listen)
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            log.info("prometheus_stopped", listen=self.listen)
        self.listen = None


def _start(listen: str) -> MetricsServer | None:
    try:
        server = MetricsServer(listen)
    except OSError as exc:
        log.error("prometheus_listen_failed", listen=listen, reason=exc.strerror or str(exc),
                  action="serving no /metrics until prometheus.listen changes")
        return None
    host, port = server.address
    log.info("prometheus_listening", url=f"http://{_url_host(host)}:{port}/metrics")
    if not _loopback(host):
        log.warning("prometheus_listen_not_loopback", listen=listen,
                    hint="other machines can read the usage figures; prefer 127.0.0.1 behind "
                         "a tunnel or a firewall rule")
    return server


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
