"""The compiled redo codec (schemas/hot) writes fastavro's bytes exactly, and reads them back into equal entries.

Every case goes through both paths: fastavro (``envelope.encode(to_record(...))``, the pure-Python default) and
the compiled one (``schemas.hot``); the payloads must be byte-identical and each path must read the other's
bytes into the same entry. Values the compiled codec does not handle must fall back to fastavro, never be
written differently.
"""

from __future__ import annotations

import io
import math

import pytest
from fastavro import schemaless_reader, schemaless_writer

from schemas import envelope, hot, redo_codec, registry
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
from schemas.errors import CorruptEntry

pytestmark = pytest.mark.skipif(not hot.ACTIVE, reason="compiled redo codec not built (python -m ops.build_hot)")

POS = Position("1A/16B3748", b"\x00\x00\x00\x1a\x01\x6b\x37\x48")


def chunk(changes: list[RowChange], **kw: object) -> RedoEntry:
    fields: dict[str, object] = {"txn_id": "731", "chunk_index": 0, "last": True, "confirm": "1A/16B3780", **kw}
    body = TxnChunk(commit=POS, commit_time_us=1_764_000_000_123_456, changes=changes, **fields)  # type: ignore[arg-type]
    return RedoEntry(group="bank", engine="postgresql", epoch=7, body=body)


def fastavro_bytes(entry: RedoEntry) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, registry.current(REDO_SCHEMA).parsed, to_record(entry))
    return buf.getvalue()


