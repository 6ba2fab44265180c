"""Damage a redo entry where the broker keeps it: one byte flipped in the partition's segment file.

The broker serves the damaged bytes as they are (it does not check batch CRCs on fetch, nor does
librdkafka by default), so the applier's CRC-32C check is what catches it. The group must use
``compression: none`` so that payloads appear as such in the segment.
"""

from __future__ import annotations

from pathlib import Path

from common.config import KafkaSettings
from common.kafka import make_consumer, read_range
from schemas.topics import redo_topic

#: Victims are taken near the end of the log and any copy (a retransmission) comes after them, so the
#: last 64 MiB of each segment hold every occurrence; scanning whole segments grows too slow.
TAIL_BYTES = 64 << 20


def segment_tails(data_dir: Path, topic: str) -> list[tuple[Path, int, bytes]]:
    """(segment, file position of the tail, the tail's bytes) of each segment of partition 0."""
    out = []
    for segment in sorted((data_dir / f"{topic}-0").glob("*.log")):
        size = segment.stat().st_size
        base = max(0, size - TAIL_BYTES)
        with segment.open("rb") as f:
            f.seek(base)
            out.append((segment, base, f.read()))
    return out


def occurrences(data_dir: Path, topic: str, value: bytes) -> int:
    """How many times ``value`` occurs in the segments' tails."""
    return sum(data.count(value) for _path, _base, data in segment_tails(data_dir, topic))


def corrupt_on_disk(data_dir: Path, topic: str, value: bytes) -> bytes | None:
    """Flip one byte in the middle of ``value`` where it sits in the segment files; returns the damaged
    value, or None when the bytes are not there exactly once (a running retransmission just wrote a copy)."""
    hits = []
    for segment, base, data in segment_tails(data_dir, topic):
        at = data.find(value)
        while at >= 0:
            hits.append((segment, base + at))
            at = data.find(value, at + 1)
    assert hits, "the entry's bytes are not in the segments as they are (compressed?)"
    if len(hits) != 1:
        return None
    segment, at = hits[0]
    middle = at + len(value) // 2
    with segment.open("r+b") as f:
        f.seek(middle)
        old = f.read(1)[0]
        f.seek(middle)
        f.write(bytes([old ^ 0x5A]))
    return value[: len(value) // 2] + bytes([old ^ 0x5A]) + value[len(value) // 2 + 1:]


def served(kafka: str, group: str, offset: int) -> tuple[bytes, list]:
    """The value and headers the broker serves at ``offset`` of the group's redo topic."""
    consumer = make_consumer(KafkaSettings(bootstrap=kafka), group_id="segments-test")
    try:
        msg = next(iter(read_range(consumer, redo_topic(group), offset, offset + 1)))
        return msg.value(), msg.headers()
    finally:
        consumer.close()
