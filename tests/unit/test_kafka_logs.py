"""librdkafka's log lines through Python logging: one line of a kind per 10 s, with the count of the repeats."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, TopicPartition

from common.kafka import client_config
from common.kafka_logs import LIBRDKAFKA, RepeatFilter
from common.settings import KafkaSettings

FAIL = ("FAIL", "ark#consumer-1", "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused")


def _record(args: tuple[object, ...] = FAIL, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("ark.librdkafka", level, __file__, 1, "%s [%s] %s", args, None)


def test_repeats_within_the_window_are_dropped_and_counted_on_the_next_line_through() -> None:
    now = [100.0]
    keep = RepeatFilter(every_s=10.0, clock=lambda: now[0])
    seen = []
    for t in (100.0, 100.05, 100.1, 105.0, 110.5, 111.0):
        now[0] = t
        record = _record()
        if keep.filter(record):
            seen.append(record.getMessage())
    assert len(seen) == 2
    assert seen[0].endswith("Connection refused")
    assert seen[1].endswith("(and 3 more like it in the last 10 s)")


def test_kinds_are_kept_apart_by_level_facility_and_client() -> None:
    keep = RepeatFilter(every_s=10.0, clock=lambda: 0.0)
    other_client = ("FAIL", "ark#producer-2", FAIL[2])
    other_facility = ("REQTMOUT", "ark#consumer-1", "timed out")
    assert keep.filter(_record())
    assert keep.filter(_record(other_client))
    assert keep.filter(_record(other_facility))
    assert keep.filter(_record(level=logging.WARNING))
    assert not keep.filter(_record())


def test_a_client_with_its_broker_down_logs_once_not_twenty_times_a_second(caplog) -> None:  # type: ignore[no-untyped-def]
    # The real librdkafka against a closed port: it reports each refused connection (about every 50 ms).
    consumer = Consumer(client_config(KafkaSettings(bootstrap="127.0.0.1:1"), **{"group.id": "t"}))
    consumer.assign([TopicPartition("t", 0, 0)])
    def refused() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == LIBRDKAFKA.name and "Connection refused" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger=LIBRDKAFKA.name):
        deadline = time.monotonic() + 8.0
        while not refused() and time.monotonic() < deadline:
            consumer.poll(0.1)
        assert refused(), "librdkafka reported no refused connection in 8 s"
        until = time.monotonic() + 1.5  # some 30 more refusals, all within the window of the first
        while time.monotonic() < until:
            consumer.poll(0.1)
    consumer.close()
    assert len(refused()) == 1, refused()
