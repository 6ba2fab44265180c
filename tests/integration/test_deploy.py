"""The local services that every other integration test stands on: a real Kafka broker and PostgreSQL 15."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.kafka import KafkaBroker
from deploy.postgres import PgInstance


def _topic(admin_bootstrap: str) -> str:
    name = f"ark.test.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": admin_bootstrap})
    for fut in admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
        fut.result(timeout=30)
    return name


def _produce_txn(bootstrap: str, topic: str, values: list[bytes], commit: bool = True) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"ark-test-{topic}",
                         "enable.idempotence": True, "acks": "all"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def _consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg.value() or b"")
        # Give an unexpected extra message a moment to show up.
        extra = consumer.poll(1.0)
        if extra is not None and extra.error() is None:
            got.append(extra.value() or b"")
    finally:
        consumer.close()
    return got


def test_broker_runs_and_logs(kafka_broker: KafkaBroker) -> None:
    status = kafka_broker.status()
    assert status["running"] and status["pid"] and not status["paused"]
    assert status["bootstrap"] == kafka_broker.bootstrap
    assert "Kafka Server started" in kafka_broker.server_log()
    kafka_broker.start()  # idempotent: already running, returns at once
    assert kafka_broker.status()["pid"] == status["pid"]


def test_create_topic(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert topic in meta.topics
    assert len(meta.topics[topic].partitions) == 1


def test_transactions_read_committed(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    _produce_txn(kafka_bootstrap, topic, [b"one", b"two"])
    _produce_txn(kafka_bootstrap, topic, [b"aborted"], commit=False)
    _produce_txn(kafka_bootstrap, topic, [b"three"])
    assert _consume_all(kafka_bootstrap, topic, expect=3) == [b"one", b"two", b"three"]


def test_kill9_restart_keeps_committed(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = _topic(bootstrap)
    _produce_txn(bootstrap, topic, [b"survives"])
    kafka_broker.kill9()
    assert not kafka_broker.status()["running"]
    t0 = time.monotonic()
    kafka_broker.start(timeout=120)
    print(f"broker restart after kill -9: {time.monotonic() - t0:.1f}s")
    assert _consume_all(bootstrap, topic, expect=1) == [b"survives"]
    _produce_txn(bootstrap, topic, [b"after"])  # the transaction coordinator works again
    assert _consume_all(bootstrap, topic, expect=2) == [b"survives", b"after"]


def test_broker_pause_resume(kafka_broker: KafkaBroker) -> None:
    kafka_broker.pause()
    try:
        assert kafka_broker.status()["paused"]
        admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
        with pytest.raises(Exception):  # noqa: B017 - KafkaException: the broker does not answer
            admin.list_topics(timeout=2)
    finally:
        kafka_broker.resume()
    assert not kafka_broker.status()["paused"]
    kafka_broker.wait_ready(30)


def test_pg_logical(pg_primary: PgInstance) -> None:
    assert pg_primary.is_running()
    assert pg_primary.psql("SHOW wal_level") == "logical"
    assert pg_primary.psql("SHOW max_replication_slots") == "10"
    assert pg_primary.psql("SHOW fsync") == "on"
    assert pg_primary.psql("SHOW listen_addresses") == "127.0.0.1"
    with psycopg.connect(pg_primary.dsn()) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None and row[0].startswith("15")


def test_pg_wal_level_override(pg_factory) -> None:
    inst = pg_factory("replica", extra_conf={"wal_level": "replica"})
    assert inst.psql("SHOW wal_level") == "replica"
    inst.stop()
    assert not inst.is_running()


def test_pg_password_auth(pg_factory) -> None:
    inst = pg_factory("auth", password="s3cret'pw")
    with psycopg.connect(inst.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(inst.dsn(password="wrong"), connect_timeout=5)
    bare = f"host=127.0.0.1 port={inst.port} dbname=postgres user=postgres"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bare, connect_timeout=5)
    assert inst.psql("SELECT current_user") == "postgres"  # the local socket stays trusted


def test_pg_kill9_pause_restart(pg_factory) -> None:
    inst = pg_factory("crash")
    dsn = inst.create_database("crashdb")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    inst.pause()
    assert inst.is_paused()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    inst.resume()
    inst.kill9()
    assert not inst.is_running()
    inst.start()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)


def test_fresh_db_and_group(fresh_db, unique_group: str) -> None:
    for dsn in (fresh_db.primary_dsn, fresh_db.standby_dsn):
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
        assert row == (fresh_db.name,)
    assert unique_group.startswith("t") and len(unique_group) == 9
