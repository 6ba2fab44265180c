"""Monitoring on a real replicated run (issue 12): each agent's ``/metrics`` agrees with ``ark status`` on
lag, Kafka's own ``kafka-consumer-groups.sh --describe`` (from the broker's jars) shows the applier's
group at lag 0 after catch-up, and the primary's server log reaches the capture's heartbeat."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from deploy.kafka import kafka_tool
from deploy.ports import free_port
from deploy.workload import BankWorkload, create_bank
from tests.support.replication import Group, sql, wait_for


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and labels (without group/agent/name) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("group", "agent", "name")))
            out[(s.name, labels)] = s.value
    return out


def _standby(group: Group) -> dict[str, Any]:
    return json.loads(group.ark_ok("status", "--json"))["standbys"][0]


def _with_server_log(group: Group) -> None:
    doc = yaml.safe_load(group.config.read_text())
    doc["primary"]["server_log"] = str(group.primary.log_file)
    group.config.write_text(yaml.safe_dump(doc, sort_keys=False))


def _describe(group: Group) -> list[dict[str, str]]:
    res = kafka_tool("kafka-consumer-groups", "--bootstrap-server", group.kafka, "--describe", "--group",
                     f"ark-apply-{group.name}-standby")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln.split() for ln in res.stdout.splitlines() if ln.strip()]
    header = next(i for i, ln in enumerate(lines) if ln[:2] == ["GROUP", "TOPIC"])
    return [dict(zip(lines[header], ln, strict=False)) for ln in lines[header + 1:]]


def test_metrics_agree_with_status_and_kafka_tools_see_the_applier(make_group: Any) -> None:
    group = make_group()
    _with_server_log(group)
    create_bank(group.primary_dsn, accounts=20)
    group.ark_ok("sync", "standby")
    cap_port, apply_port = free_port(), free_port()
    group.start("capture", "--metrics-port", str(cap_port), "--metrics-host", "127.0.0.1")
    group.start("apply", "standby", "--metrics-port", str(apply_port), "--metrics-host", "127.0.0.1")
    workload = BankWorkload(group.primary_dsn, accounts=20, clients=1, pause_s=0.02).start()
    try:
        wait_for(lambda: sql(group.standby("standby").dsn, "SELECT count(*) FROM history")[0][0] > 20, 60,
                 "replication to run")
        m = scrape(apply_port)
        assert m[("ark_up", ())] == 1 and m[("ark_healthy", ())] == 1 and m[("ark_state", (("state", "running"),))]
        assert m[("ark_applied_transactions_total", ())] > 0 and m[("ark_db_up", ())] == 1
        assert ("ark_host_disk_used_percent", (("mount", "/"),)) in m or any(
            k[0] == "ark_host_disk_used_percent" for k in m)
        # Paused while the primary goes on: the lag grows, the same in /metrics and in ark status.
        group.ark_ok("pause", "standby")
        wait_for(lambda: scrape(apply_port).get(("ark_state", (("state", "paused"),))) == 1, 30, "the pause")
        wait_for(lambda: scrape(apply_port)[("ark_lag_seconds", ())] > 3, 30, "lag to grow")
    finally:
        workload.stop()
    # Nothing more is committed, but an idle capture still publishes a checkpoint every 10 s (the end
    # offset moves by 2): a sample counts when the end did not move between the status reads around it.
    sample: dict[str, Any] = {}

    def agreeing() -> bool:
        first = _standby(group)
        before = time.time()
        m = scrape(apply_port)
        sb = _standby(group)
        after = time.time()  # the lag grows 1 s per s while paused: the two reads are apart by at most this
        if first["lag_entries"] != sb["lag_entries"] or m[("ark_lag_entries", ())] != sb["lag_entries"]:
            return False
        sample.update(m=m, sb=sb, before=before, after=after)
        return True

    wait_for(agreeing, 60, "the same lag in entries in /metrics and ark status")
    m, sb, before, after = sample["m"], sample["sb"], sample["before"], sample["after"]
    assert sb["lag_entries"] > 0 and m[("ark_lag_entries", ())] == sb["lag_entries"], (m, sb)
    # /metrics shows the applier's last computation (refreshed every heartbeat, 1 s): allow that, and the reads.
    assert abs(m[("ark_lag_seconds", ())] - sb["lag_seconds"]) <= (after - before) + 1.5, (m, sb)
    assert m[("ark_applied_offset", ())] == sb["applied_offset"]
    assert m[("ark_delay_seconds", ())] == sb["delay_seconds"] == 0
    # The capture: its position and rate, its database, and the primary's server log (an ERROR line).
    try:
        sql(group.primary_dsn, "SELECT 1/0")
    except Exception as exc:  # noqa: BLE001 - the error is the point: it lands in the server log
        assert "division by zero" in str(exc)
    wait_for(lambda: scrape(cap_port).get(("ark_db_log_lines_total", (("severity", "ERROR"),)), 0) >= 1, 30,
             "the primary's ERROR line to reach the capture's metrics")
    c = scrape(cap_port)
    assert c[("ark_capture_produced_offset", ())] > 0 and c[("ark_captured_transactions_total", ())] > 0
    assert c[("ark_db_slot_retained_bytes", ())] >= 0 and c[("ark_db_sessions", ())] >= 1
    assert c[("ark_service_process_up", (("process", "postgres"),))] == 1
    beat = json.loads(group.ark_ok("status", "--json"))
    assert beat["capture"]["state"] == "running"
    # Resumed: caught up in ark status, in /metrics, and in Kafka's own consumer-group tool.
    group.ark_ok("resume", "standby")
    wait_for(lambda: _standby(group)["lag_entries"] == 0, 60, "catch-up")
    wait_for(lambda: scrape(apply_port)[("ark_lag_entries", ())] == 0, 30, "catch-up in /metrics")
    wait_for(lambda: _describe(group)[0]["LAG"] == "0", 60, "kafka-consumer-groups to show lag 0")
    rows = _describe(group)
    assert [r["TOPIC"] for r in rows] == [f"ark.{group.name}.redo"]
    assert rows[0]["LAG"] == "0" and rows[0]["CURRENT-OFFSET"] == rows[0]["LOG-END-OFFSET"], rows
    assert int(rows[0]["CURRENT-OFFSET"]) == _standby(group)["applied_offset"] + 1
