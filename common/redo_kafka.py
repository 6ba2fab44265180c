"""The redo log on Kafka (:class:`KafkaRedoLog`): a transactional, idempotent producer (acks=all) whose
``transactional.id`` belongs to the group, not the host (guarantee 6), and read_committed readers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from common.errors import FencedError, KafkaUnavailable
from common.kafka import (
    PRODUCER_MAX_MESSAGE_BYTES,
    broker_config,
    ensure_topic,
    last_messages,
    make_consumer,
    make_producer,
    read_range,
    topic_config,
    unavailable,
    watermarks,
)
from common.link import LEVELS, SAMPLE_INTERVAL_MS, LinkChoice, LinkState, StatsWindow, decide
from common.redo import EndOfLog, RedoLog, RedoRangeDeleted, RedoReader, RedoRecord, RedoWriter
from common.settings import KafkaSettings
from schemas.topics import capture_transactional_id, quarantine_topic, redo_topic

log = logging.getLogger(__name__)


class TransactionAborted(KafkaUnavailable):
    """The Kafka transaction was aborted; the capture re-reads from the source and tries again."""


@dataclass(frozen=True)
class MessageLimits:
    """The message limits that apply to one topic (bytes; 0 when unknown)."""

    topic: int
    broker: int
    producer: int = PRODUCER_MAX_MESSAGE_BYTES

    @property
    def effective(self) -> int:
        """The largest message Ark may send there (the topic's limit wins over the broker's default)."""
        known = [x for x in (self.topic or self.broker, self.producer) if x > 0]
        return min(known) if known else self.producer


def limits_of(settings: KafkaSettings, topic: str) -> MessageLimits:
    """The limits of ``topic`` as the cluster reports them (KafkaUnavailable when it does not answer)."""
    config = topic_config(settings, topic)
    try:
        broker = int(broker_config(settings).get("message.max.bytes", "0") or 0)
    except KafkaUnavailable:
        broker = 0  # the topic's effective value already includes the broker's default
    return MessageLimits(topic=int(config.get("max.message.bytes", "0") or 0), broker=broker)


def _record(msg: Message) -> RedoRecord:
    _kind, ts = msg.timestamp()
    return RedoRecord(msg.offset() or 0, msg.value(), msg.headers(), ts)


class KafkaWriter(RedoWriter):
    """The group's transactional producer. With ``kafka.compression: auto`` its codec, level, linger and batch size
    follow the measured link (:mod:`common.link`): a new choice is applied right after a commit, by a new producer
    with the same ``transactional.id`` (nothing in flight, so every record stays in exactly one transaction)."""

    def __init__(self, settings: KafkaSettings, group: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = redo_topic(group)
        self._group = group
        self._settings = settings
        self._clock = clock
        self.adaptive = settings.compression == "auto"
        self._window = StatsWindow(clock=clock)
        self._link = LinkState(since_s=clock())
        self._pending: LinkChoice | None = None
        #: The settings the producer runs with now; every change made, oldest first (for tests and reports).
        self.choice: LinkChoice = LEVELS[0] if self.adaptive else LinkChoice(settings.compression, -1, 20, 1_000_000)
        self.changes: list[LinkChoice] = []
        self.last_offset = -1
        self._delivery_error: KafkaError | None = None
        self._producer: Producer = self._open(self.choice)

    def _open(self, choice: LinkChoice) -> Producer:
        """A transactional producer for ``choice``, initialised (which fences any older one of the group)."""
        extra: dict[str, Any] = {"queue.buffering.max.kbytes": 65536, "batch.size": choice.batch_bytes,
                                 "linger.ms": choice.linger_ms}
        if self.adaptive:
            extra.update(choice.producer_config())
            extra["statistics.interval.ms"] = SAMPLE_INTERVAL_MS
            extra["stats_cb"] = self._on_stats
        producer = make_producer(self._settings, transactional_id=capture_transactional_id(self._group), **extra)
        try:
            producer.init_transactions(60)
        except KafkaException as exc:
            raise unavailable(self._settings, exc.args[0]) from None
        return producer

    def _on_stats(self, stats_json: str) -> None:
        sample = self._window.sample(stats_json)
        if sample is None:
            return
        decision = decide(self._link, sample, self._clock())
        self._link = decision.state
        if decision.change is not None:
            self._pending = decision.change
            log.info("redo producer: %s -> %s at the next commit: %s; measured %s", self.choice.describe(),
                     decision.change.describe(), decision.why, sample.describe())

    def _switch(self, choice: LinkChoice) -> None:
        """Replace the producer (between transactions) by one made for ``choice``."""
        started = time.monotonic()
        self._producer.flush(30)  # nothing should be left after a commit; never drop a delivery report
        self._producer.close()
        self._producer = self._open(choice)
        self.choice = choice
        self.changes.append(choice)
        log.info("redo producer now sends %s (switched in %.2f s)", choice.describe(), time.monotonic() - started)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_error = err
        else:
            offset = msg.offset()
            if offset is not None:
                self.last_offset = max(self.last_offset, offset)

    def begin(self) -> None:
        self._call(self._producer.begin_transaction)

    def produce(self, value: bytes, headers: list[tuple[str, str | bytes | None]], timestamp_ms: int) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, headers=headers, timestamp=timestamp_ms,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                started = time.monotonic()
                self._producer.poll(0.05)  # local queue full: let deliveries drain (bounded memory)
                self._window.waited_s += time.monotonic() - started
        self._window.payload_bytes += len(value)
        self._producer.poll(0)

    def commit(self) -> None:
        started = time.monotonic()
        try:
            self._call(self._producer.commit_transaction, 120)  # flushes: waits for the link and the broker
        finally:
            self._window.waited_s += time.monotonic() - started
        if self._delivery_error is not None:
            err, self._delivery_error = self._delivery_error, None
            raise TransactionAborted(f"delivery failed after commit: {err}", fix="capture retries by itself")
        if self._pending is not None:
            choice, self._pending = self._pending, None
            self._switch(choice)

    def abort(self) -> None:
        self._delivery_error = None
        try:
            self._producer.abort_transaction(60)
        except KafkaException as exc:
            log.warning("abort_transaction failed (%s); the broker will expire the transaction", exc)

    def poll(self) -> None:
        self._producer.poll(0)

    def _call(self, fn: Any, *args: object) -> None:
        try:
            fn(*args)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
                raise FencedError(
                    f"capture of group {self._group} was fenced by a newer capture (same transactional.id)",
                    fix="only one capture per group may run; stop the other one or let the controller decide",
                ) from None
            if err.fatal():
                raise FencedError(f"fatal Kafka producer error: {err}", fix="restart the capture") from None
            self.abort()  # whatever the error, the batch is re-read from the source after a restart
            raise TransactionAborted(f"Kafka transaction failed: {err}", fix="capture retries by itself") from None


class KafkaReader(RedoReader):
    """A read_committed consumer assigned to partition 0; offsets are the applier's to keep."""

    def __init__(self, settings: KafkaSettings, group: str, name: str) -> None:
        self.topic = redo_topic(group)
        # 'error': an offset that retention deleted is reported, never replaced by the oldest one retained.
        self._consumer = make_consumer(settings, group_id=f"ark-apply-{group}-{name}",
                                       **{"auto.offset.reset": "error"})
        self._tp = TopicPartition(self.topic, 0)
        self._assigned = False
        self._position = 0  # the next offset this reader asked for

    def seek(self, offset: int) -> None:
        self._position = offset
        if not self._assigned:
            self._consumer.assign([TopicPartition(self.topic, 0, offset)])
            self._assigned = True
        else:
            self._consumer.seek(TopicPartition(self.topic, 0, offset))

    def poll(self, timeout: float) -> RedoRecord | EndOfLog | None:
        msg = self._consumer.poll(timeout)
        if msg is None:
            return None
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._position = msg.offset() or 0
                return EndOfLog(self._position)
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                low = self.watermarks()[0]
                raise RedoRangeDeleted(self.topic, self._position, max(low, self._position + 1))
            log.warning("redo topic: %s", error)
            return None
        rec = _record(msg)
        self._position = rec.offset + 1
        return rec

    def pause(self) -> None:
        self._consumer.pause([self._tp])  # drops the prefetched backlog: nothing is spooled

    def resume(self, offset: int) -> None:
        self._position = offset
        self._consumer.resume([self._tp])
        self._consumer.seek(TopicPartition(self.topic, 0, offset))

    def watermarks(self) -> tuple[int, int]:
        return watermarks(self._consumer, self.topic, 0, timeout=2.0)

    def end_hint(self) -> int:
        # The end offset each fetch response carries: no round trip to a busy broker from the apply loop.
        try:
            _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except KafkaException:
            high = -1
        return int(high) if high is not None and high >= 0 else self.watermarks()[1]

    def low_watermark(self) -> int:
        """The log start offset the broker sent with its last fetch response (no request), else asked for."""
        try:
            low, _high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except KafkaException:
            low = -1
        return int(low) if low is not None and low >= 0 else self.watermarks()[0]

    def report(self, next_offset: int) -> None:
        try:
            self._consumer.commit(offsets=[TopicPartition(self.topic, 0, next_offset)], asynchronous=True)
        except KafkaException as exc:
            log.debug("consumer offset commit skipped: %s", exc)

    def close(self) -> None:
        self._consumer.close()


