"""Kafka plumbing for every agent: client factories, error translation, topics, delivery futures.

All Kafka access of Ark goes through here, so that security settings, timeouts and the
translation of librdkafka errors into :class:`~common.errors.KafkaUnavailable` (with a fix) live
in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from common.config import KafkaSettings
from common.errors import KafkaUnavailable
from common.kafka_logs import LIBRDKAFKA

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000

#: The largest message Ark's producers send (librdkafka ``message.max.bytes``) and the limit it gives the
#: topics it creates (``max.message.bytes``). A broker or topic with a lower limit lowers Ark's (see
#: :func:`common.redo_kafka.KafkaRedoLog.message_limit`); nothing Ark publishes is ever larger.
PRODUCER_MAX_MESSAGE_BYTES = 16_000_000


#: When set, librdkafka's own log lines go to this Python logger; by default they go to
#: :data:`common.kafka_logs.LIBRDKAFKA`, which keeps one line of a kind per 10 s (a broker outage made every client
#: write 20 lines a second straight to stderr; under the console's full-screen UI a line on the terminal garbles it).
CLIENT_LOGGER: logging.Logger | None = None


def client_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """librdkafka properties for ``settings``; SASL password resolved here, never logged."""
    # log_level 5 (notice): librdkafka's info lines (e.g. "Purging 1 unserved events from background queue" when
    # an admin client closes) are noise on an operator's terminal; warnings and errors still show.
    # reconnect.backoff.max.ms 1 s (librdkafka's default is 10 s): after a broker restart every client is back within
    # about a second, not up to ten; the node agents' leases and the controller's ttl are counted in seconds (F26).
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap, "client.id": "ark", "log_level": 5,
                            "reconnect.backoff.max.ms": 1000}
    conf["logger"] = CLIENT_LOGGER if CLIENT_LOGGER is not None else LIBRDKAFKA
    conf.update(settings.client)
    if settings.sasl_username is not None and settings.sasl_password is not None:
        conf["sasl.username"] = settings.sasl_username
        conf["sasl.password"] = settings.sasl_password.resolve("kafka.sasl_password").get_secret_value()
    conf.update(overrides)
    return conf


#: The same client error (by code) is logged at most once per this many seconds, with a count of the repeats: a
#: broker outage makes every client report a refused connection each second (reconnect.backoff.max.ms).
CLIENT_ERROR_EVERY_S = 10.0
_client_errors: dict[int, tuple[float, int]] = {}


def _log_client_error(err: KafkaError, clock: Callable[[], float] = time.monotonic) -> bool:
    """Log ``err`` unless its code was logged within :data:`CLIENT_ERROR_EVERY_S`; returns whether it logged."""
    # librdkafka reports transient broker outages here; they are retried internally.
    now = clock()
    code = err.code()
    last, repeats = _client_errors.get(code, (float("-inf"), 0))
    if now - last < CLIENT_ERROR_EVERY_S:
        _client_errors[code] = (last, repeats + 1)
        return False
    _client_errors[code] = (now, 0)
    if repeats:
        log.warning("kafka: %s (and %d more like it in the last %.0f s)", err, repeats, now - last)
    else:
        log.warning("kafka: %s", err)
    return True


def fixed_codec(settings: KafkaSettings) -> str:
    """The codec of producers that do not adapt to the link: the configured one, lz4 for ``auto`` (only the redo
    producer adapts, :mod:`common.link`; the others send little)."""
    return "lz4" if settings.compression == "auto" else settings.compression


def make_producer(settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: object) -> Producer:
    """An idempotent producer (acks=all); transactional when ``transactional_id`` is given."""
    conf = client_config(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": fixed_codec(settings),
            "linger.ms": 5,
            "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES,
            "error_cb": _log_client_error,
        },
    )
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = 300_000
    conf.update(overrides)
    return Producer(conf)


def make_consumer(settings: KafkaSettings, *, group_id: str, **overrides: object) -> Consumer:
    """A read_committed consumer with auto-commit off; positions are Ark's to keep."""
    conf = client_config(
        settings,
        **{
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.max.messages.kbytes": 65536,
            "error_cb": _log_client_error,
        },
    )
    conf.update(overrides)
    return Consumer(conf)


