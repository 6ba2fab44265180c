"""The transactional Kafka side of capture: produce entries, commit, and report what is durable."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from common.config import ArkConfig
from common.errors import FencedError, KafkaUnavailable
from common.kafka import make_producer, unavailable
from schemas import envelope
from schemas.entries import REDO_SCHEMA, RedoEntry, TxnChunk, to_record
from schemas.topics import capture_transactional_id, redo_topic

log = logging.getLogger(__name__)

#: Commit a Kafka transaction inside a huge source transaction past this many bytes, so that
#: no Kafka transaction outlives transaction.timeout.ms. The applier only applies at the last chunk.
#: Small values also let the applier start on a large transaction while capture still reads it
#: (the standby transaction stays open across chunks; the source is confirmed only at the end).
MAX_TXN_BYTES = 16 * 1024 * 1024
MAX_TXN_SECONDS = 2.0


class RetryableKafkaError(KafkaUnavailable):
    """The Kafka transaction was aborted; capture re-reads from the source and tries again."""


class RedoPublisher:
    """A transactional, idempotent producer (acks=all) for one group's redo topic.

    Its ``transactional.id`` belongs to the group, not the host: a second capture of the same
    group fences this one inside Kafka (guarantee 6).
    """

    def __init__(self, cfg: ArkConfig) -> None:
        self.topic = redo_topic(cfg.group)
        self._group = cfg.group
        self._engine = cfg.primary.engine
        self._producer: Producer = make_producer(
            cfg.kafka,
            transactional_id=capture_transactional_id(cfg.group),
            **{"queue.buffering.max.kbytes": 65536, "batch.size": 1_000_000, "linger.ms": 20},
        )
        self._settings = cfg.kafka
        self.in_transaction = False
        self.txn_bytes = 0
        self.txn_started = 0.0
        self.last_offset = -1
        self._delivery_error: KafkaError | None = None
        try:
            self._producer.init_transactions(60)
        except KafkaException as exc:
            raise unavailable(cfg.kafka, exc.args[0]) from None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_error = err
        else:
            offset = msg.offset()
            if offset is not None:
                self.last_offset = max(self.last_offset, offset)

    def publish(self, entry: RedoEntry, epoch: int) -> None:
        """Produce one entry inside the current Kafka transaction (opening one if needed)."""
        if not self.in_transaction:
            self._call(self._producer.begin_transaction)
            self.in_transaction = True
            self.txn_bytes = 0
            self.txn_started = time.monotonic()
        body = entry.body
        position = body.commit.text if isinstance(body, TxnChunk) else getattr(body, "position", "")
        commit_us = body.commit_time_us if isinstance(body, TxnChunk) else None
        env = envelope.encode(REDO_SCHEMA, to_record(entry), epoch=epoch, source_position=position,
                              commit_time_us=commit_us)
        while True:
            try:
                self._producer.produce(self.topic, env.value, headers=env.headers, timestamp=env.timestamp_ms,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain (bounded memory)
        self._producer.poll(0)
        self.txn_bytes += len(env.value)

    def should_commit_midway(self) -> bool:
        """True when the open Kafka transaction is large or old enough to commit inside a source transaction."""
        return self.in_transaction and (
            self.txn_bytes >= MAX_TXN_BYTES or time.monotonic() - self.txn_started >= MAX_TXN_SECONDS
        )

    def commit(self) -> None:
        """Commit the open Kafka transaction; afterwards everything produced in it is durable."""
        if not self.in_transaction:
            return
        self._call(self._producer.commit_transaction, 120)
        self.in_transaction = False
        if self._delivery_error is not None:
            err, self._delivery_error = self._delivery_error, None
            raise RetryableKafkaError(f"delivery failed after commit: {err}", fix="capture retries by itself")

    def abort(self) -> None:
        """Abort the open Kafka transaction (its entries never become visible to read_committed readers)."""
        if not self.in_transaction:
            return
        self.in_transaction = False
        self._delivery_error = None
        try:
            self._producer.abort_transaction(60)
        except KafkaException as exc:
            log.warning("abort_transaction failed (%s); the broker will expire the transaction", exc)

    def poll(self) -> None:
        """Serve delivery callbacks."""
        self._producer.poll(0)

    def _call(self, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
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
            raise RetryableKafkaError(f"Kafka transaction failed: {err}", fix="capture retries by itself") from None
