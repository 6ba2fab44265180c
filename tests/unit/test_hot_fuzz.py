"""Fuzz the compiled hot path against its pure-Python twins: bad bytes give the same result or an error, never a crash.

The redo decoder (schemas/hot/_redo.c) reads bytes from Kafka: a CRC proves they are what a producer wrote, not
that the producer was sound. The pgoutput tuple parser (producers/postgresql/_pgoutput.c) reads the walsender's
bytes. Each test here mutates valid inputs (every truncation, random byte flips, crafted varints and length
fields: negative, huge, longer than the buffer) and holds the compiled path to the rule:

- where the Python path reads a value, the compiled path reads the same value;
- where the Python path fails, the compiled path raises the error class its caller turns into a clear error
  (ValueError or TypeError for the redo decoder, which ``redo_codec.decode_entry`` reports as ``CorruptEntry``;
  ValueError for the tuple parser: ``PgOutputError``, or the converter's own ValueError).

The inputs are seeded (the same cases every run) and take a few seconds. ``ARK_FUZZ_SCALE=N`` runs N times as
many random cases; ``python -m ops.build_hot --asan`` runs these tests against modules built with
AddressSanitizer and UBSan, where an over-read or undefined behaviour aborts the run instead of passing silently.
"""

from __future__ import annotations

import enum
import io
import math
import os
import random
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from producers.postgresql import pgoutput
from producers.postgresql.types import converters
from schemas import hot, registry
from schemas.entries import (
    REDO_SCHEMA,
    UNCHANGED,
    Op,
    PartRef,
    Position,
    RedoEntry,
    RowChange,
    TxnChunk,
    ValuePart,
    from_record,
    to_record,
)

SCALE = max(1, int(os.environ.get("ARK_FUZZ_SCALE", "1")))

#: Avro longs (zig-zag varints) that stress a reader: the extremes, lengths beyond any buffer, negative counts
#: and lengths, and encodings longer than 10 bytes or with bits beyond 64.
CRAFTED_VARINTS: list[bytes] = []


def zigzag(n: int) -> bytes:
    z = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


for _n in (0, 1, -1, 2, -2, 3, 4, 5, 6, 7, -7, 127, -128, 2**31 - 1, -(2**31), 2**32, 2**62, 2**63 - 1, -(2**63),
           -(2**63) + 1, 10**6, -(10**6), 2**40):
    CRAFTED_VARINTS.append(zigzag(_n))
CRAFTED_VARINTS += [b"\xff" * 9 + b"\x01", b"\xff" * 10 + b"\x01", b"\x80" * 10 + b"\x00", b"\xff" * 20,
                    b"\xfe" * 9 + b"\x7f", b"\x80", b"\xff"]


def avro_payload(entry: RedoEntry) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, registry.current(REDO_SCHEMA).parsed, to_record(entry))
    return buf.getvalue()


#: What the compiled reader refuses and fastavro reads: a varint longer than the 10 bytes of a 64-bit long
#: (fastavro reads on and wraps), a negative union or enum index (fastavro indexes its list of branches or ops from
#: the end, so -1 is the last one), and an array block count of -2**63 (fastavro reads no item). No Avro writer
#: writes any of these: such bytes are corrupt, and CorruptEntry says so.
STRICTER = {
    "malformed redo entry: an array's item count is out of range",
    "malformed redo entry: unknown op",
    "malformed redo entry: a number is longer than 10 bytes",
    "malformed redo entry: unknown union branch of a value",
    "malformed redo entry: unknown union branch of old_key",
    "malformed redo entry: unknown union branch of parts",
    "malformed redo entry: unknown union branch of part",
}


