"""F10: a corrupt byte in an entry (guarantee 4: a corrupt entry is never applied).

One byte of a redo entry's Avro payload is flipped inside the broker's log segment file on disk, in
an entry the standby has not applied yet (its applier is stopped meanwhile). The broker serves the
damaged bytes as they are (it does not check batch CRCs on fetch, nor does librdkafka by default), so
the applier's CRC-32C check is what catches it. The group is configured with ``compression: none``:
with lz4 the payload would not appear as such in the segment.

* With the retransmit window (default 900 s) the applier re-reads, quarantines the raw bytes with the
  reason, asks for a retransmission, skips until the republished range, and converges: the ledger on
  the standby is a gap-free prefix at every observation, nothing is applied twice, the total balance
  holds, every table is equal at the end, and ``ark status`` lists the event.
* Without it (window 0: retransmission disabled; window 1 s: the slot has moved past the standby's
  position) the applier stops with "cannot retransmit ... ark resync" and has applied nothing after
  the entry before the corrupt one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from common.config import KafkaSettings
from common.kafka import make_consumer, read_range, topic_exists, watermarks
from deploy.workload import BankWorkload
from schemas import envelope
from schemas.control import body_from_wire
from schemas.entries import Op, TxnChunk, from_record
from schemas.errors import InvalidChecksum
from schemas.topics import control_topic, quarantine_topic, redo_topic
from tests.support.faults import bank_setup, fault_case, fault_runs, history_keys, ledger_max
from tests.support.replication import sql, wait_for
from tests.support.segments import corrupt_on_disk, occurrences, served


def _consumer(group) -> Consumer:
    return make_consumer(KafkaSettings(bootstrap=group.kafka), group_id="f10-test")


def _next_offset(dsn: str) -> int:
    return int(sql(dsn, "SELECT next_offset FROM ark.apply_state WHERE standby = 'standby'")[0][0])


def _victim(group, start: int, data_dir: Path, timeout: float = 90) -> tuple[int, bytes, int]:
    """The first single-message transaction at or after ``start`` that inserts a history row and whose
    bytes occur once in the segments (a retransmitted range holds a second copy of its entries):
    (offset, value bytes, the row's ledger seq). While the capture is still republishing an earlier
    retransmission, the tail holds only copies: wait for new transactions behind it."""
    deadline = time.monotonic() + timeout
    while True:
        found = _unique_history_insert(group, start, data_dir)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no history insert in {redo_topic(group.name)} from offset {start} "
                                 f"within {timeout:g} s")
        time.sleep(2)


def _unique_history_insert(group, start: int, data_dir: Path) -> tuple[int, bytes, int] | None:
    topic = redo_topic(group.name)
    consumer = _consumer(group)
    try:
        end = watermarks(consumer, topic)[1]
        for msg in read_range(consumer, topic, start, end):
            body = from_record(envelope.decode(msg.value(), msg.headers()).record).body
            if isinstance(body, TxnChunk) and body.last and body.chunk_index == 0:
                if occurrences(data_dir, topic, msg.value()) != 1:
                    continue
                for change in body.changes:
                    if change.table == "public.history" and change.op == Op.INSERT:
                        return msg.offset(), msg.value(), int(change.values[-1])  # seq is the last column
    finally:
        consumer.close()
    return None


def _records(group, topic: str) -> list:
    if not topic_exists(KafkaSettings(bootstrap=group.kafka), topic):
        return []
    consumer = _consumer(group)
    try:
        end = watermarks(consumer, topic)[1]
        return list(read_range(consumer, topic, 0, end))
    finally:
        consumer.close()


def _control(group, kind: str) -> list[dict]:
    out = []
    for msg in _records(group, control_topic(group.name)):
        rec = envelope.decode(msg.value(), msg.headers()).record
        if rec["kind"] == kind:
            out.append(rec)
    return out


def _setup(make_group, **capture: object):
    group = make_group(chunk_rows=50, **capture)
    group.write_config(kafka={"bootstrap": group.kafka, "compression": "none"})  # payloads as-is on disk
    invariant = bank_setup(group)
    group.start("capture")
    apply = group.start("apply", "standby")
    return group, apply, invariant


def _corrupt_unapplied_entry(group, apply, kafka_broker, backlog_s: float) -> tuple[int, bytes, int]:
    """Stop the applier, let a backlog build, corrupt an entry in it; returns (offset, damaged bytes, seq)."""
    standby = group.standby("standby").dsn
    wait_for(lambda: ledger_max(standby) > 20, 90, "replication to run", interval=0.5)
    apply.stop()  # SIGTERM: the applier commits its batch and exits
    time.sleep(backlog_s)
    # Near the tail: older entries may have been republished by an earlier run's retransmission (two
    # copies), and the standby may lag far behind under load.
    consumer = _consumer(group)
    try:
        high = watermarks(consumer, redo_topic(group.name))[1]
    finally:
        consumer.close()
    start = max(_next_offset(standby) + 5, high - 200)
    while True:
        offset, value, seq = _victim(group, start, kafka_broker.data_dir)
        damaged = corrupt_on_disk(kafka_broker.data_dir, redo_topic(group.name), value)
        if damaged is not None:
            break
        start = offset + 1
    got, headers = served(group.kafka, group.name, offset)
    assert got == damaged != value, "the broker does not serve the damaged bytes"
    with pytest.raises(InvalidChecksum):
        envelope.verify(got, headers)
    return offset, damaged, seq


@pytest.mark.timeout(3600)  # ARK_FAULT_RUNS corruptions, about 40 s each
def test_f10_corrupt_entry_is_quarantined_and_retransmitted(make_group, kafka_broker, fault_results_dir) -> None:
    group, apply, invariant = _setup(make_group)
    standby = group.standby("standby").dsn
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    runs = fault_runs("F10", default=1)
    with fault_case("F10", "a corrupt byte in an entry", standby, invariant, fault_results_dir) as case:
        for run in range(runs):
            offset, damaged, seq = _corrupt_unapplied_entry(group, apply, kafka_broker, backlog_s=1.5)
            case.result.notes.append(f"run {run + 1}: flipped one byte of redo@{offset} (ledger seq {seq}) "
                                     "in the segment file")
            apply.start()

            def quarantined(damaged: bytes = damaged) -> bool:
                return any(m.value() == damaged for m in _records(group, quarantine_topic(group.name)))

            wait_for(quarantined, 120, "the raw bytes in the quarantine topic", interval=0.5)
            q = next(m for m in _records(group, quarantine_topic(group.name)) if m.value() == damaged)
            qh = envelope.header_map(q.headers())
            assert qh["ark-q-offset"] == str(offset) and qh["ark-q-standby"] == "standby"
            assert "CRC-32C" in qh["ark-q-reason"] and qh[envelope.H_CRC]  # the original headers are kept
            wait_for(lambda run=run: len(_control(group, "retransmit-done")) > run, 60,
                     "the capture's retransmit-done", interval=0.5)
            request = [r for r in _control(group, "retransmit") if getattr(body_from_wire(r), "offset", None) == offset]
            assert request and request[0]["target"] == "standby", _control(group, "retransmit")
            wait_for(lambda seq=seq: ledger_max(standby) >= seq, 180, "the standby past the corrupt entry",
                     interval=0.5)
            case.result.runs += 1
        status = json.loads(group.ark_ok("status", "--json"))
        kinds = [(e["kind"], e["target"]) for e in status["retransmits"]]
        assert ("retransmit", "standby") in kinds and ("retransmit-done", "standby") in kinds, status
        time.sleep(2)
        workload.stop()
        case.finish(group)
    case.result.assert_clean()
    log = apply.log_file.read_text(errors="replace")
    assert "quarantined, retransmission requested" in log and "retransmission found at offset" in log


@pytest.mark.parametrize("window", [0, 1], ids=["window-0-disabled", "slot-moved-past"])
def test_f10_no_retransmission_possible_stops_the_standby(make_group, kafka_broker, window: float) -> None:
    group, apply, _invariant = _setup(make_group, retransmit_window_s=window)
    standby = group.standby("standby").dsn
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    try:
        offset, _damaged, seq = _corrupt_unapplied_entry(group, apply, kafka_broker, backlog_s=3.0)
        apply.start()
        assert apply.wait_exit(90) == 14, apply.tail(40)
    finally:
        workload.stop()
    log = apply.tail(60)
    assert "cannot retransmit the source log after" in log and "ark resync standby" in log, log
    if window:
        assert "no longer holds its log after" in log and "keeps its log only from" in log, log
    else:
        assert "retransmission is disabled" in log, log
    # Nothing at or after the corrupt entry was applied, and what was applied is a gap-free prefix.
    assert _next_offset(standby) <= offset
    _ids, seqs = history_keys(standby)
    assert seqs and max(seqs) < seq and sorted(seqs) == list(range(1, len(seqs) + 1))
    assert _control(group, "retransmit-failed")
    status = json.loads(group.ark_ok("status", "--json"))
    assert any(e["kind"] == "retransmit-failed" for e in status["retransmits"]), status
    sb = status["standbys"][0]
    assert "cannot retransmit" in sb["message"] or sb["state"].startswith("down"), sb
