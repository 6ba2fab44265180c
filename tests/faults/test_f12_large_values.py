"""F12: values of any size under faults (issue 17): kill -9 of capture and of apply in the middle of a
large value, and a corrupt part, while the ledger workload runs.

Each injection writes one source transaction of ``ROWS`` rows whose values are 24 MB (bytea and text):
dozens of parts, several Kafka transactions (the capture commits to Kafka midway through a large source
transaction). Then:

* the capture is killed once the topic ends inside that transaction (parts published, its last chunk
  not yet): it resumes from what Kafka holds and publishes the rest (a value cut short starts again at
  part 0);
* the applier is killed while it holds parts in its open transaction (nothing committed): it restarts
  from its committed offset and reads the parts again;
* one byte of a part is flipped in the broker's segment file: the applier quarantines it, asks for a
  retransmission and applies the republished transaction whole.

Throughout, the sampler checks that the standby shows each batch whole or not at all, the ledger has no
gap and no duplicate, and the total balance holds; at the end every value is equal (length and md5).
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from common.config import KafkaSettings, load_config
from common.kafka import make_consumer, read_range, topic_exists, watermarks
from common.redo_kafka import KafkaRedoLog
from deploy.workload import BankWorkload
from producers.resume import find_resume_point
from schemas import envelope
from schemas.entries import TxnChunk, from_record
from schemas.errors import InvalidChecksum
from schemas.topics import control_topic, quarantine_topic, redo_topic
from tests.support.faults import bank_setup, batches_partial, converge, fault_case, fault_runs
from tests.support.replication import Group, sql, wait_for
from tests.support.segments import corrupt_on_disk, occurrences, served

ROWS = 4
MB = 1 << 20
DOCS_DDL = "CREATE TABLE docs (id bigint PRIMARY KEY, batch int NOT NULL, body bytea, note text)"


def _fingerprint(dsn: str) -> list[tuple]:
    return sql(dsn, "SELECT id, batch, length(body), md5(body), md5(note) FROM docs ORDER BY id")


def _write_batch(dsn: str, batch: int) -> None:
    """One source transaction: ROWS rows of 24 MB values (bytea random, text multi-byte)."""
    with psycopg.connect(dsn) as conn:
        for i in range(ROWS):
            conn.execute("INSERT INTO docs VALUES (%s, %s, %s, %s)",
                         (batch * 100 + i, batch, os.urandom(24 * MB), ("é€𝄞x" * (6 * MB))[: 8 * MB]))


def _wait_partial_in_kafka(group: Group, timeout: float) -> bool:
    """True once the redo topic ends inside a source transaction (chunks committed, its last not yet)."""
    redo = KafkaRedoLog(load_config(group.config).kafka, group.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if find_resume_point(redo).partial_key is not None:
            return True
        time.sleep(0.05)
    return False


_HOLDING_PARTS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                  "application_name LIKE 'ark apply %' AND backend_xid IS NOT NULL AND query LIKE '%_ark_parts%'")


def _wait_apply_holding_parts(standby_dsn: str, timeout: float) -> bool:
    """True once the applier's open transaction holds parts of a value (stored, its row not yet applied)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(_HOLDING_PARTS).fetchone()
            if row and row[0]:
                return True
            time.sleep(0.01)
    return False


def _records(group: Group, topic: str, start: int = 0) -> list:
    settings = KafkaSettings(bootstrap=group.kafka)
    if not topic_exists(settings, topic):
        return []
    consumer = make_consumer(settings, group_id="f12-test")
    try:
        return list(read_range(consumer, topic, start, watermarks(consumer, topic)[1]))
    finally:
        consumer.close()


