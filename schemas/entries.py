"""Typed views of redo entries, and their conversion to and from the Avro records.

Engine adapters produce these; the capture runner encodes them; the apply runner decodes them.
Values are engine-neutral: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, or
:data:`UNCHANGED` for a column the source did not send (PostgreSQL's unchanged TOAST values).
Decimals, dates, times and timestamps travel as their canonical text so no precision is lost.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Final

REDO_SCHEMA: Final = "redo_entry"


#: ``Column.column_id`` values at or above this are *name ids* (:func:`name_column_id`), not stable
#: column numbers: engines without column identity (MariaDB) use them on the first shape after a DDL
#: to say "this column was called X before" (see producers/mariadb/ddl.py). Below it: attnum-like ids.
NAME_ID_BASE: Final = 1 << 30


def name_column_id(name: str) -> int:
    """The name id of a column name (case-insensitive, as MariaDB compares column names)."""
    return NAME_ID_BASE | (zlib.crc32(name.casefold().encode()) & (NAME_ID_BASE - 1))


class _UnchangedType(Enum):
    UNCHANGED = "UNCHANGED"

    def __repr__(self) -> str:
        return "UNCHANGED"


#: Marks a column whose new value the source did not send (keep the standby's value).
UNCHANGED: Final = _UnchangedType.UNCHANGED

Value = None | bool | int | float | str | bytes | _UnchangedType


class Op(StrEnum):
    """Row operations."""

    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    TRUNCATE = "TRUNCATE"


@dataclass(frozen=True, slots=True)
class Position:
    """A source log position: readable ``text`` and an order-preserving binary ``key``.

    Comparing ``key`` bytewise gives the source's commit order, whatever the engine
    (PostgreSQL LSN, Oracle SCN, SQL Server LSN, binlog file and offset).
    """

    text: str
    key: bytes

    def __lt__(self, other: Position) -> bool:
        return self.key < other.key

    def __le__(self, other: Position) -> bool:
        return self.key <= other.key


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table, with its engine-neutral type.

    ``default_expr``, ``missing_value`` and ``column_id`` (schema v2) let a standby follow DDL
    exactly: what rows that predate an added column hold for it, and whether a column that changed
    its name is the same column (a rename) or a new one. Entries written with v1 read them as
    None / None / 0 (unknown).
    """

    name: str
    type: str
    source_type: str
    nullable: bool = True
    key_position: int = 0
    #: The source's default expression (its own SQL), None when the column has none.
    default_expr: str | None = None
    #: The value (canonical text) that rows older than the column hold without any row change in
    #: the log (PostgreSQL's ``attmissingval``), None when there is none.
    missing_value: str | None = None
    #: The column's identity in the source table, never reused (PostgreSQL ``attnum``); 0 = unknown.
    column_id: int = 0
    #: The source hands out the column's values itself when an INSERT leaves it out (MariaDB AUTO_INCREMENT,
    #: schema v6). False also when the source does not say (entries written before v6, other engines).
    auto_increment: bool = False


@dataclass(frozen=True, slots=True)
class TableMeta:
    """The shape of a table at a source position."""

    table: str
    columns: tuple[Column, ...]
    version: str
    position: str = ""
    #: ``key``: the key columns identify at most one row. ``full``: no unique key; rows are matched on
    #: every column, one row per change (the source may hold identical rows). ``none``: no replica identity
    #: at all (PostgreSQL ``keyless: insert-only``): only INSERT and TRUNCATE travel for the table.
    identity: str = "key"

    @property
    def key_columns(self) -> tuple[Column, ...]:
        """Key columns in key order."""
        return tuple(sorted((c for c in self.columns if c.key_position), key=lambda c: c.key_position))

    @property
    def key_indexes(self) -> tuple[int, ...]:
        """Indexes (into ``columns``) of the key columns, in key order."""
        order = {c.name: i for i, c in enumerate(self.columns)}
        return tuple(order[c.name] for c in self.key_columns)


@dataclass(frozen=True, slots=True)
class PartRef:
    """A value of a row that travelled in parts (:class:`ValuePart` chunks before the row's chunk)."""

    row: int
    column: int
    count: int
    total_bytes: int
    #: CRC-32C of the whole value's bytes (UTF-8 for text), checked when it is put together again.
    crc: int


@dataclass(frozen=True, slots=True)
class ValuePart:
    """One part of a value too large for one message (the chunk that carries it has no changes)."""

    table: str
    row: int
    column: int
    index: int
    count: int
    total_bytes: int
    data: bytes


