"""A pure parser of pgoutput logical replication messages, protocol version 1 (bytes -> typed objects).

Written from PostgreSQL's "Logical Replication Message Formats" documentation. All integers are
big-endian. Strings are NUL-terminated. Timestamps are microseconds since 2000-01-01 UTC; the
message objects keep them as sent, and :func:`pg_time_to_unix_us` converts them.

Tuple values are kept raw: ``bytes`` for a text value ('t'), :class:`BinaryValue` for a binary one
('b', only with the ``binary`` option, which Ark does not request), ``None`` for SQL NULL ('n') and
:data:`schemas.entries.UNCHANGED` for an unchanged TOASTed value ('u'). Type conversion is
:mod:`producers.postgresql.types`' job, done once per column with precomputed converters.

The parser is written for throughput: one ``struct.unpack_from`` per field, no per-byte loops, and
a single pass over each tuple. Where the compiled twin of :func:`parse_tuple` built (``_pgoutput.c``, by
``python -m ops.build_hot``), tuples of messages held in ``bytes`` are cut and converted in C; ``ARK_HOT=0``
or a failed build leaves the Python loop below, with the same results (tests/unit/test_pgoutput_compiled.py).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from schemas.entries import UNCHANGED, Value

#: Microseconds between 1970-01-01 and 2000-01-01 (the PostgreSQL epoch).
PG_EPOCH_UNIX_US: Final = 946_684_800_000_000

_U8 = struct.Struct(">B")
#: In a large message (a memoryview), a text value at least this long reaches its converter as a view.
VIEW_VALUE_BYTES = 1 << 16
_I16 = struct.Struct(">H")
#: A message as received: bytes, or a view of them for a large row message.
Buf = bytes | memoryview
_I32 = struct.Struct(">I")
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_RELCOL = struct.Struct(">Ii")
_TRUNC_HEAD = struct.Struct(">IB")
_MSG_HEAD = struct.Struct(">BQ")

#: Column flag: the column is part of the replica identity (key).
COLUMN_KEY: Final = 1
#: Truncate options.
TRUNCATE_CASCADE: Final = 1
TRUNCATE_RESTART_IDENTITY: Final = 2


class PgOutputError(ValueError):
    """The bytes are not a well-formed pgoutput v1 message."""


class BinaryValue(bytes):
    """A column value sent in binary format ('b'); Ark requests text format, so this is rare."""


TupleData = list[Value]
"""One row image: raw values in column order (see the module docstring)."""


def pg_time_to_unix_us(pg_us: int) -> int:
    """Convert a PostgreSQL timestamp (µs since 2000-01-01) to µs since the Unix epoch."""
    return pg_us + PG_EPOCH_UNIX_US


def lsn_to_text(lsn: int) -> str:
    """The usual ``X/Y`` text form of an LSN (upper-case hex, like PostgreSQL prints it)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_from_text(text: str) -> int:
    """Parse ``X/Y`` into an integer LSN. Raises ValueError for anything else."""
    hi, sep, lo = text.strip().partition("/")
    if not sep or not hi or not lo or len(hi) > 8 or len(lo) > 8:
        raise ValueError(f"not an LSN: {text!r} (expected X/Y in hex)")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass(frozen=True, slots=True)
class Begin:
    """'B': a transaction starts. ``final_lsn`` is the LSN of its commit record."""

    final_lsn: int
    commit_ts: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """'C': the transaction is complete. ``end_lsn`` is the end of its commit record."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class Origin:
    """'O': the transaction was replicated from another origin."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    """One column of a Relation message."""

    flags: int
    name: str
    type_oid: int
    typmod: int

    @property
    def is_key(self) -> bool:
        """True when the column belongs to the replica identity."""
        return bool(self.flags & COLUMN_KEY)


@dataclass(frozen=True, slots=True)
class Relation:
    """'R': the shape of a table, sent before its first change (and again after DDL)."""

    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """'Y': the name of a non-builtin type used by a following Relation."""

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    """'I': a new row."""

    relid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    """'U': a changed row. ``old_kind`` is 'K' (old key), 'O' (whole old row) or '' (none sent)."""

    relid: int
    old_kind: str
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    """'D': a deleted row, identified by its old key ('K') or whole old row ('O')."""

    relid: int
    old_kind: str
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    """'T': one TRUNCATE statement over one or more tables."""

    options: int
    relids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """'M': a logical decoding message (``pg_logical_emit_message``)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


