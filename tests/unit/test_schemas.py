"""The wire contract: envelope CRC, typed errors that say where, schema evolution, entries round trip."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas import envelope, positions, registry
from schemas.compat import check_pair, readable
from schemas.entries import (
    REDO_SCHEMA,
    UNCHANGED,
    Column,
    EpochMarker,
    Op,
    PartRef,
    Position,
    RedoEntry,
    RowChange,
    TableMeta,
    TxnChunk,
    ValuePart,
    from_record,
    to_record,
)
from schemas.errors import CorruptEntry, IncompatibleSchema, InvalidChecksum, UnencodableRecord
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
    RedoEntry("g", "postgresql", 3, TxnChunk("42", pg_lsn("0/16B3748"), 1, 0, False, [], first_row=5,
                                             part=ValuePart("public.t", 5, 1, 0, 2, 9, b"abcde"))),
    RedoEntry("g", "postgresql", 3, TxnChunk("42", pg_lsn("0/16B3748"), 1, 1, True, [
        RowChange("public.t", Op.INSERT, [1, None], parts=[PartRef(5, 1, 2, 9, 1234)])], first_row=5)),
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


def _meta_entry(**column: object) -> RedoEntry:
    cols = (Column("id", "int64", "bigint", False, 1, column_id=1),
            Column("b", "int32", "integer", True, 0, **column))  # type: ignore[arg-type]
    return RedoEntry("g", "postgresql", 1, TableMeta("public.t", cols, "v2", "0/1"))


def _versions() -> tuple[registry.SchemaVersion, registry.SchemaVersion]:
    versions = [s for s in registry.all_versions() if s.name == REDO_SCHEMA]
    assert [v.version for v in versions][:2] == [1, 2] and registry.current(REDO_SCHEMA).version >= 2
    return versions[0], versions[1]


@pytest.mark.parametrize("column", [
    {"default_expr": "5", "missing_value": "5", "column_id": 3},
    {"default_expr": "random()", "missing_value": None, "column_id": 7},
    {"default_expr": None, "missing_value": 'he said "x", \'y\'', "column_id": 0},
])
def test_column_defaults_round_trip(column: dict) -> None:
    entry = _meta_entry(**column)
    env = envelope.encode(REDO_SCHEMA, to_record(entry))
    assert from_record(envelope.decode(env.value, env.headers).record) == entry


def test_v1_entries_still_decode_with_unknown_defaults() -> None:
    """An entry in retention written by the previous build (v1) decodes, its new fields unknown."""
    v1, _ = _versions()
    record = to_record(_meta_entry(default_expr="5", missing_value="5", column_id=3))
    for col in record["body"][1]["columns"]:
        for key in ("default_expr", "missing_value", "column_id"):
            col.pop(key)
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, record)
    headers = [("ark-crc", f"{envelope.crc32c(buf.getvalue()):08x}".encode()), ("ark-schema", v1.fingerprint.encode())]
    decoded = envelope.decode(buf.getvalue(), headers, expect=REDO_SCHEMA)
    assert decoded.schema == REDO_SCHEMA
    body = from_record(decoded.record).body
    assert isinstance(body, TableMeta)
    assert [(c.default_expr, c.missing_value, c.column_id) for c in body.columns] == [(None, None, 0)] * 2
    assert body.columns[1] == Column("b", "int32", "integer", True, 0)


def test_v2_entries_are_readable_by_a_v1_reader() -> None:
    """A node still on the previous build reads v2 data with its v1 schema (the new fields are skipped)."""
    v1, v2 = _versions()
    buf = io.BytesIO()
    schemaless_writer(buf, v2.parsed, to_record(_meta_entry(default_expr="now()", missing_value="x", column_id=2)))
    old: Any = schemaless_reader(io.BytesIO(buf.getvalue()), v2.parsed, v1.parsed)
    assert old["body"]["columns"][1] == {"name": "b", "type": "int32", "source_type": "integer", "nullable": True,
                                         "key_position": 0}
    assert v1.fingerprint != v2.fingerprint


@pytest.mark.parametrize(("text", "expected"), [
    ("0/16B3748", positions.pg_lsn("0/16B3748")),
    ("scn:123", positions.oracle_scn(123)),
    ("0x00000025000001A80003", positions.mssql_lsn(bytes.fromhex("00000025000001A80003"))),
    ("mysql-bin.000003:4567", positions.binlog_position("mysql-bin.000003", 4567)),
    ("binlog.000003:1234 gtid=0-1-42", positions.mariadb_position("binlog.000003", 1234, "0-1-42")),
    ("<binlog.000003:1234 gtid=0-1-42",
     positions.just_before(positions.mariadb_position("binlog.000003", 1234, "0-1-42"))),
    ("binlog.000003:4 gtid=", positions.mariadb_position("binlog.000003", 4)),
    ("binlog.000003:x gtid=0-1-1", None), ("binlog:4 gtid=0-1-1", None),
    ("junk", None), ("", None), ("1/ZZ", None), ("<0/10", None),
])
def test_position_text_parses_back(text: str, expected: object) -> None:
    assert positions.parse_text(text) == expected


def test_a_record_that_does_not_fit_names_the_field_not_the_values() -> None:
    """fastavro quotes the whole datum in its error; row values must never reach a log."""
    secret = "4111-1111-1111-1111"
    record = to_record(_txn())
    record["body"][1]["changes"][0]["values"] = [secret, object()]
    with pytest.raises(UnencodableRecord) as caught:
        envelope.encode(REDO_SCHEMA, record)
    assert secret not in str(caught.value)
    assert "bug in Ark" in str(caught.value)


def test_a_new_kind_of_entry_is_a_compatible_change_and_a_new_primitive_branch_is_not() -> None:
    """redo_entry v5 adds SchemaChange to the body union: an older build refuses such an entry by its fingerprint
    ("upgrade Ark"), never resolves it; every other change must still resolve both ways."""
    union = {"type": "record", "name": "E", "fields": [
        {"name": "body", "type": [{"type": "record", "name": "A", "fields": [{"name": "x", "type": "long"}]}]}]}
    with_record = {**union, "fields": [{"name": "body", "type": [
        *union["fields"][0]["type"], {"type": "record", "name": "B", "fields": [{"name": "y", "type": "string"}]}]}]}
    check_pair(union, with_record, "E")
    with_primitive = {**union, "fields": [{"name": "body", "type": [*union["fields"][0]["type"], "string"]}]}
    with pytest.raises(IncompatibleSchema):
        check_pair(union, with_primitive, "E")


def test_schema_change_entries_round_trip() -> None:
    from schemas.entries import (
        Column,
        Position,
        RedoEntry,
        SchemaChange,
        SchemaStep,
        TableMeta,
        from_record,
        to_record,
    )

    meta = TableMeta("public.t", (Column("id", "int32", "integer", False, 1, column_id=1),), "v1", "0/10", "key")
    body = SchemaChange(Position("0/10", b"\x00" * 7 + b"\x10"), 2, "ALTER TABLE",
                        (SchemaStep("rename-table", "public.s", detail="public.t"), SchemaStep("table", "public.t")),
                        (meta,), statement="ALTER TABLE s RENAME TO t", search_path="public", facts="{}")
    entry = RedoEntry("g", "postgresql", 3, body)
    env = envelope.encode(REDO_SCHEMA, to_record(entry))
    assert from_record(envelope.decode(env.value, env.headers, expect=REDO_SCHEMA).record) == entry