@dataclass(slots=True)
class RowChange:
    """One row operation. ``values`` is the new image; ``old_key`` the key before the change.

    ``parts`` names the values that travelled in parts: their place in ``values`` holds None.
    """

    table: str
    op: Op
    values: list[Value] = field(default_factory=list)
    old_key: list[Value] | None = None
    parts: list[PartRef] | None = None


@dataclass(slots=True)
class TxnChunk:
    """A committed source transaction, or chunk ``chunk_index`` of one (``last`` carries the commit)."""

    txn_id: str
    commit: Position
    commit_time_us: int
    chunk_index: int
    last: bool
    changes: list[RowChange]
    first_row: int = 0
    #: On the last chunk: the position the source may forget up to once this entry is durable.
    confirm: str = ""
    #: A part of a large value (then ``changes`` is empty).
    part: ValuePart | None = None

    @property
    def is_checkpoint(self) -> bool:
        """An empty entry that only records the progress of an idle source."""
        return self.txn_id == "" and not self.changes


@dataclass(frozen=True, slots=True)
class EpochMarker:
    """Starts a new reign on the redo topic."""

    new_epoch: int
    primary: str
    position: str


@dataclass(frozen=True, slots=True)
class SequenceValue:
    """One sequence of the source: the last value it handed out (``is_called`` False: not handed out yet)."""

    name: str
    last_value: int
    is_called: bool = True


@dataclass(frozen=True, slots=True)
class SequenceValues:
    """The source's sequences as read at ``read_time_us`` (schema v5).

    A standby moves each one forward only, when the entry is due (``read_time_us`` + its delay): a
    promoted standby then never hands out a value the primary already did. ``request`` names the
    control request (publish-sequences) it answers, "" for a periodic publication.
    """

    read_time_us: int
    values: tuple[SequenceValue, ...]
    position: str = ""
    request: str = ""


@dataclass(frozen=True, slots=True)
class SchemaStep:
    """One thing a standby does to follow a schema change (see :class:`SchemaChange`).

    ``action``: ``sql`` (run ``sql``; a failure stops the standby), ``optional-sql`` (run ``sql``; a failure is
    logged, ``detail`` says why that is safe), ``table`` (apply the shape of ``object`` carried in
    :attr:`SchemaChange.tables`), ``rename-table`` (``object`` is now called ``detail``), ``drop-table`` and
    ``drop-schema`` (run ``sql`` only on a standby that follows drops), ``resync-table`` (copy ``object``
    again from the source; ``detail`` says why).
    """

    action: str
    object: str
    sql: str = ""
    detail: str = ""


#: The actions of :class:`SchemaStep`.
STEP_ACTIONS: Final = ("sql", "optional-sql", "table", "rename-table", "drop-table", "drop-schema", "resync-table")


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """A DDL statement of the source, at its place inside its source transaction (schema v5).

    The capture publishes it after the transaction's first chunk, so a standby applies it inside that
    transaction (exactly once with the state row, and no earlier than the transaction's delay). ``seq``
    numbers the schema changes of one transaction: a capture that restarted may publish one again, and
    the standby applies each ``(commit, seq)`` once. ``statement`` is informational; standbys run ``steps``.
    """

    commit: Position
    seq: int
    tag: str
    steps: tuple[SchemaStep, ...] = ()
    tables: tuple[TableMeta, ...] = ()
    statement: str = ""
    search_path: str = ""
    facts: str = ""


Body = TxnChunk | TableMeta | EpochMarker | SequenceValues | SchemaChange


@dataclass(frozen=True, slots=True)
class RedoEntry:
    """One message of the redo topic."""

    group: str
    engine: str
    epoch: int
    body: Body


_UNCHANGED_OUT: Final[tuple[str, dict[str, Any]]] = ("ark.redo.Unchanged", {})


def _value_out(value: Value) -> Any:
    return _UNCHANGED_OUT if value is UNCHANGED else value


def _value_in(value: Any) -> Value:
    return UNCHANGED if isinstance(value, dict) else value


def column_record(column: Column) -> dict[str, Any]:
    """The Avro record (also the stored JSON) of one column."""
    return {"name": column.name, "type": column.type, "source_type": column.source_type,
            "nullable": column.nullable, "key_position": column.key_position,
            "default_expr": column.default_expr, "missing_value": column.missing_value,
            "column_id": column.column_id, "auto_increment": column.auto_increment}


def meta_record(meta: TableMeta) -> dict[str, Any]:
    """The Avro record of a table's shape."""
    return {"table": meta.table, "version": meta.version, "position": meta.position, "identity": meta.identity,
            "columns": [column_record(c) for c in meta.columns]}


