"""Prometheus ``/metrics`` for every agent (``--metrics-port``), from the same record its heartbeat sends.

The exporter reads the agent's heartbeat record at scrape time (common/heartbeat.py), so Prometheus,
the console and ``ark status`` all see one set of facts. Names follow Prometheus conventions:
``_seconds``, ``_bytes``, ``_total`` for counters; every series carries ``group``, ``agent`` (capture,
apply, filesync) and ``name`` (the node, the standby, the file set).

Lag is what the agent itself measures. An applier's ``ark_lag_seconds`` counts from its last applied
commit, or 0 when it is at the redo topic's end; ``ark status`` measures from the source, which differs
only while the capture is stalled. That case shows as the capture's ``ark_capture_caught_up_age_seconds``
growing (alert on the larger of the two, as deploy/grafana/ark-dashboard.json does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from common.errors import ArkError

log = logging.getLogger(__name__)

#: States in which an agent does its job (anything else is unhealthy: retrying, error, stopped...).
HEALTHY_STATES = frozenset({"running", "delayed", "paused", "held for verify", "retransmitting", "starting"})

#: heartbeat metric key -> (Prometheus name, help, counter?)
_SCALARS: dict[str, tuple[str, str, bool]] = {
    "host.cpu_pct": ("ark_host_cpu_percent", "CPU use of the host, percent", False),
    "host.mem_used_pct": ("ark_host_memory_used_percent", "memory in use on the host, percent", False),
    "host.mem_available_bytes": ("ark_host_memory_available_bytes", "memory available on the host", False),
    "host.swap_used_pct": ("ark_host_swap_used_percent", "swap in use on the host, percent", False),
    "host.load1": ("ark_host_load1", "1-minute load average", False),
    "host.load5": ("ark_host_load5", "5-minute load average", False),
    "host.load15": ("ark_host_load15", "15-minute load average", False),
    "rss_bytes": ("ark_process_resident_bytes", "resident memory of the agent process", False),
    "db.up": ("ark_db_up", "1 when the agent's database answered its last look", False),
    "db.sessions": ("ark_db_sessions", "client sessions on the database server", False),
    "db.active_sessions": ("ark_db_active_sessions", "client sessions running a statement", False),
    "db.max_connections": ("ark_db_max_connections", "the database server's connection limit", False),
    "db.long_txns": ("ark_db_long_transactions", "transactions open longer than 60 s", False),
    "db.oldest_txn_s": ("ark_db_oldest_transaction_seconds", "age of the oldest open transaction", False),
    "db.lock_waits": ("ark_db_lock_waits", "sessions waiting for a lock", False),
    "db.slots": ("ark_db_replication_slots", "replication slots on the server", False),
    "db.slot_retained_bytes": ("ark_db_slot_retained_bytes", "log bytes the replication slot holds back", False),
    "crc_failures": ("ark_crc_failures_total", "redo entries whose CRC did not match", True),
    "quarantines": ("ark_quarantines_total", "corrupt entries quarantined (each with a retransmit request)", True),
    "resyncs": ("ark_resyncs_total", "table resyncs started", True),
    "control_refused": ("ark_control_refused_total", "control records refused as not authentic", True),
}


class HeartbeatCollector(Collector):
    """Turns the agent's current heartbeat record into metric families at each scrape."""

    def __init__(self, record: Callable[[], dict[str, Any]], group: str, kind: str, name: str) -> None:
        self._record = record
        self._base = {"group": group, "agent": kind, "name": name}

    def collect(self) -> Iterator[Any]:
        try:
            rec = self._record()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the agent is in trouble
            log.warning("metrics: heartbeat record unavailable: %s", exc)
            rec = {}
        yield from families(rec, self._base)


def _gauge(name: str, help_text: str, labels: dict[str, str], value: float,
           extra: dict[str, str] | None = None) -> GaugeMetricFamily:
    names = [*labels, *(extra or {})]
    fam = GaugeMetricFamily(name, help_text, labels=names)
    fam.add_metric([*labels.values(), *(extra or {}).values()], float(value))
    return fam


