"""Retention is the archive: warnings, a purge that keeps what every standby needs, status without Kafka.

Real Kafka, real PostgreSQL. The purge test stops one standby's applier behind, purges, and then
shows the standby catching up row by row from what the purge kept; the capture is restarted after a
purge that left only its resume tail, and goes on without republishing or losing anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from common.config import KafkaSettings
from common.kafka import make_admin, make_consumer, watermarks
from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from tests.support.replication import ROOT, sql

WIDE = {"COLUMNS": "2000"}  # rich wraps table cells at the terminal width; keep each finding on one line


def _watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = make_consumer(KafkaSettings(bootstrap=bootstrap), group_id="ark-test")
    try:
        return watermarks(consumer, topic)
    finally:
        consumer.close()


def _next_offset(dsn: str, group: str) -> int:
    return int(sql(dsn, 'SELECT next_offset FROM ark.apply_state WHERE "group" = %s', (group,))[0][0])


def _ok(group, *args: str) -> str:  # noqa: ANN001 - tests.support.replication.Group
    res = group.ark(*args, env=WIDE)
    assert res.returncode == 0, f"ark {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return str(res.stdout)


def _writes(dsn: str, start: int, stop: int) -> None:
    """One source transaction per row (many redo offsets), with updates and deletes in between."""
    for i in range(start, stop):
        sql(dsn, "INSERT INTO t (id, v) VALUES (%s, %s)", (i, f"row {i}"))
        if i % 7 == 0:
            sql(dsn, "UPDATE t SET v = v || ' changed' WHERE id = %s", (i - 3,))
        if i % 11 == 0:
            sql(dsn, "DELETE FROM t WHERE id = %s", (i - 5,))


def test_short_retention_compaction_and_size_limit_are_warned_with_their_fix(make_group) -> None:
    group = make_group(standbys=[("standby", 7200.0)])
    group.write_config(kafka={"bootstrap": group.kafka, "redo_retention_hours": 1, "retention_margin_hours": 2})
    topic = f"ark.{group.name}.redo"
    sql(group.primary_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "standby")  # creates the redo topic with retention.ms = 1 h

    out = _ok(group, "check")
    assert f"{topic} keeps 1 h (retention.ms=3600000)" in out, out
    assert "delay in force (7200 s, standby standby)" in out, out
    assert (f"kafka-configs.sh --bootstrap-server {group.kafka} --alter --entity-type topics --entity-name {topic} "
            f"--add-config retention.ms={4 * 3_600_000}") in out, out
    assert "all checks passed" in out  # a warning, not a failure

    # 'ark delay' refuses a delay the topic cannot hold, with the fix (issue 9); --force sets it with a warning.
    refused = group.ark("delay", "standby", "36000", env=WIDE)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "needs the redo topic to keep 12 h" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert "warning:" in _ok(group, "delay", "standby", "36000", "--force")
    # A delay raised at run time ('ark delay' intent on the control topic) counts, not just the config's.
    doc = json.loads(_ok(group, "status", "--json"))
    [short] = [w for w in doc["warnings"] if "keeps 1 h" in w]
    assert "delay in force (36000 s, standby standby)" in short and f"retention.ms={12 * 3_600_000}" in short

    # Size-based retention and compaction are wrong for the archive: both are named with their fix.
    admin = make_admin(KafkaSettings(bootstrap=group.kafka))
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", str(200 * 3_600_000), incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.bytes", "1000000000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact,delete", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)
    out = _ok(group, "check")
    assert f"{topic} keeps" not in out, out  # 200 h is enough now
    assert "cleanup.policy=compact,delete" in out and "--add-config cleanup.policy=delete" in out, out
    assert "retention.bytes=1000000000" in out and "--delete-config retention.bytes" in out, out
    doc = json.loads(_ok(group, "status", "--json"))
    assert len(doc["warnings"]) == 2, doc["warnings"]


def test_purge_never_deletes_what_a_stopped_standby_needs(make_group) -> None:
    tables = ["public.t"]
    group = make_group(standbys=[("standby", 0.0), ("s2", 0.0)])
    topic = f"ark.{group.name}.redo"
    sql(group.primary_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "--all")
    capture = group.start("capture")
    group.start("apply", "standby")
    behind = group.start("apply", "s2")
    _writes(group.primary_dsn, 1, 40)
    for name in ("standby", "s2"):
        assert all(d.equal for d in group.wait_equal(name, tables)), name
    behind.stop()
    _writes(group.primary_dsn, 40, 140)
    assert all(d.equal for d in group.wait_equal("standby", tables))
    s2_dsn = group.standby("s2").dsn
    needed = _next_offset(s2_dsn, group.name)
    low0, high0 = _watermarks(group.kafka, topic)
    assert low0 == 0 and 0 < needed < high0

    dry = _ok(group, "purge", "--dry-run", "--keep-hours", "0")
    assert f"would delete offsets 0..{needed - 1} ({needed} offsets), commit times 20" in dry, dry
    assert "limited by standby s2" in dry, dry
    assert _watermarks(group.kafka, topic)[0] == 0  # a dry run deletes nothing

    # The default keep window (longest delay + 24 h margin) protects everything written minutes ago.
    assert "nothing to delete" in _ok(group, "purge") and _watermarks(group.kafka, topic)[0] == 0

    out = _ok(group, "purge", "--keep-hours", "0")
    low1 = _watermarks(group.kafka, topic)[0]
    assert f"deleted offsets 0..{needed - 1}" in out and f"low watermark now {low1}" in out, out
    assert 0 < low1 <= needed, (low1, needed)  # nothing at or above what s2 still needs is gone

    behind.start()
    assert all(d.equal for d in group.wait_equal("s2", tables)), "s2 did not converge after the purge"

    # Everyone caught up: the capture's resume tail (its last complete transaction) is what stays.
    out = _ok(group, "purge", "--keep-hours", "0")
    low2, high2 = _watermarks(group.kafka, topic)
    assert "limited by capture resume tail" in out and low1 < low2 < high2, out

    # The capture restarts on that tail: it neither republishes nor loses anything.
    capture.stop()
    capture.start()
    _writes(group.primary_dsn, 140, 160)
    for name in ("standby", "s2"):
        assert all(d.equal for d in group.wait_equal(name, tables)), name
    assert sql(group.standby("standby").dsn, "SELECT count(*) FROM t") == sql(group.primary_dsn,
                                                                               "SELECT count(*) FROM t")


def test_purge_refuses_when_a_standby_cannot_be_read_and_ignore_overrides(make_group) -> None:
    group = make_group(standbys=[("standby", 0.0), ("s3", 0.0)])
    topic = f"ark.{group.name}.redo"
    sql(group.primary_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "--all")
    group.start("capture")
    group.start("apply", "standby")
    _writes(group.primary_dsn, 1, 20)
    assert all(d.equal for d in group.wait_equal("standby", ["public.t"]))
    s3 = group.standby("s3").instance
    s3.stop()
    try:
        res = group.ark("purge", "--keep-hours", "0", env=WIDE)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        assert "standby s3" in res.stderr and "--ignore s3" in res.stderr, res.stderr
        assert _watermarks(group.kafka, topic)[0] == 0

        # The scheduled job reports the refusal each round and keeps going.
        proc = subprocess.Popen([sys.executable, "-m", "ops", "-c", str(group.config), "purge", "--every", "1s",
                                 "--keep-hours", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(6)
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        assert err.count("cannot purge") >= 2 and out.count("next purge in 1s") >= 2, (out, err)

        out = _ok(group, "purge", "--keep-hours", "0", "--ignore", "s3")
        assert "ignored: s3" in out, out
        assert _watermarks(group.kafka, topic)[0] > 0
    finally:
        s3.start()


def test_status_with_the_broker_down_shows_the_databases_view(make_group, ark_tmp: Path) -> None:
    # A broker of its own: stopping the session broker would disturb the other tests.
    broker = KafkaBroker(ark_tmp / f"kafka-down-{uuid.uuid4().hex[:6]}", free_port(), free_port())
    broker.start(timeout=120)
    try:
        group = make_group()
        group.write_config(kafka={"bootstrap": broker.bootstrap})
        sql(group.primary_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        group.ark_ok("sync", "standby")
        group.start("capture")
        group.start("apply", "standby")
        _writes(group.primary_dsn, 1, 10)
        assert all(d.equal for d in group.wait_equal("standby", ["public.t"]))
        group.stop_all()
        applied = _next_offset(group.standby("standby").dsn, group.name) - 1
        broker.stop()

        started = time.monotonic()
        res = group.ark("status", env=WIDE)
        assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
        assert f"Kafka unreachable: Kafka at {broker.bootstrap}" in res.stdout, res.stdout
        assert f"slot ark_{group.name} inactive" in res.stdout, res.stdout
        assert "standby" in res.stdout and f" {applied} " in res.stdout, res.stdout
        assert time.monotonic() - started < 30

        res = group.ark("status", "--json")
        assert res.returncode == 3, res.stderr
        doc = json.loads(res.stdout)
        assert doc["kafka"]["reachable"] is False and broker.bootstrap in doc["kafka"]["error"]
        [sb] = doc["standbys"]
        assert sb["applied_offset"] == applied and sb["applied_commit_time"] and sb["applied_position"]
        assert sb["log_behind_bytes"] is not None and sb["log_behind_bytes"] >= 0
        assert doc["primary"]["slot_exists"] and doc["primary"]["lag_bytes"] is not None
    finally:
        broker.stop()