def redo_seeds() -> list[bytes]:
    pos = Position("1A/16B3748", b"\x00\x00\x00\x1a\x01\x6b\x37\x48")

    def chunk(changes: list[RowChange], **kw: object) -> RedoEntry:
        fields: dict[str, object] = {"txn_id": "731", "chunk_index": 0, "last": True, "confirm": "1A/16B3780", **kw}
        body = TxnChunk(commit=pos, commit_time_us=1_764_000_000_123_456, changes=changes, **fields)  # type: ignore[arg-type]
        return RedoEntry(group="bank", engine="postgresql", epoch=7, body=body)

    entries = [
        chunk([RowChange("s.t", Op.INSERT, [None, UNCHANGED, True, 0, -1, 2**63 - 1, 1.5, "é", b"\x00\xff"])]),
        chunk([RowChange("s.t", Op.UPDATE, [2, "a"], old_key=[None, False, 5, 2.5, "k", b"\x01"]),
               RowChange("s.t", Op.DELETE, [], old_key=[9]), RowChange("s.t", Op.TRUNCATE, [])]),
        chunk([RowChange("s.t", Op.INSERT, [1, None], parts=[PartRef(0, 1, 3, 2_500_000, 0xFFFFFFFF)]),
               RowChange("s.t", Op.INSERT, [1], parts=[])], first_row=1000, last=False),
        chunk([], part=ValuePart("s.t", 4, 1, 2, 3, 2_500_000, b"\x00" * 20), last=False),
        chunk([], txn_id=""),
    ]
    return [avro_payload(e) for e in entries]


def python_decode(payload: bytes) -> RedoEntry | Exception:
    """The pure-Python path: fastavro, then the typed entry (what redo_codec does with ARK_HOT=0)."""
    schema = registry.current(REDO_SCHEMA).parsed
    try:
        return from_record(schemaless_reader(io.BytesIO(payload), schema, schema))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - any failure of the Python path is "an error" here
        return exc


def redo_mutations(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    for seed in seeds:
        for cut in range(len(seed)):  # every truncation
            yield seed[:cut]
    for _ in range(7500 * SCALE):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):  # random byte flips
            data[rng.randrange(len(data))] = rng.randrange(256)
        yield bytes(data)
    for _ in range(7500 * SCALE):
        # A crafted varint in place of the bytes at a random offset (a count, length, branch or number).
        seed = rng.choice(seeds)
        at = rng.randrange(len(seed))
        yield seed[:at] + rng.choice(CRAFTED_VARINTS) + seed[at + rng.randint(0, 2):]


@pytest.mark.skipif(not hot.ACTIVE, reason="compiled redo codec not built (python -m ops.build_hot)")
def test_the_compiled_redo_decoder_reads_mutated_bytes_as_fastavro_does_or_raises() -> None:
    rng = random.Random(13)
    counts = {"same entry": 0, "both errors": 0, "other body": 0, "stricter": 0}
    for payload in redo_mutations(redo_seeds(), rng):
        expected = python_decode(payload)
        try:
            got = hot.decode(payload)
        except (ValueError, TypeError) as exc:  # what redo_codec.decode_entry reports as CorruptEntry
            if not isinstance(expected, Exception):
                # fastavro is lenient where the Avro spec is not; the compiled reader refuses these, and says so.
                assert str(exc) in STRICTER, f"compiled: {exc!r}, Python read it: {payload.hex()}"
                counts["stricter"] += 1
            else:
                counts["both errors"] += 1
            continue
        if got is None:  # not a Transaction body: the caller takes the Python path itself
            counts["other body"] += 1
            continue
        # Equal entries, or equal bytes when written again: a flipped double may be a NaN, which equals nothing.
        assert got == expected or avro_payload(got) == avro_payload(expected), (  # type: ignore[arg-type]
            f"the paths read different entries from {payload.hex()}")
        counts["same entry"] += 1
    # Each outcome must be reachable, or the mutations miss a whole class of input.
    assert all(counts.values()), counts


def grown_kb(call: Callable[[int], None], n: int = 100_000) -> tuple[int, int]:
    """(traced Python memory, resident size) gained over ``n`` calls after a warm-up, in kB."""
    call(20_000)  # warm up: allocator arenas, interned objects, caches
    with open("/proc/self/statm") as f:
        rss_before = int(f.read().split()[1])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call(n)
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    with open("/proc/self/statm") as f:
        rss = (int(f.read().split()[1]) - rss_before) * os.sysconf("SC_PAGE_SIZE")
    return traced // 1024, rss // 1024