PgOutputMessage = Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate | Message


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\0", pos)
    if end < 0:
        raise PgOutputError("unterminated string")
    return buf[pos:end].decode("utf-8"), end + 1


def parse_tuple(buf: Buf, pos: int, convs: Sequence[Callable[[bytes], Value]] | None = None,
                ) -> tuple[TupleData, int]:
    """Parse TupleData at ``pos``; return the values and the position after them.

    With ``convs`` (one function per column), each text value is converted as it is cut out,
    which saves a second pass over the row; without, text values stay ``bytes``.
    """
    (ncols,) = _I16.unpack_from(buf, pos)
    pos += 2
    view = isinstance(buf, memoryview)
    values: TupleData = [None] * ncols
    unpack_len = _I32.unpack_from
    if convs is not None and len(convs) != ncols:
        raise PgOutputError(f"tuple has {ncols} columns, the relation {len(convs)}")
    for i in range(ncols):
        kind = buf[pos]
        if kind == 116:  # 't' text
            (length,) = unpack_len(buf, pos + 1)
            pos += 5
            end = pos + length
            raw = buf[pos:end]
            if view and (convs is None or length < VIEW_VALUE_BYTES):
                raw = bytes(raw)  # a converter gets a view only for a large value (text or bytea)
            values[i] = raw if convs is None else convs[i](raw)  # type: ignore[arg-type,assignment]
            pos = end
        elif kind == 110:  # 'n' null (already None)
            pos += 1
        elif kind == 117:  # 'u' unchanged TOAST
            values[i] = UNCHANGED
            pos += 1
        elif kind == 98:  # 'b' binary (never converted)
            (length,) = unpack_len(buf, pos + 1)
            pos += 5
            values[i] = BinaryValue(bytes(buf[pos : pos + length]))
            pos += length
        else:
            raise PgOutputError(f"unknown tuple column kind {kind!r} at offset {pos}")
    if pos > len(buf):
        raise PgOutputError("tuple data runs past the end of the message")
    return values, pos


def _load_compiled() -> Callable[[bytes, int, Convs], tuple[TupleData, int]] | None:
    if os.environ.get("ARK_HOT", "1") == "0":
        return None
    try:
        from producers.postgresql import _pgoutput  # type: ignore[attr-defined]  # noqa: PLC0415 - optional module
    except ImportError:
        return None
    from producers.postgresql.types import converter  # noqa: PLC0415 - the text converter, to recognise it

    _pgoutput.configure(UNCHANGED, BinaryValue, PgOutputError, converter(25))
    compiled: Callable[[bytes, int, Convs], tuple[TupleData, int]] = _pgoutput.parse_tuple
    return compiled


Convs = Sequence[Callable[[bytes], Value]] | None
_compiled_tuple = _load_compiled()
#: True when tuples are parsed by the compiled module.
COMPILED = _compiled_tuple is not None


def _tuple(buf: Buf, pos: int, convs: Convs) -> tuple[TupleData, int]:
    """parse_tuple, in C for a message in bytes when the compiled module is loaded (convs as a tuple)."""
    if _compiled_tuple is not None and buf.__class__ is bytes and (convs is None or convs.__class__ is tuple):
        return _compiled_tuple(buf, pos, convs)
    return parse_tuple(buf, pos, convs)


def self_check() -> str:
    """"" when the compiled tuple parser is loaded and agrees with :func:`parse_tuple` on a sample; else why not."""
    if _compiled_tuple is None:
        return "the compiled tuple parser is not loaded"
    from producers.postgresql.types import converters  # noqa: PLC0415

    sample = (b"\x00\x06t\x00\x00\x00\x02-7n" + b"u" + b"t\x00\x00\x00\x02\xc3\xa9t\x00\x00\x00\x01t"
              + b"t\x00\x00\x00\x031.5")
    convs = converters([23, 25, 25, 25, 16, 701])
    if _compiled_tuple(sample, 0, convs) != parse_tuple(sample, 0, convs):
        return "the compiled tuple parser reads a sample differently"
    return ""


