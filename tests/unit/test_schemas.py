"""The wire contract: envelope CRC, typed errors that say where, schema evolution, entries round trip."""

from __future__ import annotations

import io
import json

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas import envelope, registry
from schemas.compat import check_pair, readable
from schemas.entries import (
    REDO_SCHEMA,
    UNCHANGED,
    Column,
    EpochMarker,
    Op,
    Position,
    RedoEntry,
    RowChange,
    TableMeta,
    TxnChunk,
    from_record,
    to_record,
)
from schemas.errors import CorruptEntry, IncompatibleSchema, InvalidChecksum
from schemas.positions import binlog_position, mssql_lsn, oracle_scn, pg_lsn


def _txn() -> RedoEntry:
    changes = [
        RowChange("public.t", Op.INSERT, [1, "a", 1.5, None, b"\x00\xff", True, "12345.6789"]),
        RowChange("public.t", Op.UPDATE, [1, UNCHANGED, 2.5, "UNCHANGED", b"", False, "0"], old_key=[7]),
        RowChange("public.t", Op.DELETE, [], old_key=[1]),
        RowChange("public.t", Op.TRUNCATE, []),
    ]
    return RedoEntry("g", "postgresql", 3, TxnChunk("42", pg_lsn("0/16B3748"), 1_700_000_000_000_000, 0, True,
                                                    changes, first_row=0, confirm="0/16B3780"))


@pytest.mark.parametrize("entry", [
    _txn(),
    RedoEntry("g", "postgresql", 1, TableMeta("public.t", (Column("id", "int64", "bigint", False, 1),
                                                            Column("v", "string", "text")), "v1", "0/1")),
    RedoEntry("g", "oracle", 2, EpochMarker(2, "node2", "scn:99")),
])
def test_entries_round_trip(entry: RedoEntry) -> None:
    env = envelope.encode(REDO_SCHEMA, to_record(entry), epoch=entry.epoch, source_position="p")
    assert from_record(envelope.decode(env.value, env.headers).record) == entry


def test_unchanged_marker_is_not_the_string() -> None:
    env = envelope.encode(REDO_SCHEMA, to_record(_txn()))
    body = from_record(envelope.decode(env.value, env.headers).record).body
    assert isinstance(body, TxnChunk)
    assert body.changes[1].values[1] is UNCHANGED
    assert body.changes[1].values[3] == "UNCHANGED"


def test_headers_and_timestamp() -> None:
    env = envelope.encode(REDO_SCHEMA, to_record(_txn()), epoch=3, source_position="0/16B3748",
                          commit_time_us=1_700_000_000_123_456)
    h = envelope.header_map(env.headers)
    assert h["ark-epoch"] == "3" and h["ark-pos"] == "0/16B3748" and h["ark-ts"] == "1700000000123456"
    assert int(h["ark-crc"], 16) == envelope.crc32c(env.value)
    assert h["ark-schema"] == registry.current(REDO_SCHEMA).fingerprint
    assert env.timestamp_ms == 1_700_000_000_123


@pytest.mark.parametrize("damage", [0, 1, 17, -1])
def test_any_flipped_byte_is_detected_and_located(damage: int) -> None:
    env = envelope.encode(REDO_SCHEMA, to_record(_txn()), source_position="0/16B3748")
    bad = bytearray(env.value)
    bad[damage] ^= 0x01
    with pytest.raises(InvalidChecksum) as err:
        envelope.decode(bytes(bad), env.headers, topic="ark.g.redo", partition=0, offset=1234)
    assert (err.value.topic, err.value.partition, err.value.offset) == ("ark.g.redo", 0, 1234)
    assert "ark.g.redo[0]@1234" in str(err.value) and "0/16B3748" in str(err.value)


@pytest.mark.parametrize("headers, reason", [
    ([], "missing ark-crc"),
    ([("ark-crc", b"zz"), ("ark-schema", b"1")], "unreadable ark-crc"),
])
def test_bad_headers(headers: list[tuple[str, bytes]], reason: str) -> None:
    with pytest.raises(CorruptEntry, match=reason):
        envelope.decode(b"x", headers, topic="t", partition=0, offset=5)


def test_unknown_fingerprint_and_none_value() -> None:
    env = envelope.encode(REDO_SCHEMA, to_record(_txn()))
    headers = [(k, b"0000000000000000" if k == "ark-schema" else v) for k, v in env.headers]
    with pytest.raises(CorruptEntry, match="not one this build knows"):
        envelope.decode(env.value, headers, topic="t", partition=0, offset=9)
    with pytest.raises(CorruptEntry, match="no value"):
        envelope.decode(None, env.headers)


def test_wrong_schema_kind_is_rejected() -> None:
    env = envelope.encode("control", {"group": "g", "kind": "pause", "issued_by": "me", "issued_at_us": 1,
                                      "request_id": "r"})
    with pytest.raises(CorruptEntry, match="expected a redo_entry"):
        envelope.decode(env.value, env.headers, expect=REDO_SCHEMA)


def test_committed_versions_are_pairwise_compatible() -> None:
    names = {s.name for s in registry.all_versions()}
    assert {"redo_entry", "heartbeat", "control"} <= names
    for name in names:
        versions = [s for s in registry.all_versions() if s.name == name]
        for old, new in zip(versions, versions[1:], strict=False):
            check_pair(old.raw, new.raw, name)


_BASE = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}


@pytest.mark.parametrize("new, compatible", [
    ({**_BASE, "fields": [*_BASE["fields"], {"name": "b", "type": "string", "default": ""}]}, True),
    ({**_BASE, "fields": [*_BASE["fields"], {"name": "b", "type": "string"}]}, False),
    ({**_BASE, "fields": [{"name": "a", "type": "string"}]}, False),
    ({**_BASE, "fields": [{"name": "a", "type": ["null", "long"], "default": None}]}, False),
    ({**_BASE, "name": "S"}, False),
])
def test_compatibility_rules(new: dict, compatible: bool) -> None:
    if compatible:
        check_pair(_BASE, new, "R")
    else:
        with pytest.raises(IncompatibleSchema):
            check_pair(_BASE, new, "R")


def test_added_field_with_default_really_resolves() -> None:
    new = {**_BASE, "fields": [*_BASE["fields"], {"name": "b", "type": "string", "default": "x"}]}
    assert not readable(_BASE, new)
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(_BASE), {"a": 5})
    reader = parse_schema(json.loads(json.dumps(new)))
    assert schemaless_reader(io.BytesIO(buf.getvalue()), parse_schema(_BASE), reader) == {"a": 5, "b": "x"}


def test_position_keys_order_like_the_source() -> None:
    assert pg_lsn("0/FFFFFFFF").key < pg_lsn("1/0").key
    assert pg_lsn(pg_lsn("16/B374D848").key and int.from_bytes(pg_lsn("16/B374D848").key, "big")).text == "16/B374D848"
    assert oracle_scn(9).key < oracle_scn(10).key
    assert binlog_position("mysql-bin.000009", 999999).key < binlog_position("mysql-bin.000010", 4).key
    assert mssql_lsn(bytes.fromhex("0000002a000001f40003")).key < mssql_lsn(bytes.fromhex("0000002a000001f40004")).key
    with pytest.raises(ValueError):
        pg_lsn("nope")
    assert Position("a", b"\x01") < Position("b", b"\x02")