def make_admin(settings: KafkaSettings) -> AdminClient:
    """An admin client for topic management."""
    return AdminClient(client_config(settings, error_cb=_log_client_error))


def unavailable(settings: KafkaSettings, exc: BaseException | str) -> KafkaUnavailable:
    """Translate a client failure into KafkaUnavailable naming the bootstrap and the fix."""
    return KafkaUnavailable(
        f"Kafka at {settings.bootstrap} is unreachable or refused the request: {exc}",
        fix="check kafka.bootstrap in the config and that the broker runs ('ark broker status')",
    )


def check_reachable(settings: KafkaSettings, timeout: float = 10.0) -> list[str]:
    """List topics to prove the cluster answers; raise KafkaUnavailable otherwise."""
    admin = make_admin(settings)
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0] if exc.args else exc) from None
    return sorted(meta.topics)


def topic_exists(settings: KafkaSettings, name: str, timeout: float = 10.0) -> bool:
    """True when the cluster has topic ``name`` (KafkaUnavailable when the cluster does not answer)."""
    try:
        meta = make_admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0] if exc.args else exc) from None
    return name in meta.topics


def ensure_topic(
    settings: KafkaSettings,
    name: str,
    *,
    retention_ms: int | None = None,
    partitions: int = 1,
    extra: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> bool:
    """Create ``name`` if missing (True when created). Retention -1 means keep forever."""
    admin = make_admin(settings)
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0] if exc.args else exc) from None
    if name in meta.topics:
        return False
    config = {"min.insync.replicas": "1", "message.timestamp.type": "CreateTime",
              "max.message.bytes": str(PRODUCER_MAX_MESSAGE_BYTES)}
    if retention_ms is not None:
        config["retention.ms"] = str(retention_ms)
    config.update(extra or {})
    topic = NewTopic(name, num_partitions=partitions, replication_factor=settings.replication_factor, config=config)
    future = admin.create_topics([topic], operation_timeout=timeout)[name]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0]
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise unavailable(settings, err) from None
    log.info("created topic %s (retention.ms=%s)", name, retention_ms)
    _wait_for_leaders(admin, name, partitions, timeout)
    return True


def _wait_for_leaders(admin: AdminClient, name: str, partitions: int, timeout: float) -> None:
    """Block until every partition of a new topic has a leader (metadata propagates asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
        except KafkaException:
            topic = None
        if topic is not None and topic.error is None and len(topic.partitions) == partitions \
                and all(p.leader >= 0 for p in topic.partitions.values()):
            return
        time.sleep(0.1)
    raise KafkaUnavailable(f"topic {name} was created but has no leader after {timeout:g} s", fix="check the broker")


def retention_hours(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> float | None:
    """The topic's retention.ms in hours (None = infinite or unknown)."""
    admin = make_admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout=timeout)
    except KafkaException:
        return None
    entry = configs.get("retention.ms")
    if entry is None or entry.value is None or int(entry.value) < 0:
        return None
    return int(entry.value) / _HOUR_MS


def topic_config(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> dict[str, str]:
    """The topic's effective configuration (``retention.ms``, ``cleanup.policy``, ...) as strings.

    Raises KafkaUnavailable when the cluster does not answer or the topic does not exist.
    """
    admin = make_admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout=timeout)
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0] if exc.args else exc) from None
    return {name: entry.value for name, entry in configs.items() if entry.value is not None}


def broker_config(settings: KafkaSettings, timeout: float = 10.0) -> dict[str, str]:
    """One broker's effective configuration (``message.max.bytes``, ...) as strings (KafkaUnavailable when
    no broker answers)."""
    admin = make_admin(settings)
    try:
        brokers = admin.list_topics(timeout=timeout).brokers
        if not brokers:
            raise unavailable(settings, "no broker in the cluster metadata")
        resource = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
        configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout=timeout)
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0] if exc.args else exc) from None
    return {name: entry.value for name, entry in configs.items() if entry.value is not None}