def test_long_redo_decoding_does_not_grow_the_process() -> None:
    """No reference leaks on the decode path, valid bytes or not: 100k decodes, memory flat.

    tracemalloc sees every Python object allocated and not freed, so one leaked object per decode is more than
    2.8 MB here; a leaked reference to a cached object (a small int, None) costs nothing and is not seen.
    """
    if not hot.ACTIVE:
        pytest.skip("compiled redo codec not built")
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("under AddressSanitizer freed memory is held in quarantine: sizes say nothing")
    seeds = redo_seeds()
    inputs = [*seeds, seeds[0][:40], seeds[1][:-3], seeds[2][:-1]]  # valid entries, and bad ones failing late

    def run(n: int) -> None:
        for i in range(n):
            try:
                hot.decode(inputs[i % len(inputs)])
            except ValueError:
                pass

    traced, rss = grown_kb(run)
    assert traced < 256 and rss < 4096, f"memory grew by {traced} kB (traced), {rss} kB (resident) over 100k decodes"


@pytest.mark.skipif(not pgoutput.COMPILED, reason="compiled tuple parser not built (python -m ops.build_hot)")
def test_long_tuple_parsing_does_not_grow_the_process() -> None:
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("under AddressSanitizer freed memory is held in quarantine: sizes say nothing")
    from producers.postgresql import _pgoutput  # type: ignore[attr-defined]  # noqa: PLC0415 - compiled module

    inputs: list[tuple[bytes, tuple[Callable[[bytes], Any], ...] | None]] = [(tuple_bytes([b"12x"]), (int,))]
    for oids, cells in TUPLE_SEEDS:  # every converter path (int, text, called), binary, null, unchanged
        good = tuple_bytes(cells)
        inputs += [(good, tuple(converters(oids))), (good, None), (good[:-2], tuple(converters(oids)))]

    def run(n: int) -> None:
        for i in range(n):
            buf, convs = inputs[i % len(inputs)]
            try:
                _pgoutput.parse_tuple(buf, 0, convs)
            except ValueError:
                pass

    traced, rss = grown_kb(run)
    assert traced < 256 and rss < 4096, f"memory grew by {traced} kB (traced), {rss} kB (resident) over 100k tuples"


class _Int(int):
    pass


class _Str(str):
    __slots__ = ()


class _Red(enum.IntEnum):
    RED = 1


#: Values a row may hold, and some it may not (each must be written as fastavro writes it, or left to fastavro).
ODD_VALUES: list[Any] = [
    None, UNCHANGED, True, False, 0, -1, 1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30, 1.5, math.inf, -0.0,
    math.nan, "", "é", "\ud800", "a\x00b", b"", b"\x00\xff", bytearray(b"x"), object(), _Int(5), _Str("s"), _Red.RED,
    [1], {"a": 1},
]


def random_entry(rng: random.Random) -> RedoEntry:
    """A Transaction entry whose fields are mostly sound, each odd (wrong type, out of range) once in 15."""

    def pick(good: list[object], bad: list[object]) -> Any:
        return rng.choice(good) if rng.random() < 0.93 else rng.choice(bad)

    def num() -> Any:
        return pick([0, 1, -1, 2**31, 2**63 - 1, -(2**63)], [2**63, True, 1.0, "1", None, _Int(3), -(2**63) - 1])

    changes = [
        RowChange(pick(["s.t", "é"], ["\ud800", 5, _Str("x")]),
                  pick([Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE], ["INSERT", "MERGE", 1]),
                  [rng.choice(ODD_VALUES) for _ in range(rng.randint(0, 4))],
                  rng.choice([None, [rng.choice(ODD_VALUES) for _ in range(rng.randint(0, 3))]]),
                  rng.choice([None, [], [PartRef(num(), 1, 2, 3, num())]]))
        for _ in range(rng.randint(0, 3))
    ]
    part = rng.choice([None, None, ValuePart(pick(["s.t"], [3]), num(), 1, 2, 3, 4, pick([b"x"], [bytearray(b"y")]))])
    body = TxnChunk(pick(["731", ""], [731]), Position(pick(["1/2"], [7]), pick([b"k"], [bytearray(b"k"), "k"])),
                    num(), num(), pick([True, False], [1, 0, None, "yes"]), changes, num(), pick(["1/3", ""], [None]),
                    part)
    return RedoEntry(pick(["bank"], [_Str("b"), 1]), pick(["postgresql"], ["\ud800"]), num(), body)