def meta_from_record(rec: dict[str, Any]) -> TableMeta:
    """The shape of an Avro TableMeta record."""
    return TableMeta(table=rec["table"], version=rec["version"], position=rec["position"],
                     identity=rec.get("identity", "key"), columns=tuple(Column(**c) for c in rec["columns"]))


def to_record(entry: RedoEntry) -> dict[str, Any]:
    """The Avro record (dict) of ``entry`` for :func:`schemas.envelope.encode`."""
    body = entry.body
    record_body: Any
    if isinstance(body, TxnChunk):
        changes = []
        for ch in body.changes:
            values = [_value_out(v) for v in ch.values]
            parts = None if ch.parts is None else [
                {"row": p.row, "column": p.column, "count": p.count, "total_bytes": p.total_bytes, "crc": p.crc}
                for p in ch.parts]
            changes.append({"table": ch.table, "op": ch.op.value, "values": values, "old_key": ch.old_key,
                            "parts": parts})
        part = body.part
        part_record = None if part is None else {
            "table": part.table, "row": part.row, "column": part.column, "index": part.index, "count": part.count,
            "total_bytes": part.total_bytes, "data": part.data}
        record_body = ("ark.redo.Transaction", {
            "txn_id": body.txn_id,
            "commit_position": body.commit.text,
            "commit_position_key": body.commit.key,
            "commit_time_us": body.commit_time_us,
            "chunk_index": body.chunk_index,
            "last": body.last,
            "confirm_position": body.confirm,
            "first_row": body.first_row,
            "row_count": len(body.changes),
            "changes": changes,
            "part": part_record,
        })
    elif isinstance(body, TableMeta):
        record_body = ("ark.redo.TableMeta", meta_record(body))
    elif isinstance(body, SchemaChange):
        record_body = ("ark.redo.SchemaChange", {
            "commit_position": body.commit.text, "commit_position_key": body.commit.key, "seq": body.seq,
            "tag": body.tag, "statement": body.statement, "search_path": body.search_path,
            "steps": [{"action": st.action, "object": st.object, "sql": st.sql, "detail": st.detail}
                      for st in body.steps],
            "tables": [meta_record(m) for m in body.tables], "facts": body.facts,
        })
    elif isinstance(body, SequenceValues):
        record_body = ("ark.redo.SequenceValues", {
            "read_time_us": body.read_time_us, "position": body.position, "request": body.request,
            "sequences": [{"name": v.name, "last_value": v.last_value, "is_called": v.is_called}
                          for v in body.values]})
    else:
        record_body = ("ark.redo.EpochMarker", {
            "new_epoch": body.new_epoch, "primary": body.primary, "position": body.position})
    return {"group": entry.group, "engine": entry.engine, "epoch": entry.epoch, "body": record_body}


def from_record(record: dict[str, Any]) -> RedoEntry:
    """The typed entry of a decoded Avro record (fastavro returns unions untagged)."""
    body = record["body"]
    parsed: Body
    if "changes" in body:
        changes = [
            RowChange(
                table=ch["table"],
                op=Op(ch["op"]),
                values=[_value_in(v) for v in ch["values"]],
                old_key=ch["old_key"],
                parts=None if ch.get("parts") is None else [PartRef(**p) for p in ch["parts"]],
            )
            for ch in body["changes"]
        ]
        raw_part = body.get("part")
        parsed = TxnChunk(
            txn_id=body["txn_id"],
            commit=Position(body["commit_position"], bytes(body["commit_position_key"])),
            commit_time_us=body["commit_time_us"],
            chunk_index=body["chunk_index"],
            last=body["last"],
            changes=changes,
            first_row=body["first_row"],
            confirm=body["confirm_position"],
            part=None if raw_part is None else ValuePart(**raw_part),
        )
    elif "columns" in body:
        parsed = meta_from_record(body)
    elif "steps" in body:
        parsed = SchemaChange(
            commit=Position(body["commit_position"], bytes(body["commit_position_key"])), seq=body["seq"],
            tag=body["tag"], statement=body.get("statement", ""), search_path=body.get("search_path", ""),
            steps=tuple(SchemaStep(**st) for st in body["steps"]),
            tables=tuple(meta_from_record(m) for m in body.get("tables") or ()), facts=body.get("facts", ""),
        )
    elif "sequences" in body:
        parsed = SequenceValues(read_time_us=body["read_time_us"], position=body.get("position", ""),
                                request=body.get("request", ""),
                                values=tuple(SequenceValue(**v) for v in body["sequences"]))
    else:
        parsed = EpochMarker(new_epoch=body["new_epoch"], primary=body["primary"], position=body["position"])
    return RedoEntry(group=record["group"], engine=record["engine"], epoch=record["epoch"], body=parsed)
