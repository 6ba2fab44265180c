"""The envelope codec: Avro payload, CRC-32C over the payload, and the headers every entry carries.

Headers (all values ASCII):

========== ================================================================
ark-crc    CRC-32C of the payload bytes, 8 lowercase hex digits
ark-schema fingerprint (CRC-64-AVRO, hex) of the writer schema
ark-epoch  epoch of the primary that wrote the entry
ark-pos    source position (LSN, SCN, binlog file:pos), may be empty
ark-ts     source commit time, microseconds since the Unix epoch
========== ================================================================

Republished entries (guarantee 4, CRC retransmission) also carry ``ark-retransmit-from``: the hex
of the exclusive start key of the re-read (every commit above it follows, gap-free, from there on).

Control records and heartbeats are authenticated: ``ark-sig`` is the HMAC-SHA256, under the group's
control key, of the schema fingerprint and the payload (:func:`sign`, :func:`check_signature`). The CRC
catches damage; the signature catches records that the group's own agents did not write.

The Kafka message timestamp is the commit time in milliseconds, so ``offsets_for_times`` finds a
point in time. Kafka's own batch CRC covers broker storage only; this CRC covers the whole path from
the producer's memory to the applier (ARCHITECTURE.md, "Why our own CRC").
"""

from __future__ import annotations

import hashlib
import hmac
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import crc32c as _crc32c
from fastavro import schemaless_reader, schemaless_writer

from schemas import registry
from schemas.errors import CorruptEntry, InvalidChecksum, NotAuthentic, UnencodableRecord, UnknownSchema

H_CRC = "ark-crc"
H_SCHEMA = "ark-schema"
H_EPOCH = "ark-epoch"
H_POSITION = "ark-pos"
H_COMMIT_TS = "ark-ts"
#: On republished entries: hex of the key after which the capture re-read the source (exclusive).
H_RETRANSMIT_FROM = "ark-retransmit-from"

#: HMAC-SHA256 (hex) of the fingerprint and the payload, under the group's control key.
H_SIGNATURE = "ark-sig"

