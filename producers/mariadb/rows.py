"""Row events -> RowChange entries, and the per-table state capture keeps for a table map.

A rows event (v1, as MariaDB writes it, or v2) holds one or more row images of one table. With
``binlog_row_image=FULL`` every image has every column. An UPDATE carries the image before and
after; its ``old_key`` is the before image's key when the key changed (as PostgreSQL's capture
does), and always for a table of identity ``full`` (every column is its key). A DELETE carries the
before image: its key is the ``old_key``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from producers.mariadb import binlog
from producers.mariadb.tablemap import TableMap
from producers.mariadb.values import Decoder, decoders, present_columns, read_image
from schemas.entries import Op, RowChange, TableMeta

_OPS = {binlog.WRITE_ROWS_V1: Op.INSERT, binlog.WRITE_ROWS_V2: Op.INSERT,
        binlog.UPDATE_ROWS_V1: Op.UPDATE, binlog.UPDATE_ROWS_V2: Op.UPDATE,
        binlog.DELETE_ROWS_V1: Op.DELETE, binlog.DELETE_ROWS_V2: Op.DELETE}


@dataclass(slots=True)
class TableState:
    """A captured table as of its last table map: the map, its decoders and the published shape."""

    map: TableMap
    decs: tuple[Decoder, ...]
    meta: TableMeta
    key_idx: tuple[int, ...]

    @classmethod
    def build(cls, table_map: TableMap, meta: TableMeta) -> TableState:
        """Decoders and key indexes of a table map whose TableMeta is ``meta``."""
        return cls(table_map, decoders(table_map), meta, meta.key_indexes)


def rows_table_id(body: bytes, table_id_size: int = 6) -> int:
    """The table id a rows event refers to."""
    return int.from_bytes(body[:table_id_size], "little")


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def row_changes(etype: int, body: bytes, state: TableState, table_id_size: int = 6) -> Iterator[RowChange]:
    """The RowChanges of one rows event of ``state``'s table, in order."""
    op = _OPS[etype]
    pos = table_id_size + 2  # table id, flags
    if etype in (binlog.WRITE_ROWS_V2, binlog.UPDATE_ROWS_V2, binlog.DELETE_ROWS_V2):
        extra = int.from_bytes(body[pos:pos + 2], "little")
        pos += extra  # the length counts its own two bytes
    count, pos = _lenenc(body, pos)
    nbytes = (count + 7) // 8
    before = present_columns(body[pos:pos + nbytes], count)
    pos += nbytes
    after = before
    if op is Op.UPDATE:
        after = present_columns(body[pos:pos + nbytes], count)
        pos += nbytes
    decs, table, key_idx = state.decs, state.meta.table, state.key_idx
    full = state.meta.identity == "full"
    if count != len(decs):
        raise ValueError(f"rows event of {table} has {count} columns, its table map {len(decs)}")
    end = len(body)
    while pos < end:
        if op is Op.INSERT:
            values, pos = read_image(body, pos, decs, after)
            yield RowChange(table, Op.INSERT, values)
        elif op is Op.DELETE:
            old, pos = read_image(body, pos, decs, before)
            yield RowChange(table, Op.DELETE, [], [old[i] for i in key_idx])
        else:
            old, pos = read_image(body, pos, decs, before)
            values, pos = read_image(body, pos, decs, after)
            old_key = [old[i] for i in key_idx]
            # Without a unique key (identity "full") the old row is the only way to find the row: always send it.
            changed = full or any(values[i] != o for i, o in zip(key_idx, old_key, strict=True))
            yield RowChange(table, Op.UPDATE, values, old_key if changed else None)
