"""Values of any size: how big a row is on the wire, and how a value too large for one message is cut.

Kafka refuses messages above a limit (the topic's ``max.message.bytes``, 1 MB by default on a broker);
PostgreSQL allows one value of up to 1 GB. So a chunk of a transaction is bounded by bytes as well as
rows, and a value larger than half a message travels as :class:`~schemas.entries.ValuePart` chunks of
its transaction, ahead of the chunk that holds its row; the row carries a :class:`~schemas.entries.PartRef`
in its place. Each part is one Kafka message with its own CRC, so retransmission, quarantine, the delay
and exactly-once work on parts as on any chunk. The standby puts the value together again in its own
storage (consumers: ``Applier.store_part``), so neither side ever holds more than one part of it in
Python besides the value the source handed over.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import crc32c

from schemas.entries import UNCHANGED, PartRef, RowChange, Value, ValuePart

#: Fixed cost of a value in an encoded entry (union branch, length), and of a row (table name, op...).
_VALUE_OVERHEAD = 8
_ROW_OVERHEAD = 64


def value_bytes(value: Value) -> int:
    """About how many bytes ``value`` takes in an encoded entry (text counted as UTF-8 at most)."""
    if isinstance(value, bytes):
        return len(value) + _VALUE_OVERHEAD
    if isinstance(value, str):
        n = len(value)
        # ASCII is one byte per character; anything else is measured exactly (at most 4 per character).
        return (n if value.isascii() else len(value.encode("utf-8"))) + _VALUE_OVERHEAD
    return _VALUE_OVERHEAD


def row_bytes(change: RowChange) -> int:
    """About how many bytes ``change`` takes in an encoded entry."""
    total = _ROW_OVERHEAD + len(change.table) + sum(value_bytes(v) for v in change.values)
    if change.old_key:
        total += sum(value_bytes(v) for v in change.old_key)
    return total


def _payload(value: Value) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return None


def split(change: RowChange, row: int, part_bytes: int) -> tuple[RowChange, list[tuple[int, bytes]]]:
    """The row with its largest values taken out until it fits ``part_bytes``, and those values
    ``(column, bytes)``, in column order. A row that already fits comes back as it is."""
    if row_bytes(change) <= part_bytes:
        return change, []
    sizes = sorted(((value_bytes(v), i) for i, v in enumerate(change.values)
                    if v is not None and v is not UNCHANGED and isinstance(v, bytes | str)), reverse=True)
    values = list(change.values)
    taken: list[tuple[int, bytes]] = []
    remaining = row_bytes(change)
    for size, column in sizes:
        if remaining <= part_bytes:
            break
        data = _payload(values[column])
        assert data is not None
        taken.append((column, data))
        values[column] = None
        remaining -= size - _VALUE_OVERHEAD
    taken.sort()
    refs = [PartRef(row=row, column=c, count=max(1, -(-len(d) // part_bytes)), total_bytes=len(d),
                    crc=int(crc32c.crc32c(d))) for c, d in taken]
    return replace(change, values=values, parts=[*(change.parts or []), *refs]), taken


def parts_of(table: str, row: int, column: int, data: bytes, part_bytes: int) -> Iterator[ValuePart]:
    """The parts of one value, one at a time (each copies only its own slice)."""
    count = max(1, -(-len(data) // part_bytes))
    view = memoryview(data)
    for index in range(count):
        yield ValuePart(table=table, row=row, column=column, index=index, count=count, total_bytes=len(data),
                        data=bytes(view[index * part_bytes:(index + 1) * part_bytes]))