def _relation(buf: bytes) -> Relation:
    (relid,) = _I32.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    ident = chr(buf[pos])
    (ncols,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    cols = []
    for _ in range(ncols):
        flags = buf[pos]
        colname, pos = _cstring(buf, pos + 1)
        type_oid, typmod = _RELCOL.unpack_from(buf, pos)
        pos += 8
        cols.append(RelationColumn(flags, colname, type_oid, typmod))
    return Relation(relid, namespace, name, ident, tuple(cols))


def _update(buf: Buf, convs: Convs) -> Update:
    (relid,) = _I32.unpack_from(buf, 1)
    kind = buf[5]
    old: TupleData | None = None
    old_kind = ""
    pos = 6
    if kind in (75, 79):  # 'K', 'O'
        old_kind = chr(kind)
        old, pos = _tuple(buf, 6, convs)
        if buf[pos] != 78:
            raise PgOutputError("update: expected 'N' after the old tuple")
        pos += 1
    elif kind != 78:  # 'N'
        raise PgOutputError(f"update: unexpected tuple marker {kind!r}")
    new, _ = _tuple(buf, pos, convs)
    return Update(relid, old_kind, old, new)


def row_relid(data: Buf) -> int:
    """The relation id of an Insert, Update or Delete message (to pick its converters first)."""
    return int(_I32.unpack_from(data, 1)[0])


def _row(buf: Buf, convs: Convs) -> Insert | Update | Delete:
    """An Insert, Update or Delete message."""
    try:
        tag = buf[0]
        if tag == 73:  # 'I'
            (relid,) = _I32.unpack_from(buf, 1)
            if buf[5] != 78:
                raise PgOutputError("insert: expected 'N'")
            return Insert(relid, _tuple(buf, 6, convs)[0])
        if tag == 85:  # 'U'
            return _update(buf, convs)
        (relid,) = _I32.unpack_from(buf, 1)
        kind = buf[5]
        if kind not in (75, 79):
            raise PgOutputError(f"delete: unexpected tuple marker {kind!r}")
        return Delete(relid, chr(kind), _tuple(buf, 6, convs)[0])
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, PgOutputError):
            raise
        raise PgOutputError(f"malformed pgoutput message {chr(buf[0]) if len(buf) else '(empty)'!r}: {exc}") from None


def parse(data: Buf, convs: Convs = None) -> PgOutputMessage:
    """Parse one pgoutput v1 message (the payload of one XLogData message).

    ``convs`` (for Insert, Update and Delete only): one converter per column of the relation,
    applied to text values while the tuple is cut (see :func:`parse_tuple`).
    """
    if isinstance(data, memoryview) and data.nbytes and data[0] in (73, 85, 68):
        # A large row message stays a view: its large values are cut from it without a copy.
        return _row(data, convs)
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        tag = buf[0]
        if tag in (73, 85, 68):
            return _row(buf, convs)
        if tag == 66:  # 'B'
            return Begin(*_BEGIN.unpack_from(buf, 1))
        if tag == 67:  # 'C'
            return Commit(*_COMMIT.unpack_from(buf, 1))
        if tag == 82:  # 'R'
            return _relation(buf)
        if tag == 89:  # 'Y'
            (oid,) = _I32.unpack_from(buf, 1)
            namespace, pos = _cstring(buf, 5)
            return TypeInfo(oid, namespace, _cstring(buf, pos)[0])
        if tag == 84:  # 'T'
            nrels, options = _TRUNC_HEAD.unpack_from(buf, 1)
            relids = struct.unpack_from(f">{nrels}I", buf, 6)
            return Truncate(options, relids)
        if tag == 79:  # 'O'
            (lsn,) = struct.unpack_from(">Q", buf, 1)
            return Origin(lsn, _cstring(buf, 9)[0])
        if tag == 77:  # 'M' (protocol v1: no xid field)
            flags, lsn = _MSG_HEAD.unpack_from(buf, 1)
            prefix, pos = _cstring(buf, 10)
            (length,) = _I32.unpack_from(buf, pos)
            content = buf[pos + 4 : pos + 4 + length]
            if len(content) != length:
                raise PgOutputError("message content is truncated")
            return Message(bool(flags & 1), lsn, prefix, content)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, PgOutputError):
            raise
        raise PgOutputError(f"malformed pgoutput message {chr(buf[0]) if buf else '(empty)'!r}: {exc}") from None
    raise PgOutputError(f"unknown pgoutput message type {chr(tag)!r}")