def _a_part(group: Group, start: int, data_dir, timeout: float = 120) -> tuple[int, bytes]:
    """A part (not the first) of the batch published from offset ``start`` on, once its transaction is
    whole in Kafka, whose bytes occur once in the segments: (offset, value bytes)."""
    topic = redo_topic(group.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts, complete = [], False
        for msg in _records(group, topic, start):
            body = from_record(envelope.decode(msg.value(), msg.headers()).record).body
            if isinstance(body, TxnChunk) and body.part is not None and body.part.index == 1:
                parts.append((msg.offset(), msg.value()))
            if isinstance(body, TxnChunk) and body.last and any(c.table == "public.docs" for c in body.changes):
                complete = True
        if complete:
            for offset, value in parts:
                if occurrences(data_dir, topic, value) == 1:
                    return offset, value
        time.sleep(1)
    raise AssertionError(f"no whole large transaction in {topic} from offset {start} within {timeout:g} s")


def _control_kinds(group: Group) -> list[str]:
    return [envelope.decode(m.value(), m.headers()).record["kind"] for m in _records(group, control_topic(group.name))]


@pytest.mark.timeout(3600)
def test_f12_kill9_and_a_corrupt_part_in_the_middle_of_large_values(make_group, kafka_broker,
                                                                   fault_results_dir) -> None:
    runs = fault_runs("F12", default=1)
    group = make_group(chunk_rows=50)
    group.write_config(kafka={"bootstrap": group.kafka, "compression": "none"})  # payloads as-is on disk
    primary = group.primary_dsn
    sql(primary, DOCS_DDL)
    invariant = bank_setup(group)
    standby = group.standby("standby").dsn
    capture = group.start("capture")
    apply = group.start("apply", "standby")
    workload = BankWorkload(primary, accounts=100, clients=2, ledger=True).start()
    hits = {"capture mid value": 0, "apply holding parts": 0, "corrupt part retransmitted": 0}
    with fault_case("F12", "kill -9 and a corrupt part in the middle of large values", standby, invariant,
                    fault_results_dir, extra=[batches_partial("docs", ROWS)]) as case:
        converge(group, at_least=20)
        batch = 0
        for _run in range(runs):
            batch += 1
            _write_batch(primary, batch)
            if _wait_partial_in_kafka(group, 120):
                capture.kill9()
                hits["capture mid value"] += 1
                capture.start()
            batch += 1
            _write_batch(primary, batch)
            if _wait_apply_holding_parts(standby, 120):
                apply.kill9()
                hits["apply holding parts"] += 1
                apply.start()
            wait_for(lambda: _fingerprint(primary) == _fingerprint(standby), 300, "the batches on the standby",
                     interval=1)
            # A corrupt part: the applier is stopped while the batch is published, one byte flipped.
            apply.stop()
            batch += 1
            start = watermarks_end(group)
            _write_batch(primary, batch)
            offset, value = _a_part(group, start, kafka_broker.data_dir)
            damaged = corrupt_on_disk(kafka_broker.data_dir, redo_topic(group.name), value)
            assert damaged is not None
            got, headers = served(group.kafka, group.name, offset)
            with pytest.raises(InvalidChecksum):
                envelope.verify(got, headers)
            apply.start()
            wait_for(lambda damaged=damaged: any(m.value() == damaged
                                                 for m in _records(group, quarantine_topic(group.name))),
                     180, "the damaged part in the quarantine topic", interval=1)
            wait_for(lambda: "retransmit-done" in _control_kinds(group), 180, "the capture's retransmit-done",
                     interval=1)
            wait_for(lambda: _fingerprint(primary) == _fingerprint(standby), 300,
                     "the retransmitted batch on the standby", interval=1)
            hits["corrupt part retransmitted"] += 1
            case.result.runs += 1
        workload.stop()
        converge(group)
        case.result.notes.append(", ".join(f"{k}: {v}" for k, v in hits.items()))
        assert _fingerprint(primary) == _fingerprint(standby)
        case.finish(group)
    case.result.assert_clean()
    # Each injection happened (a case that missed its moment would prove nothing).
    assert hits == dict.fromkeys(hits, runs), hits
    log = apply.log_file.read_text(errors="replace")
    assert "quarantined, retransmission requested" in log, log[-3000:]


def watermarks_end(group: Group) -> int:
    """The redo topic's end offset now."""
    consumer = make_consumer(KafkaSettings(bootstrap=group.kafka), group_id="f12-test")
    try:
        return watermarks(consumer, redo_topic(group.name))[1]
    finally:
        consumer.close()