@pytest.mark.skipif(not hot.ACTIVE, reason="compiled redo codec not built (python -m ops.build_hot)")
def test_the_compiled_encoder_writes_fastavro_bytes_or_leaves_the_entry_to_fastavro() -> None:
    rng = random.Random(13)
    counts = {"same bytes": 0, "left to fastavro": 0}
    for _ in range(15_000 * SCALE):
        entry = random_entry(rng)
        got = hot.encode(entry)
        if got is None:
            counts["left to fastavro"] += 1
            continue
        try:
            expected: bytes | Exception = avro_payload(entry)
        except Exception as exc:  # noqa: BLE001 - fastavro refusing what the compiled encoder wrote is the failure
            expected = exc
        assert got == expected, f"the compiled encoder wrote {entry!r}; fastavro: {expected!r}"
        counts["same bytes"] += 1
    assert all(counts.values()), counts


# ------------------------------------------------------------------------------------------------ pgoutput tuples
INT4, INT8, BOOL, FLOAT8, BYTEA, TEXT, NUMERIC, JSONB = 23, 20, 16, 701, 17, 25, 1700, 3802


def tuple_bytes(cells: list[object]) -> bytes:
    out = struct.pack(">H", len(cells))
    for cell in cells:
        if cell is None:
            out += b"n"
        elif cell == "u":
            out += b"u"
        elif isinstance(cell, tuple):
            out += b"b" + struct.pack(">I", len(cell[1])) + cell[1]
        else:
            assert isinstance(cell, bytes)
            out += b"t" + struct.pack(">I", len(cell)) + cell
    return out


TUPLE_SEEDS: list[tuple[list[int], list[object]]] = [
    ([INT4, INT8, TEXT, BOOL], [b"-7", b"9223372036854775807", "é".encode(), b"t"]),
    ([INT4, TEXT, BYTEA, FLOAT8], [None, "u", b"\\x00ff", b"1.5"]),
    ([NUMERIC, JSONB, INT4], [b"-12.50", b'{"a": 1}', ("b", b"\x00\x00\x00\x07")]),
    ([INT4, INT4], [b"1_000", b" 42 "]),
]

#: 32-bit lengths and 16-bit column counts that stress a parser.
CRAFTED_U32 = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 1 << 16, 1 << 24]
CRAFTED_U16 = [0, 1, 2, 3, 5, 0x7FFF, 0x8000, 0xFFFF]


def tuple_cases(rng: random.Random) -> Iterator[tuple[bytes, int, tuple[Callable[[bytes], Any], ...] | None]]:
    prefix = b"I\x00\x00\x40\x01N"  # a message header before the tuple, as pgoutput.parse() passes it
    seeds = [(prefix + tuple_bytes(cells), converters(oids)) for oids, cells in TUPLE_SEEDS]
    for buf, convs in seeds:
        for cut in range(len(buf) + 1):  # every truncation, with and without converters
            yield buf[:cut], len(prefix), tuple(convs)
            yield buf[:cut], len(prefix), None
    for _ in range(10_000 * SCALE):
        buf, convs = rng.choice(seeds)
        data = bytearray(buf)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(prefix), len(data))
            data[at] = rng.choice([rng.randrange(256), ord("t"), ord("b"), ord("n"), ord("u")])
        yield bytes(data), len(prefix), rng.choice([tuple(convs), None])
    for _ in range(10_000 * SCALE):
        # A crafted column count or value length at a random offset of the tuple.
        buf, convs = rng.choice(seeds)
        at = rng.randrange(len(prefix), len(buf))
        field = (struct.pack(">H", rng.choice(CRAFTED_U16)) if rng.random() < 0.3
                 else struct.pack(">I", rng.choice(CRAFTED_U32)))
        yield buf[:at] + field + buf[at + len(field):], len(prefix), rng.choice([tuple(convs), None])
    for buf, convs in seeds:  # start positions outside the buffer
        for pos in (-1, -(2**62), len(buf), len(buf) - 1, len(buf) + 1, 2**62, 2**63 - 1):
            yield buf, pos, tuple(convs)