class KafkaRedoLog(RedoLog):
    """``ark.<group>.redo`` and ``ark.<group>.quarantine`` on Kafka."""

    def __init__(self, settings: KafkaSettings, group: str) -> None:
        self.settings = settings
        self.group = group
        self.topic = redo_topic(group)

    def ensure(self) -> None:
        ensure_topic(self.settings, self.topic, retention_ms=self.settings.redo_retention_ms)

    def writer(self) -> KafkaWriter:
        return KafkaWriter(self.settings, self.group)

    def reader(self, name: str) -> KafkaReader:
        return KafkaReader(self.settings, self.group, name)

    def watermarks(self) -> tuple[int, int]:
        consumer = make_consumer(self.settings, group_id="ark-inspect")
        try:
            return watermarks(consumer, self.topic, 0)
        finally:
            consumer.close()

    def read_range(self, start: int, stop: int) -> Iterator[RedoRecord]:
        consumer = make_consumer(self.settings, group_id="ark-inspect", **{"auto.offset.reset": "error"})
        try:
            for msg in read_range(consumer, self.topic, start, stop):
                yield _record(msg)
        finally:
            consumer.close()

    def tail(self, count: int, accept: Callable[[RedoRecord], bool] | None = None) -> list[RedoRecord]:
        keep = None if accept is None else (lambda m: accept(_record(m)))
        return [_record(m) for m in last_messages(self.settings, self.topic, count=count, accept=keep)]

    def message_limit(self) -> int:
        """min(the topic's ``max.message.bytes`` (the broker's ``message.max.bytes`` when the topic does not set
        it), Ark's producer limit)."""
        limits = limits_of(self.settings, self.topic)
        return limits.effective

    def quarantine(self, value: bytes | None, headers: list[tuple[str, str | bytes | None]], key: str) -> None:
        topic = quarantine_topic(self.group)
        ensure_topic(self.settings, topic, retention_ms=-1)  # evidence: kept until an operator removes it
        extra: dict[str, Any] = {"message.timeout.ms": 15000}
        producer = make_producer(self.settings, **extra)
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        producer.produce(topic, value or b"", key=key.encode(), headers=headers, on_delivery=on_delivery)
        deadline = time.monotonic() + 20
        while producer.flush(1) and time.monotonic() < deadline:
            pass
        if len(producer) or failures:
            raise unavailable(self.settings, failures[0] if failures else "quarantine record not delivered in 20 s")