def delete_records_below(settings: KafkaSettings, topic: str, offset: int, partition: int = 0,
                         timeout: float = 30.0) -> int:
    """Delete every record of ``topic[partition]`` below ``offset``; returns the new low watermark.

    The broker only moves the log start offset forward (DeleteRecords); it never deletes at or
    above ``offset``. Callers decide ``offset`` (see ops/purge.py: never at or above what a standby needs).
    """
    admin = make_admin(settings)
    tp = TopicPartition(topic, partition, offset)
    try:
        future = admin.delete_records([tp], request_timeout=timeout, operation_timeout=timeout)
        result = next(iter(future.values())).result(timeout=timeout)
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0] if exc.args else exc) from None
    return int(result.low_watermark)


def watermarks(consumer: Consumer, topic: str, partition: int = 0, timeout: float = 10.0) -> tuple[int, int]:
    """(low, high) offsets; for read_committed consumers ``high`` is the last stable offset."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            # A just-created topic's metadata and leadership are still propagating: retry those.
            settling = isinstance(err, KafkaError) and err.code() in (
                KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
            if not settling or time.monotonic() >= deadline:
                raise KafkaUnavailable(f"cannot read offsets of {topic}: {exc}", fix="check the broker") from None
            time.sleep(0.2)


def read_range(
    consumer: Consumer, topic: str, start: int, stop: int, *, partition: int = 0, timeout: float = 30.0
) -> Iterator[Message]:
    """Yield committed messages with ``start <= offset < stop`` (assigns the consumer)."""
    if start >= stop:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.code() == KafkaError._AUTO_OFFSET_RESET:  # a consumer with auto.offset.reset=error
                raise KafkaUnavailable(f"reading {topic} from offset {start}: {error} (deleted by retention?)",
                                       fix="the range is no longer retained; see 'ark check' (retention)")
            raise KafkaUnavailable(f"reading {topic}: {error}", fix="check the broker")
        offset = msg.offset()
        if offset is None or offset >= stop:
            return
        yield msg
        if offset + 1 >= stop:
            return
        deadline = time.monotonic() + timeout
    raise KafkaUnavailable(f"timed out reading {topic} [{start}, {stop})", fix="check the broker")


def last_messages(
    settings: KafkaSettings, topic: str, *, count: int = 1, partition: int = 0, timeout: float = 30.0,
    accept: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """The last ``count`` committed messages of a partition (oldest first), scanning back as needed.

    Transaction markers take offsets, so the search widens its window until it finds enough
    messages (``accept`` filters which ones count) or reaches the start of the log.
    """
    consumer = make_consumer(settings, group_id="ark-inspect", **{"enable.partition.eof": True})
    try:
        low, high = watermarks(consumer, topic, partition, timeout)
        window = max(count * 4, 16)
        while True:
            start = max(low, high - window)
            found = [m for m in read_range(consumer, topic, start, high, partition=partition, timeout=timeout)
                     if accept is None or accept(m)]
            if len(found) >= count or start <= low:
                return found[-count:] if count else []
            window *= 8
    finally:
        consumer.close()


def end_offset(settings: KafkaSettings, topic: str, partition: int = 0, timeout: float = 10.0) -> int:
    """The read_committed end of a partition (the offset the next committed message will get or pass)."""
    consumer = make_consumer(settings, group_id="ark-inspect")
    try:
        return watermarks(consumer, topic, partition, timeout)[1]
    finally:
        consumer.close()


def offset_for_time(settings: KafkaSettings, topic: str, ts_ms: int, partition: int = 0, timeout: float = 10.0) -> int:
    """The first offset whose timestamp is at or after ``ts_ms`` (the end offset if none)."""
    consumer = make_consumer(settings, group_id="ark-inspect")
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, partition, ts_ms)], timeout=timeout)
        offset = found[0].offset
        if offset is None or offset < 0:
            return watermarks(consumer, topic, partition, timeout)[1]
        return int(offset)
    finally:
        consumer.close()


__all__ = [
    "OFFSET_END",
    "check_reachable",
    "client_config",
    "delete_records_below",
    "end_offset",
    "ensure_topic",
    "last_messages",
    "make_admin",
    "make_consumer",
    "make_producer",
    "offset_for_time",
    "read_range",
    "retention_hours",
    "topic_config",
    "unavailable",
    "watermarks",
]
