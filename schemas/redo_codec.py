"""Redo entries to and from Kafka messages: the compiled codec when it is active, fastavro otherwise.

The capture's publisher and the applier call these instead of ``envelope.encode(to_record(...))`` and
``from_record(envelope.decode(...).record)``. For a Transaction entry of the current schema version the compiled
codec (schemas/hot) writes the same bytes from the TxnChunk directly, and reads them straight into one; every
other entry (table shapes, schema changes, epoch markers, sequences, entries written by an older schema version)
takes the general fastavro path. The CRC, the headers and the wire format are the same on both paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import envelope, hot, registry
from schemas.entries import REDO_SCHEMA, RedoEntry, from_record, to_record
from schemas.errors import CorruptEntry


@dataclass(frozen=True, slots=True)
class DecodedEntry:
    """A verified, decoded redo entry and its envelope's provenance."""

    entry: RedoEntry
    epoch: int
    source_position: str
    commit_time_us: int


def encode_entry(entry: RedoEntry, *, source_position: str = "", commit_time_us: int | None = None,
                 ) -> envelope.Envelope:
    """The envelope of ``entry`` (the current redo schema version)."""
    payload = hot.encode(entry)
    if payload is None:
        return envelope.encode(REDO_SCHEMA, to_record(entry), epoch=entry.epoch, source_position=source_position,
                               commit_time_us=commit_time_us)
    return envelope.wrap(registry.current(REDO_SCHEMA), payload, epoch=entry.epoch, source_position=source_position,
                         commit_time_us=commit_time_us)


def decode_entry(value: bytes | None, headers: envelope.Headers, *, topic: str | None = "?",
                 partition: int | None = -1, offset: int | None = -1) -> DecodedEntry:
    """Verify (CRC, schema) and decode one redo entry; raises CorruptEntry naming topic, partition and offset."""
    if hot.ACTIVE:
        writer, hmap, where = envelope.check(value, headers, topic=topic, partition=partition, offset=offset,
                                             expect=REDO_SCHEMA)
        assert value is not None  # check() raised otherwise
        if writer.fingerprint == hot.SCHEMA_FINGERPRINT:
            try:
                entry = hot.decode(value)
            except (ValueError, TypeError) as exc:
                raise CorruptEntry(f"undecodable Avro payload: {exc}", **where) from None
            if entry is not None:
                epoch, commit_ts = envelope.provenance(hmap, where)
                return DecodedEntry(entry, epoch, hmap.get(envelope.H_POSITION, ""), commit_ts)
    dec = envelope.decode(value, headers, topic=topic, partition=partition, offset=offset, expect=REDO_SCHEMA)
    return DecodedEntry(from_record(dec.record), dec.epoch, dec.source_position, dec.commit_time_us)
