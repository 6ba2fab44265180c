"""The one interface filesync has to Kafka: a file set's topic, ``ark.<group>.files.<set>``.

Guarantees:

- Partition 0 (:data:`CHANGES`) carries the sender's records to the targets; partition 1
  (:data:`FEEDBACK`) carries the targets' acknowledgements back. Each side writes one partition
  and reads the other, so a sender never downloads its own deltas again.
- :meth:`SetChannel.publish` uses an idempotent producer with ``acks=all``: within a producer
  session records land once, in order. :meth:`SetChannel.flush` returns when all are delivered.
- :meth:`Reader.poll` returns records whose CRC-32C (the envelope's) verified. On a mismatch it
  re-reads the message once; if it is still corrupt it raises :class:`ChannelCorrupt` carrying the
  offset, and the reader is positioned after it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from common.config import KafkaSettings
from common.errors import KafkaUnavailable
from common.kafka import ensure_topic, make_consumer, make_producer, watermarks
from schemas import envelope
from schemas.errors import CorruptEntry
from schemas.topics import files_topic

log = logging.getLogger(__name__)

CHANGES = 0
FEEDBACK = 1
SCHEMA = "filesync_entry"


@dataclass(frozen=True)
class Item:
    """One verified record: where it was, who wrote it, its type name, its body, and when it was
    published (the envelope's time, microseconds since the Unix epoch: a delayed target's clock)."""

    offset: int
    origin: str
    kind: str
    body: dict[str, Any]
    size: int
    published_us: int = 0


class ChannelCorrupt(Exception):
    """A record failed its CRC-32C twice; ``offset`` names it."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt record at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class SetChannel:
    """Publishing to and reading from one file set's topic."""

    def __init__(self, settings: KafkaSettings, group: str, file_set: str, origin: str,
                 retention_ms: int = 7 * 24 * 3_600_000) -> None:
        self.settings = settings
        self.file_set = file_set
        self.origin = origin
        self.topic = files_topic(group, file_set)
        self.retention_ms = retention_ms
        self._producer: Any = None
        self.bytes_out = 0

    def ensure(self) -> None:
        """Create the topic (two partitions) if it is missing."""
        ensure_topic(self.settings, self.topic, partitions=2, retention_ms=self.retention_ms)

    def publish(self, partition: int, kind: str, body: dict[str, Any]) -> int:
        """Queue one record on ``partition``; returns its size in bytes (value + headers)."""
        record = {"file_set": self.file_set, "origin": self.origin, "kind": kind, "body": (f"ark.files.{kind}", body)}
        env = envelope.encode(SCHEMA, record)
        size = len(env.value) + sum(len(k) + len(v or b"") for k, v in env.headers)
        self._produce(partition, env.value, list(env.headers), env.timestamp_ms)
        self.bytes_out += size
        return size

    def _produce(self, partition: int, value: bytes, headers: list[Any], ts_ms: int) -> None:
        if self._producer is None:
            overrides: dict[str, Any] = {"linger.ms": 2}
            self._producer = make_producer(self.settings, **overrides)
        while True:
            try:
                self._producer.produce(self.topic, value=value, headers=headers, partition=partition,
                                       timestamp=ts_ms, on_delivery=_on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued record is acknowledged by the broker."""
        if self._producer is not None and self._producer.flush(timeout) > 0:
            raise KafkaUnavailable(f"records to {self.topic} not delivered within {timeout:g} s",
                                   fix="check the broker ('ark broker status') and retry")

    def reader(self, partition: int, start: int) -> Reader:
        """A reader of ``partition`` positioned at ``start`` (an offset, or -2 for the beginning)."""
        return Reader(self, partition, start)

    def close(self) -> None:
        """Flush and drop the producer."""
        if self._producer is not None:
            self.flush()
            self._producer = None


def _on_delivery(err: KafkaError | None, _msg: Any) -> None:
    if err is not None:
        log.error("filesync record not delivered: %s", err)


class Reader:
    """Sequential, CRC-verified reading of one partition of a set's topic."""

    def __init__(self, channel: SetChannel, partition: int, start: int) -> None:
        self.channel = channel
        self.partition = partition
        self.bytes_in = 0
        self._consumer = make_consumer(channel.settings, group_id=f"ark-files-{uuid.uuid4().hex[:8]}",
                                       **{"fetch.wait.max.ms": 10, "enable.partition.eof": False,
                                          "fetch.error.backoff.ms": 50})
        self.seek(start)

    def seek(self, offset: int) -> None:
        """Continue from ``offset`` (negative: from the oldest retained record)."""
        if offset < 0:
            offset = watermarks(self._consumer, self.channel.topic, self.partition)[0]
        self._consumer.assign([TopicPartition(self.channel.topic, self.partition, offset)])
        self.position = offset

    def pause(self) -> None:
        """Stop fetching (the prefetched records are dropped: a held record is not spooled twice)."""
        self._consumer.pause([TopicPartition(self.channel.topic, self.partition)])

    def resume(self) -> None:
        """Fetch again, from the record after the last one :meth:`poll` returned."""
        self._consumer.resume([TopicPartition(self.channel.topic, self.partition)])

    def end(self) -> int:
        """The current end offset of the partition."""
        return watermarks(self._consumer, self.channel.topic, self.partition)[1]

    def poll(self, timeout: float) -> Item | None:
        """The next verified record, or None when none came within ``timeout`` seconds."""
        msg = self._consumer.poll(timeout)
        if msg is None:
            return None
        if msg.error():
            raise KafkaUnavailable(f"reading {self.channel.topic}: {msg.error()}", fix="check the broker")
        offset = int(msg.offset() or 0)
        try:
            item = self._decode(msg, offset)
        except CorruptEntry as first:
            log.warning("filesync: %s; re-reading it once", first)
            self.seek(offset)
            again = self._consumer.poll(10.0)
            self.seek(offset + 1)
            if again is None or again.error():
                raise ChannelCorrupt(offset, first.reason) from None
            try:
                item = self._decode(again, offset)
            except CorruptEntry as second:
                raise ChannelCorrupt(offset, second.reason) from None
            self.position = offset + 1
            return item
        self.position = offset + 1
        return item

    def _decode(self, msg: Any, offset: int) -> Item:
        value = msg.value()
        decoded = envelope.decode(value, msg.headers(), topic=self.channel.topic, partition=self.partition,
                                  offset=offset, expect=SCHEMA)
        size = len(value or b"")
        self.bytes_in += size
        rec = decoded.record
        return Item(offset, rec["origin"], rec["kind"], rec["body"], size, decoded.commit_time_us)

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()
