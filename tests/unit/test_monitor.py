"""Monitoring facts (common/monitor.py) and the Prometheus exporter (common/metrics.py), without services."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from common.errors import ArkError
from common.metrics import HeartbeatCollector, MetricsServer, families
from common.monitor import DatabaseMonitor, DbSample, LogTail, Monitor, classify, host_metrics, mount_of, redact


def test_alert_lines_are_classified_in_postgres_and_mariadb_forms() -> None:
    assert classify("2026-12-01 10:00:00.123 UTC [77] ERROR:  relation \"nope\" does not exist") == "ERROR"
    assert classify("2026-12-01 10:00:00 UTC [77] FATAL:  terminating connection due to administrator command") \
        == "FATAL"
    assert classify("2026-12-01 10:00:00 UTC [1] PANIC:  could not write to file") == "PANIC"
    assert classify("2026-12-01 10:00:00 0 [ERROR] InnoDB: Unable to lock ./ibdata1") == "ERROR"
    assert classify("2026-12-01 10:00:00 UTC [77] LOG:  checkpoint starting: time") is None
    assert classify("2026-12-01 10:00:00 UTC [77] DETAIL:  Key (id)=(5) already exists.") is None
    assert classify("statement: SELECT 'ERROR: not a log line'") is None


def test_values_are_redacted_from_alert_lines_but_names_stay() -> None:
    line = redact("ERROR:  duplicate key value violates unique constraint \"accounts_pkey\" Key (id)=(42)")
    assert "42" not in line and "accounts_pkey" in line
    line = redact("ERROR:  invalid input syntax for type integer: \"secret-value\"")
    assert "secret-value" not in line and "integer" in line
    line = redact("ERROR:  syntax error at or near \"hunter2\" in INSERT ... VALUES ('top secret', 'x''y')")
    assert "hunter2" not in line and "top secret" not in line and "x''y" not in line
    assert redact("ERROR:  relation \"public.history\" does not exist") == \
        "ERROR:  relation \"public.history\" does not exist"
    assert len(redact("ERROR: " + "x" * 1000)) == 300


def test_log_tail_counts_new_alerts_and_follows_rotation(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old ERROR:  before the agent started\n")
    tail = LogTail(log, "primary server.log")
    tail.read()
    assert tail.counts["ERROR"] == 0  # the backlog is shown, not counted
    assert [a["text"] for a in tail.recent] == ["old ERROR:  before the agent started"]
    with log.open("a") as fh:
        fh.write("t [1] LOG:  fine\nt [2] ERROR:  one\nt [3] DETAIL:  Key (id)=(7) exists\nt [4] FATAL:  two\n"
                 "t [5] ERROR:  partial")
    tail.read()
    assert (tail.counts["ERROR"], tail.counts["FATAL"]) == (1, 1)
    with log.open("a") as fh:
        fh.write(" line\n")
    tail.read()
    assert tail.counts["ERROR"] == 2
    assert tail.recent[-1]["text"] == "t [5] ERROR:  partial line"
    assert all(a["source"] == "primary server.log" for a in tail.recent)
    log.rename(tmp_path / "server.log.1")  # rotated: a new file under the same name
    log.write_text("t [6] PANIC:  three\n")
    tail.read()
    assert tail.counts["PANIC"] == 1 and tail.recent[-1]["severity"] == "PANIC"
    log.write_text("")  # truncated
    tail.read()
    with log.open("a") as fh:
        fh.write("t [7] ERROR:  after truncation\n")
    tail.read()
    assert tail.counts["ERROR"] == 3


def test_host_metrics_name_the_mounts() -> None:
    m = host_metrics({mount_of("/")})
    assert 0 <= m["host.cpu_pct"] <= 100 and 0 < m["host.mem_used_pct"] < 100
    assert "disk.used_pct@/" in m and m["disk.free_bytes@/"] > 0
    assert mount_of("/definitely/not/there/x") == "/"


class _Db(DatabaseMonitor):
    def __init__(self, up: bool, log_file: str | None = None) -> None:
        self.up, self.log_file = up, log_file

    def sample(self) -> DbSample:
        if not self.up:
            return DbSample(metrics={"db.up": 0.0}, message="primary: database unreachable (refused)")
        return DbSample(metrics={"db.up": 1.0, "db.sessions": 3.0}, server_pid=os.getpid(), log_file=self.log_file)


def test_monitor_samples_host_database_log_and_processes(tmp_path: Path) -> None:
    log = tmp_path / "pg.log"
    log.write_text("")
    mon = Monitor("apply", database=_Db(True, str(log)), node="node2")
    assert mon.sample().metrics["log.error"] == 0.0
    log.write_text("x [1] ERROR:  boom\n")
    facts = mon.sample()
    assert facts.db_up is True and facts.metrics["db.sessions"] == 3.0
    assert facts.metrics["log.error"] == 1.0 and facts.alerts[-1]["text"] == "x [1] ERROR:  boom"
    names = [p["name"] for p in facts.processes]
    assert names[0] == "ark-apply" and len(names) == 2 and all(p["running"] for p in facts.processes)
    down = Monitor("capture", database=_Db(False), node="primary").sample()
    assert down.db_up is False and "unreachable" in down.notes[0]
    assert any("server log: not known" in n for n in down.notes)


def _apply_record(**over: Any) -> dict[str, Any]:
    rec = {"state": "running", "db_healthy": True, "epoch": 3, "sent_at_us": 1_700_000_000_000_000,
           "lag_seconds": 2.5, "lag_entries": 12, "applied_offset": 99, "delay_seconds": 0.0,
           "applied_commit_time_us": 1_699_999_999_000_000,
           "metrics": {"rows": 500.0, "txns": 50.0, "disk.used_pct@/": 40.0, "disk.free_bytes@/": 1e9,
                       "log.error": 2.0, "db.lock_waits": 1.0, "quarantines": 1.0},
           "processes": [{"name": "postgres", "pid": 1, "running": True, "cpu_pct": 1.0, "rss_bytes": 10,
                          "uptime_s": 5.0, "children": 7}]}
    rec.update(over)
    return rec


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("group", "agent", "name")))
            out[(s.name, labels)] = s.value
    return out


def test_metric_families_of_an_applier() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HeartbeatCollector(_apply_record, "g", "apply", "node2"))
    got = _scrape(generate_latest(registry).decode())
    assert got[("ark_lag_seconds", ())] == 2.5 and got[("ark_lag_entries", ())] == 12
    assert got[("ark_applied_rows_total", ())] == 500 and got[("ark_applied_transactions_total", ())] == 50
    assert got[("ark_epoch", ())] == 3 and got[("ark_healthy", ())] == 1
    assert got[("ark_state", (("state", "running"),))] == 1
    assert got[("ark_host_disk_used_percent", (("mount", "/"),))] == 40
    assert got[("ark_db_log_lines_total", (("severity", "ERROR"),))] == 2
    assert got[("ark_quarantines_total", ())] == 1 and got[("ark_crc_failures_total", ())] == 0
    assert got[("ark_service_process_children", (("process", "postgres"),))] == 7
    unhealthy = {f.name: f for f in families(_apply_record(state="retrying"), {"agent": "apply"})}
    assert unhealthy["ark_healthy"].samples[0].value == 0


def test_metric_families_of_a_capture() -> None:
    rec = {"state": "running", "produced_offset": 41, "caught_up_at_us": 1, "metrics": {"rows": 9.0, "txns": 3.0}}
    fams = {f.name: f for f in families(rec, {"group": "g", "agent": "capture", "name": "primary"})}
    assert fams["ark_capture_produced_offset"].samples[0].value == 41
    assert fams["ark_capture_caught_up_age_seconds"].samples[0].value > 1e9
    assert fams["ark_captured_rows"].samples[0].value == 9


def test_metrics_server_serves_and_refuses_a_busy_port() -> None:
    server = MetricsServer(0, "127.0.0.1", HeartbeatCollector(_apply_record, "g", "apply", "node2"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'ark_lag_seconds{agent="apply",group="g",name="node2"} 2.5' in body
        with pytest.raises(ArkError, match="cannot serve /metrics"):
            MetricsServer(server.port, "127.0.0.1", HeartbeatCollector(dict, "g", "apply", "x"))
    finally:
        server.close()
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


def test_the_grafana_dashboard_uses_only_metrics_the_agents_serve() -> None:
    import json
    import re

    dashboard = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ark-dashboard.json"
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bark_[a-z0-9_]+", e)}
    capture = {"state": "running", "produced_offset": 5, "caught_up_at_us": 1, "lag_seconds": 0.0,
               "sent_at_us": 1, "metrics": {"rows": 1.0, "txns": 1.0, "db.slot_retained_bytes": 9.0,
                                            "control_refused": 1.0, "host.cpu_pct": 5.0, "host.mem_used_pct": 9.0,
                                            "db.sessions": 3.0, "db.long_txns": 0.0}}
    served = set()
    for rec, kind in ((_apply_record(), "apply"), (capture, "capture")):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(HeartbeatCollector(lambda r=rec: r, "g", kind, "n"))
        served |= {s.name for fam in text_string_to_metric_families(generate_latest(registry).decode())
                   for s in fam.samples}
    assert used <= served, used - served