def outcome(parse: Callable[[], object]) -> object:
    try:
        return parse()
    except Exception as exc:  # noqa: BLE001 - compared by class below
        return exc


def same_values(a: object, b: object) -> bool:
    return repr(a) == repr(b) and [type(v) for v in a[0]] == [type(v) for v in b[0]]  # type: ignore[index]


@pytest.mark.skipif(not pgoutput.COMPILED, reason="compiled tuple parser not built (python -m ops.build_hot)")
def test_the_compiled_tuple_parser_reads_mutated_tuples_as_python_does_or_raises() -> None:
    from producers.postgresql import _pgoutput  # type: ignore[attr-defined]  # noqa: PLC0415 - compiled module

    rng = random.Random(13)
    counts = {"same values": 0, "both errors": 0}
    for buf, pos, convs in tuple_cases(rng):
        expected = outcome(lambda: pgoutput.parse_tuple(buf, pos, convs))  # noqa: B023 - called at once
        got = outcome(lambda: _pgoutput.parse_tuple(buf, pos, convs))  # noqa: B023
        if isinstance(expected, Exception):
            # The Python loop fails on a short message with struct.error or IndexError, or with PgOutputError at
            # its end check; the compiled one checks each length before reading and says PgOutputError. Any
            # ValueError is a clear "this message is bad"; a crash or a result would not be.
            assert isinstance(got, ValueError), f"Python: {expected!r}, compiled: {got!r} at {pos} of {buf.hex()}"
            counts["both errors"] += 1
        else:
            assert not isinstance(got, Exception), f"compiled: {got!r}, Python read it: {pos} of {buf.hex()}"
            assert same_values(got, expected), f"the parsers read different values from {buf.hex()}"
            counts["same values"] += 1
    assert all(counts.values()), counts


def row_messages() -> list[tuple[bytes, tuple[Callable[[bytes], Any], ...]]]:
    """Insert, Update (plain, with old key, with old row) and Delete messages of each seed tuple."""
    out = []
    for oids, cells in TUPLE_SEEDS:
        t = tuple_bytes(cells)
        head = struct.pack(">I", 16385)
        for msg in (b"I" + head + b"N" + t, b"U" + head + b"N" + t, b"U" + head + b"K" + t + b"N" + t,
                    b"U" + head + b"O" + t + b"N" + t, b"D" + head + b"K" + t, b"D" + head + b"O" + t):
            out.append((msg, tuple(converters(oids))))
    return out


