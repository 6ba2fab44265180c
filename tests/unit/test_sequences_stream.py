"""Sequence values in the stream (issue 9): published while transactions flow and on request, applied forward
only, never before read time + delay. In memory, through the real capture and apply runners."""

from __future__ import annotations

import time
from typing import Any

import pytest

from common import agent
from schemas import envelope
from schemas.control import PublishSequences, SequencesPublished
from schemas.entries import SequenceValues, TxnChunk
from tests.support.memory import MemoryRedoLog, MemorySource, ins, memory_channel, table_meta, wait_until
from tests.unit.test_runners import T, apply, capture, config, entries, synced_standby


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(agent, "BACKOFF_MAX_S", 0.05)


def _fast(cfg: Any) -> Any:
    return cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"heartbeat_interval_s": 0.05})})


def test_sequence_values_follow_the_transactions_forward_only() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    standby = synced_standby(log, table_meta(T))
    cfg = _fast(config())
    cap, app = capture(cfg, source, log, store), apply(cfg, standby, log, store)
    try:
        for i in range(1, 6):
            source.sequences["public.t_id_seq"] = i
            source.commit([ins(T, i, "x")], [table_meta(T)])
            wait_until(lambda i=i: standby.db.sequences.get("public.t_id_seq") == i, what=f"sequence at {i}")
        source.sequences["public.t_id_seq"] = 2  # a value lower than what the standby has: never taken
        source.commit([ins(T, 9, "x")], [table_meta(T)])

        def lower() -> int | None:
            return next((o for o, b in entries(log) if isinstance(b, SequenceValues) and b.values
                         and b.values[0].last_value == 2), None)

        wait_until(lambda: lower() is not None, what="the lower value published")
        wait_until(lambda: standby.db.state is not None and standby.db.state.next_offset > (lower() or 0),
                   what="the standby past it")
    finally:
        app.stop()
        cap.stop()
    assert standby.db.sequences == {"public.t_id_seq": 5}
    published = [b for _o, b in entries(log) if isinstance(b, SequenceValues)]
    assert published and all(b.read_time_us > 0 for b in published)


def test_a_delayed_standby_takes_sequence_values_no_earlier_than_the_transaction_before_them_plus_delay() -> None:
    """Sequence values published after a transaction carry its commit time (the stream's time at their place):
    on a delayed standby they are due with it, never earlier, and never hold later transactions back."""
    source, log, store = MemorySource(), MemoryRedoLog(), []
    standby = synced_standby(log, table_meta(T))
    cap = capture(_fast(config()), source, log, store)
    app = apply(_fast(config(delay=0.5)), standby, log, store)
    try:
        source.sequences["public.s"] = 77
        txn = source.commit([ins(T, 1, "x")], [table_meta(T)])
        wait_until(lambda: any(isinstance(b, SequenceValues) for _o, b in entries(log)), what="published")
        wait_until(lambda: standby.db.sequences.get("public.s") == 77, what="applied after the delay")
        applied = time.time()
    finally:
        app.stop()
        cap.stop()
    assert applied - txn.commit_time_us / 1e6 >= 0.5
    sequence_offsets = {o for o, b in entries(log) if isinstance(b, SequenceValues)}
    stamps = {envelope.decode(r.value, r.headers).commit_time_us for r in log.entries() if r.offset in sequence_offsets}
    assert stamps == {txn.commit_time_us}  # the stream's time at their place, not their read time


def test_a_publish_sequences_request_is_answered_with_the_offset() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    source.sequences.update({"public.a": 3, "public.b": 4})
    cap = capture(_fast(config()), source, log, store)
    try:
        source.commit([ins(T, 1, "x")], [table_meta(T)])
        channel = memory_channel(store)
        request = channel.publish(PublishSequences("switchover"), "")
        answers: list[SequencesPublished] = []

        def answered() -> bool:
            answers.extend(r.body for r in channel.poll() if isinstance(r.body, SequencesPublished))
            return any(a.request == request for a in answers)

        wait_until(answered, what="the sequences-published answer")
    finally:
        cap.stop()
    answer = next(a for a in answers if a.request == request)
    body = dict(entries(log))[answer.offset]
    assert isinstance(body, SequenceValues) and body.request == request and answer.sequences == 2
    assert {v.name: v.last_value for v in body.values} == {"public.a": 3, "public.b": 4}


def test_after_a_shape_change_every_value_travels_again_moved_or_not() -> None:
    """A capture that is behind reads the live values: a sequence's value can travel before the DDL that creates
    the sequence on the standby, which leaves it alone. After the DDL (a shape change) the value must travel
    again even though it did not move, or a sequence no longer used stays at its start on the standby."""
    source, log, store = MemorySource(), MemoryRedoLog(), []
    source.sequences["public.s"] = 21
    cap = capture(_fast(config()), source, log, store)

    def value_after(offset: int) -> bool:
        return any(o > offset and isinstance(b, SequenceValues) and any(
            v.name == "public.s" and v.last_value == 21 for v in b.values) for o, b in entries(log))

    def txn_offset(nth: int) -> int | None:
        # Counting publications would race the capture's first idle publication; offsets do not.
        ends = [o for o, b in entries(log) if isinstance(b, TxnChunk) and b.last and b.txn_id]
        return ends[nth - 1] if len(ends) >= nth else None

    try:
        source.commit([ins(T, 1, "x")], [table_meta(T)])
        wait_until(lambda: txn_offset(1) is not None and value_after(-1), what="the value published once")
        source.commit([ins(T, 2, "x")], [table_meta(T, version="v2")])  # a shape change; the value did not move
        wait_until(lambda: txn_offset(2) is not None, what="the transaction after the shape change")
        wait_until(lambda: value_after(txn_offset(2) or 0), what="the value published again after the shape change")
    finally:
        cap.stop()


def test_a_publish_sequences_request_brings_the_next_idle_checkpoint_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ark verify`` and ``ark cutover`` ask for the sequences after they chose their position P: on an idle
    source (a fenced primary) the standby knows it holds everything below P only from a checkpoint, which must
    come at once, not at the next idle checkpoint (every 10 s)."""
    from producers import session as capture_session

    monkeypatch.setattr(capture_session, "CHECKPOINT_INTERVAL_S", 3600.0)
    source, log, store = MemorySource(), MemoryRedoLog(), []
    source.sequences["public.s"] = 1
    cap = capture(_fast(config()), source, log, store)

    def checkpoints_after(offset: int) -> list[int]:
        return [o for o, b in entries(log) if o > offset and isinstance(b, TxnChunk) and not b.txn_id]

    try:
        source.commit([ins(T, 1, "x")], [table_meta(T)])
        wait_until(lambda: any(isinstance(b, TxnChunk) and b.txn_id and b.last for _o, b in entries(log)),
                   what="the transaction in the log")
        second = max(o for o, b in entries(log) if isinstance(b, TxnChunk) and b.txn_id)
        assert not checkpoints_after(second)
        channel = memory_channel(store)
        channel.publish(PublishSequences("verify: a checkpoint at P"), "")
        wait_until(lambda: bool(checkpoints_after(second)), what="a checkpoint right after the request")
    finally:
        cap.stop()