BIG = "x" * 70_000
CASES: dict[str, RedoEntry] = {
    "pgbench-like": chunk([
        RowChange("public.pgbench_accounts", Op.UPDATE, [12345, 3, -4711, " " * 84]),
        RowChange("public.pgbench_history", Op.INSERT, [23, 3, 12345, -4711, "2026-12-01 07:00:00.123456", None]),
    ]),
    "every value class": chunk([RowChange("s.t", Op.INSERT, [
        None, UNCHANGED, True, False, 0, -1, 1, 2**63 - 1, -(2**63), 0.0, -0.0, 1.5, 1e308, math.inf, -math.inf,
        "", "text", b"", b"\x00\xff\x80", "12345.6700", "2026-12-01", "{\"a\": [1, 2]}"])]),
    "unicode": chunk([RowChange("schéma.tâble", Op.INSERT, ["é", "日本語", "emoji 🚀", "\u0000nul", "\U0010ffff"])]),
    "large values": chunk([RowChange("s.t", Op.INSERT, [BIG, b"\x01" * 100_000, "é" * 40_000])]),
    "unchanged toast": chunk([RowChange("s.t", Op.UPDATE, [1, UNCHANGED, UNCHANGED, "new"])]),
    "update with old key": chunk([RowChange("s.t", Op.UPDATE, [2, "a"], old_key=[1])]),
    "old key classes": chunk([RowChange("s.t", Op.DELETE, [], old_key=[None, True, 5, 2.5, "k", b"\x00"])]),
    "delete, truncate": chunk([RowChange("s.t", Op.DELETE, [], old_key=[9]), RowChange("s.t", Op.TRUNCATE, [])]),
    "parts": chunk([RowChange("s.t", Op.INSERT, [1, None], parts=[PartRef(0, 1, 3, 2_500_000, 0xFFFFFFFF)])]),
    "empty parts": chunk([RowChange("s.t", Op.INSERT, [1], parts=[])]),
    "value part": chunk([], part=ValuePart("s.t", 4, 1, 2, 3, 2_500_000, b"\x00" * 1000), last=False),
    "checkpoint": chunk([], txn_id=""),
    "not last, later chunk": chunk([RowChange("s.t", Op.INSERT, [1])], first_row=1000, last=False),
    "many rows": chunk([RowChange("s.t", Op.INSERT, [i, f"row {i}", i * 0.5]) for i in range(2000)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_bytes_equal_fastavro_bytes(name: str) -> None:
    entry = CASES[name]
    assert hot.encode(entry) == fastavro_bytes(entry)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_path_reads_the_other_ones_bytes(name: str) -> None:
    entry = CASES[name]
    payload = fastavro_bytes(entry)
    assert hot.decode(payload) == entry
    schema = registry.current(REDO_SCHEMA).parsed
    assert from_record(schemaless_reader(io.BytesIO(payload), schema, schema)) == entry  # type: ignore[arg-type]


def test_the_envelope_is_the_same_on_both_paths() -> None:
    entry = CASES["pgbench-like"]
    fast = redo_codec.encode_entry(entry, source_position="1A/16B3748", commit_time_us=5)
    slow = envelope.encode(REDO_SCHEMA, to_record(entry), epoch=7, source_position="1A/16B3748", commit_time_us=5)
    assert (fast.value, fast.headers, fast.timestamp_ms) == (slow.value, slow.headers, slow.timestamp_ms)
    dec = redo_codec.decode_entry(fast.value, fast.headers, topic="t", partition=0, offset=3)
    assert (dec.entry, dec.epoch, dec.source_position, dec.commit_time_us) == (entry, 7, "1A/16B3748", 5)


@pytest.mark.parametrize("values", [[2**63], [-(2**63) - 1], ["\ud800"], [bytearray(b"x")], [object()]],
                         ids=["int above long", "int below long", "lone surrogate", "bytearray", "object"])
def test_what_the_compiled_codec_does_not_handle_goes_to_fastavro(values: list[object]) -> None:
    entry = chunk([RowChange("s.t", Op.INSERT, values)])  # type: ignore[arg-type]
    assert hot.encode(entry) is None
    try:
        expected: bytes | Exception = fastavro_bytes(entry)
    except Exception as exc:  # noqa: BLE001 - fastavro decides; the codec must then say the same
        expected = exc
    if isinstance(expected, bytes):
        assert redo_codec.encode_entry(entry).value == expected
    else:
        with pytest.raises(Exception):  # noqa: B017 - whatever fastavro raises, envelope.encode turns it typed
            redo_codec.encode_entry(entry)


def test_unchanged_in_an_old_key_is_not_written_by_the_compiled_codec() -> None:
    assert hot.encode(chunk([RowChange("s.t", Op.DELETE, [], old_key=[UNCHANGED])])) is None


def test_other_bodies_take_the_fastavro_path_both_ways() -> None:
    meta = RedoEntry("bank", "postgresql", 7, TableMeta("s.t", (Column("id", "int32", "integer", key_position=1),),
                                                         version="v1"))
    marker = RedoEntry("bank", "postgresql", 8, EpochMarker(8, "node-a", "1A/0"))
    for entry in (meta, marker):
        assert hot.encode(entry) is None
        env = redo_codec.encode_entry(entry, source_position="1A/0")
        assert hot.decode(env.value) is None
        assert redo_codec.decode_entry(env.value, env.headers).entry == entry


@pytest.mark.parametrize("cut", [1, 5, 20, 40, 60])
def test_truncated_bytes_are_a_corrupt_entry_not_a_crash(cut: int) -> None:
    env = redo_codec.encode_entry(CASES["pgbench-like"])
    damaged = env.value[:cut]
    headers = [(k, f"{envelope.crc32c(damaged):08x}".encode() if k == envelope.H_CRC else v) for k, v in env.headers]
    with pytest.raises(CorruptEntry, match="undecodable"):
        redo_codec.decode_entry(damaged, headers, topic="t", partition=0, offset=9)


def test_a_bad_crc_is_caught_before_decoding() -> None:
    env = redo_codec.encode_entry(CASES["pgbench-like"])
    with pytest.raises(CorruptEntry):
        redo_codec.decode_entry(env.value[:-1] + bytes([env.value[-1] ^ 1]), env.headers)


def test_the_build_self_check_passes() -> None:
    assert hot.self_check() == ""