@pytest.mark.skipif(not pgoutput.COMPILED, reason="compiled tuple parser not built (python -m ops.build_hot)")
def test_whole_row_messages_parse_the_same_with_and_without_the_compiled_parser(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At the capture's call site (pgoutput.parse), both parsers give the same message or the same PgOutputError."""
    rng = random.Random(13)
    seeds = row_messages()
    cases: list[tuple[bytes, tuple[Callable[[bytes], Any], ...]]] = []
    for msg, convs in seeds:
        cases += [(msg[:cut], convs) for cut in range(len(msg))]
    for _ in range(5000 * SCALE):
        msg, convs = rng.choice(seeds)
        data = bytearray(msg)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.choice([rng.randrange(256), ord("N"), ord("K"), ord("t"), 0, 0xFF])
        cases.append((bytes(data), convs))
    compiled = [outcome(lambda: pgoutput.parse(m, c)) for m, c in cases]  # noqa: B023 - called at once
    monkeypatch.setattr(pgoutput, "_compiled_tuple", None)
    counts = {"same message": 0, "both PgOutputError": 0}
    for (msg, convs), got in zip(cases, compiled, strict=True):
        expected = outcome(lambda: pgoutput.parse(msg, convs))  # noqa: B023
        if isinstance(expected, Exception):
            assert type(got) is type(expected), f"Python: {expected!r}, compiled: {got!r} for {msg.hex()}"
            counts["both PgOutputError"] += 1
        else:
            assert repr(got) == repr(expected), f"the parsers read {msg.hex()} differently"
            counts["same message"] += 1
    assert all(counts.values()), counts


# ------------------------------------------------------------------------------------------------ the findings
# Each input below crashed or hit undefined behaviour in the compiled code before it was fixed (found by this
# file's fuzz loop under AddressSanitizer + UBSan, python -m ops.build_hot --asan); each must now be a clear error.
def redo_prefix() -> bytes:
    """The bytes of a Transaction entry up to its changes array (group .. row_count)."""
    return (zigzag(4) + b"bank" + zigzag(10) + b"postgresql" + zigzag(7) + zigzag(0) + zigzag(3) + b"731"
            + zigzag(1) + b"1" + zigzag(0) + zigzag(5) + zigzag(0) + b"\x01" + zigzag(0) + zigzag(0) + zigzag(1))


@pytest.mark.skipif(not hot.ACTIVE, reason="compiled redo codec not built (python -m ops.build_hot)")
@pytest.mark.parametrize(("tail", "error"), [
    # A block count of -2**63: negating it was signed overflow.
    (zigzag(-(2**63)) + zigzag(1), "item count is out of range"),
    # An old_key union branch of 2**63-1: shifting it past the Unchanged branch (+1) was signed overflow.
    (zigzag(1) + zigzag(3) + b"s.t" + zigzag(0) + zigzag(0) + zigzag(1) + zigzag(1) + zigzag(2**63 - 1),
     "unknown union branch of a value"),
], ids=["block count -2**63", "old_key branch 2**63-1"])
def test_the_redo_decoder_findings_are_clear_errors(tail: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        hot.decode(redo_prefix() + tail + b"\x00" * 8)


@pytest.mark.skipif(not pgoutput.COMPILED, reason="compiled tuple parser not built (python -m ops.build_hot)")
@pytest.mark.parametrize("pos", [2**63 - 1, 2**63 - 2, -1])
def test_a_tuple_position_beyond_the_message_is_a_clear_error(pos: int) -> None:
    # pos + 2 overflowed for a pos near the largest Py_ssize_t, passed the bounds check and read far outside the
    # buffer: a segmentation fault of the capture.
    from producers.postgresql import _pgoutput  # type: ignore[attr-defined]  # noqa: PLC0415 - compiled module

    with pytest.raises(pgoutput.PgOutputError, match="runs past the end"):
        _pgoutput.parse_tuple(tuple_bytes([b"1"]), pos, None)


@pytest.mark.skipif(not pgoutput.COMPILED, reason="compiled tuple parser not built (python -m ops.build_hot)")
def test_a_column_count_beyond_the_message_allocates_nothing() -> None:
    from producers.postgresql import _pgoutput  # type: ignore[attr-defined]  # noqa: PLC0415 - compiled module

    with pytest.raises(pgoutput.PgOutputError, match="runs past the end"):
        _pgoutput.parse_tuple(b"\xff\xffn", 0, None)


class _ClearsOnRead:
    """A change (or part reference) whose first attribute read empties the list that holds it."""

    def __init__(self, holder: list[object], **attrs: object) -> None:
        self._holder, self._attrs = holder, attrs

    def __getattr__(self, name: str) -> object:
        self._holder.clear()
        return self._attrs[name]


@pytest.mark.skipif(not hot.ACTIVE, reason="compiled redo codec not built (python -m ops.build_hot)")
def test_a_list_emptied_while_it_is_encoded_is_left_to_fastavro() -> None:
    # The encoder wrote the count, then read item i of a list that no longer had it (and dropped the reference of
    # the item it was reading): a read of freed memory. It now holds the item and gives the entry to fastavro.
    changes: list[object] = []
    changes += [_ClearsOnRead(changes, table="s.t", op=Op.INSERT, values=[1], old_key=None, parts=None),
                RowChange("s.t", Op.INSERT, [2])]
    parts: list[object] = []
    parts += [_ClearsOnRead(parts, row=0, column=1, count=2, total_bytes=3, crc=4), PartRef(0, 1, 2, 3, 4)]
    pos = Position("1/2", b"k")
    for body in (TxnChunk("1", pos, 0, 0, True, changes),  # type: ignore[arg-type]
                 TxnChunk("1", pos, 0, 0, True, [RowChange("s.t", Op.INSERT, [1], parts=parts)])):  # type: ignore[arg-type]
        assert hot.encode(RedoEntry("g", "postgresql", 1, body)) is None