#: Kafka message headers as clients return them: a list of pairs, a dict, or None.
Headers = Sequence[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None


@dataclass(frozen=True)
class Envelope:
    """A ready-to-produce Kafka message: value, headers and timestamp."""

    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    timestamp_ms: int


@dataclass(frozen=True)
class Decoded:
    """A verified, decoded entry and its provenance."""

    schema: str
    record: dict[str, Any]
    epoch: int
    source_position: str
    commit_time_us: int


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    return int(_crc32c.crc32c(data))


def encode(
    schema_name: str,
    record: dict[str, Any],
    *,
    epoch: int = 0,
    source_position: str = "",
    commit_time_us: int | None = None,
) -> Envelope:
    """Serialize ``record`` with the current version of ``schema_name`` and wrap it in an envelope."""
    schema = registry.current(schema_name)
    buf = io.BytesIO()
    try:
        schemaless_writer(buf, schema.parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # fastavro's message quotes the whole datum: row values must not reach a log.
        text = str(exc)
        field = text.rsplit(" on field ", 1)[1][:80] if " on field " in text else "?"
        raise UnencodableRecord(f"a {schema_name} record does not fit schema version {schema.version} "
                                f"(field {field}; {type(exc).__name__}): a bug in Ark, please report it") from None
    return wrap(schema, buf.getvalue(), epoch=epoch, source_position=source_position, commit_time_us=commit_time_us)


def wrap(
    schema: registry.SchemaVersion,
    payload: bytes,
    *,
    epoch: int = 0,
    source_position: str = "",
    commit_time_us: int | None = None,
) -> Envelope:
    """The envelope of an Avro ``payload`` already written with ``schema`` (CRC, headers, timestamp)."""
    ts_us = commit_time_us if commit_time_us is not None else time.time_ns() // 1000
    headers: list[tuple[str, str | bytes | None]] = [
        (H_CRC, f"{crc32c(payload):08x}".encode()),
        (H_SCHEMA, schema.fingerprint.encode()),
        (H_EPOCH, str(epoch).encode()),
        (H_POSITION, source_position.encode()),
        (H_COMMIT_TS, str(ts_us).encode()),
    ]
    return Envelope(value=payload, headers=headers, timestamp_ms=ts_us // 1000)


def header_map(headers: Headers) -> dict[str, str]:
    """Kafka headers as a str → str dict (the last value of a repeated key wins)."""
    out: dict[str, str] = {}
    pairs: Iterable[tuple[str, bytes | str | None]] = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in pairs:
        if value is None:
            out[key] = ""
        elif isinstance(value, bytes):
            out[key] = value.decode("ascii", errors="replace")
        else:
            out[key] = value
    return out


def _where(topic: str | None, partition: int | None, offset: int | None, hmap: dict[str, str]) -> dict[str, Any]:
    return {
        "topic": topic or "?",
        "partition": -1 if partition is None else partition,
        "offset": -1 if offset is None else offset,
        "source_position": hmap.get(H_POSITION, ""),
    }


def verify(
    value: bytes | None,
    headers: Headers,
    *,
    topic: str | None = "?",
    partition: int | None = -1,
    offset: int | None = -1,
) -> dict[str, str]:
    """Check the CRC-32C of ``value`` against its header; return the headers as a dict.

    Raises :class:`InvalidChecksum` or :class:`CorruptEntry` naming topic, partition and offset.
    """
    hmap = header_map(headers)
    where = _where(topic, partition, offset, hmap)
    if value is None:
        raise CorruptEntry("message has no value", **where)
    if H_CRC not in hmap or H_SCHEMA not in hmap:
        raise CorruptEntry("missing ark-crc or ark-schema header (not an Ark entry?)", **where)
    try:
        expected = int(hmap[H_CRC], 16)
    except ValueError:
        raise CorruptEntry(f"unreadable ark-crc header {hmap[H_CRC]!r}", **where) from None
    actual = crc32c(value)
    if actual != expected:
        raise InvalidChecksum(f"CRC-32C is {actual:08x}, header says {expected:08x}", **where)
    return hmap


def decode(
    value: bytes | None,
    headers: Headers,
    *,
    topic: str | None = "?",
    partition: int | None = -1,
    offset: int | None = -1,
    expect: str | None = None,
) -> Decoded:
    """Verify and decode one entry; the reader schema is this build's current version of its name."""
    writer, hmap, where = check(value, headers, topic=topic, partition=partition, offset=offset, expect=expect)
    assert value is not None  # check() raised otherwise
    reader = registry.current(writer.name)
    try:
        record = schemaless_reader(io.BytesIO(value), writer.parsed, reader.parsed)
    except Exception as exc:  # noqa: BLE001 - any Avro failure means the bytes are bad
        raise CorruptEntry(f"undecodable Avro payload: {exc}", **where) from None
    epoch, commit_ts = provenance(hmap, where)
    return Decoded(
        schema=writer.name,
        record=dict(record),  # type: ignore[arg-type]
        epoch=epoch,
        source_position=hmap.get(H_POSITION, ""),
        commit_time_us=commit_ts,
    )


def check(
    value: bytes | None,
    headers: Headers,
    *,
    topic: str | None = "?",
    partition: int | None = -1,
    offset: int | None = -1,
    expect: str | None = None,
) -> tuple[registry.SchemaVersion, dict[str, str], dict[str, Any]]:
    """Verify the CRC and find the writer schema: (writer, headers as a dict, where for errors)."""
    hmap = verify(value, headers, topic=topic, partition=partition, offset=offset)
    where = _where(topic, partition, offset, hmap)
    try:
        writer = registry.by_fingerprint(hmap[H_SCHEMA])
    except UnknownSchema as exc:
        raise CorruptEntry(str(exc), **where) from None
    if expect is not None and writer.name != expect:
        raise CorruptEntry(f"expected a {expect} entry, found {writer.name}", **where)
    return writer, hmap, where


def provenance(hmap: dict[str, str], where: dict[str, Any]) -> tuple[int, int]:
    """The epoch and commit time headers."""
    try:
        return int(hmap.get(H_EPOCH, "0") or 0), int(hmap.get(H_COMMIT_TS, "0") or 0)
    except ValueError:
        raise CorruptEntry("unreadable ark-epoch or ark-ts header", **where) from None


def _mac(key: bytes, fingerprint: str, payload: bytes) -> str:
    return hmac.new(key, b"ark-sig-1\0" + fingerprint.encode() + b"\0" + payload, hashlib.sha256).hexdigest()


def sign(env: Envelope, key: bytes) -> Envelope:
    """``env`` with an ``ark-sig`` header: the HMAC-SHA256 under ``key`` of its schema fingerprint and payload."""
    fingerprint = header_map(env.headers)[H_SCHEMA]
    return Envelope(env.value, [*env.headers, (H_SIGNATURE, _mac(key, fingerprint, env.value).encode())],
                    env.timestamp_ms)


def check_signature(value: bytes | None, headers: Headers, key: bytes) -> None:
    """Raise :class:`NotAuthentic` unless the record carries a valid ``ark-sig`` under ``key``."""
    hmap = header_map(headers)
    given = hmap.get(H_SIGNATURE)
    if not given:
        raise NotAuthentic("unsigned", "record carries no ark-sig signature")
    if value is None or not hmac.compare_digest(given, _mac(key, hmap.get(H_SCHEMA, ""), value)):
        raise NotAuthentic("bad-signature", "record's ark-sig does not match the group's control key")