def families(rec: dict[str, Any], base: dict[str, str]) -> Iterator[Any]:
    """The metric families of one heartbeat record (pure; tests call it directly)."""
    now = time.time()
    state = str(rec.get("state", "unknown"))
    kind = base.get("agent", "")
    yield _gauge("ark_up", "1 while the agent process answers", base, 1.0)
    healthy = state in HEALTHY_STATES and bool(rec.get("db_healthy", True))
    yield _gauge("ark_healthy", "1 when the agent does its job and its database answers", base, 1.0 if healthy else 0.0)
    yield _gauge("ark_state", "the agent's state (the series whose state label is current is 1)", base, 1.0,
                 {"state": state})
    yield _gauge("ark_epoch", "the newest epoch the agent has seen", base, float(rec.get("epoch", 0)))
    if rec.get("sent_at_us"):
        yield _gauge("ark_heartbeat_timestamp_seconds", "when this record was made", base, rec["sent_at_us"] / 1e6)
    metrics: dict[str, float] = dict(rec.get("metrics") or {})
    if kind == "apply":
        yield _gauge("ark_lag_seconds", "seconds the standby is behind (0 at the redo topic's end)", base,
                     float(rec.get("lag_seconds", 0.0)))
        yield _gauge("ark_lag_entries", "redo entries the standby has not applied yet", base,
                     float(rec.get("lag_entries", 0)))
        yield _gauge("ark_applied_offset", "the last redo offset applied", base, float(rec.get("applied_offset", -1)))
        yield _gauge("ark_delay_seconds", "the apply delay in force", base, float(rec.get("delay_seconds", 0.0)))
        if rec.get("applied_commit_time_us"):
            yield _gauge("ark_applied_commit_timestamp_seconds", "source commit time of the last applied transaction",
                         base, rec["applied_commit_time_us"] / 1e6)
        yield from _counter("ark_applied_transactions_total", "source transactions applied", base,
                            metrics.pop("txns", None))
        yield from _counter("ark_applied_rows_total", "rows applied", base, metrics.pop("rows", None))
    elif kind == "capture":
        yield _gauge("ark_capture_produced_offset", "the capture's position in the redo topic (last offset written)",
                     base, float(rec.get("produced_offset", -1)))
        yield _gauge("ark_capture_lag_seconds", "age of the last source commit read while running", base,
                     float(rec.get("lag_seconds", 0.0)))
        caught = rec.get("caught_up_at_us", 0)
        if caught:
            yield _gauge("ark_capture_caught_up_age_seconds", "seconds since the capture last had everything its "
                         "source had committed durable in Kafka (grows while it is stalled)", base,
                         max(0.0, now - caught / 1e6))
        yield from _counter("ark_captured_transactions_total", "source transactions published", base,
                            metrics.pop("txns", None))
        yield from _counter("ark_captured_rows_total", "rows published", base, metrics.pop("rows", None))
    for key, (name, help_text, is_counter) in _SCALARS.items():
        if key in metrics:
            if is_counter:
                yield from _counter(name, help_text, base, metrics[key])
            else:
                yield _gauge(name, help_text, base, metrics[key])
    for key in ("crc_failures", "quarantines", "resyncs") if kind == "apply" else ():
        if key not in metrics:  # counters exist from the start, at 0, so rate() and alerts work at once
            yield from _counter(*_SCALARS[key][:2], base, 0.0)
    yield from _per_mount(metrics, base)
    yield from _log_lines(metrics, base)
    yield from _processes(rec.get("processes") or [], base)


def _counter(name: str, help_text: str, base: dict[str, str], value: float | None) -> Iterator[Any]:
    if value is None:
        return
    fam = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=list(base))
    fam.add_metric(list(base.values()), float(value))
    yield fam


def _per_mount(metrics: dict[str, float], base: dict[str, str]) -> Iterator[Any]:
    used = GaugeMetricFamily("ark_host_disk_used_percent", "disk use of a relevant mount, percent",
                             labels=[*base, "mount"])
    free = GaugeMetricFamily("ark_host_disk_free_bytes", "free bytes of a relevant mount", labels=[*base, "mount"])
    for key, value in sorted(metrics.items()):
        prefix, _, mount = key.partition("@")
        if prefix == "disk.used_pct":
            used.add_metric([*base.values(), mount], value)
        elif prefix == "disk.free_bytes":
            free.add_metric([*base.values(), mount], value)
    if used.samples:
        yield used
    if free.samples:
        yield free


def _log_lines(metrics: dict[str, float], base: dict[str, str]) -> Iterator[Any]:
    fam = CounterMetricFamily("ark_db_log_lines", "PANIC, FATAL and ERROR lines in the database server log since the "
                              "agent started", labels=[*base, "severity"])
    for severity in ("panic", "fatal", "error"):
        if f"log.{severity}" in metrics:
            fam.add_metric([*base.values(), severity.upper()], metrics[f"log.{severity}"])
    if fam.samples:
        yield fam


def _processes(procs: list[dict[str, Any]], base: dict[str, str]) -> Iterator[Any]:
    if not procs:
        return
    labels = [*base, "process"]
    up = GaugeMetricFamily("ark_service_process_up", "1 while the service process runs", labels=labels)
    cpu = GaugeMetricFamily("ark_service_process_cpu_percent", "CPU use of the service process", labels=labels)
    rss = GaugeMetricFamily("ark_service_process_resident_bytes", "resident memory of the service process",
                            labels=labels)
    kids = GaugeMetricFamily("ark_service_process_children", "child processes (a database's backends)", labels=labels)
    for p in procs:
        values = [*base.values(), str(p.get("name", "?"))]
        up.add_metric(values, 1.0 if p.get("running") else 0.0)
        cpu.add_metric(values, float(p.get("cpu_pct", 0.0)))
        rss.add_metric(values, float(p.get("rss_bytes", 0)))
        kids.add_metric(values, float(p.get("children", 0)))
    yield from (up, cpu, rss, kids)


class MetricsServer:
    """``/metrics`` on ``host:port`` in a daemon thread (prometheus_client's WSGI server)."""

    def __init__(self, port: int, host: str, collector: Collector) -> None:
        from prometheus_client import start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ArkError(f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}",
                           fix="choose a free port with --metrics-port (each agent on a host needs its own)") from None
        self.port = self._server.server_port

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
