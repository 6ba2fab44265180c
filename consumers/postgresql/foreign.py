"""Values of another engine's columns that PostgreSQL cannot store, found before they reach the server.

A column whose declared type is not PostgreSQL's own (:func:`consumers.postgresql.sql.is_native`) comes
from another engine, whose values may lie outside what the mapped PostgreSQL type holds: MariaDB's zero
dates, a NUL character in a string. PostgreSQL would refuse them too,
but with a message that quotes the value and does not name the column; here the standby stops with a
data error naming the table and the column (never the value). PostgreSQL's own columns are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence

from common.snapshot import TableRows
from consumers.errors import DataApplyError
from consumers.postgresql.sql import is_native
from schemas.entries import Op, RowChange, TableMeta, Value

Check = Callable[[str], str]

_DATE = re.compile(r"^(\d+)-(\d\d)-(\d\d)")


def _date(value: str) -> str:
    m = _DATE.match(value)
    if m and (int(m[1]) == 0 or int(m[2]) == 0 or int(m[3]) == 0):
        return "a zero date (year, month or day 0) has no PostgreSQL value"
    return ""


def _text(value: str) -> str:
    return "a NUL character cannot be stored in PostgreSQL text" if "\x00" in value else ""


_BY_TYPE: dict[str, Check] = {"date": _date, "timestamp": _date, "timestamptz": _date,
                              "string": _text, "json": _text, "other": _text}


def checks(meta: TableMeta) -> list[tuple[int, Check]]:
    """(column index, check) of ``meta``'s columns that come from another engine and may need one."""
    return [(i, _BY_TYPE[c.type]) for i, c in enumerate(meta.columns) if c.type in _BY_TYPE and not is_native(c)]


def _refuse(meta: TableMeta, index: int, why: str, txn_id: str = "", position: str = "") -> DataApplyError:
    col = meta.columns[index]
    where = f" (source transaction {txn_id} at {position})" if txn_id else ""
    return DataApplyError(f"column {col.name} ({col.type}, {col.source_type}) of {meta.table} cannot be stored on "
                          f"the standby: {why}{where}", table=meta.table, txn_id=txn_id, position=position,
                          fix=f"correct the value on the primary, or leave {meta.table} out of primary.tables for "
                              "this standby")


def check_row(meta: TableMeta, found: Sequence[tuple[int, Check]], values: Sequence[Value], txn_id: str = "",
              position: str = "") -> None:
    """Raise DataApplyError for the first value of ``values`` PostgreSQL cannot store."""
    for i, check in found:
        value = values[i] if i < len(values) else None
        if isinstance(value, str):
            why = check(value)
            if why:
                raise _refuse(meta, i, why, txn_id, position)


def check_changes(metas: Mapping[str, TableMeta], cache: dict[tuple[str, str], list[tuple[int, Check]]],
                  changes: Sequence[RowChange], txn_id: str, position: str) -> None:
    """Check the new values of ``changes`` (``cache``: checks by table and shape version)."""
    for change in changes:
        meta = metas.get(change.table)
        if meta is None or change.op in (Op.DELETE, Op.TRUNCATE):
            continue
        found = cache.get((meta.table, meta.version))
        if found is None:
            found = cache[(meta.table, meta.version)] = checks(meta)
        if found:
            check_row(meta, found, change.values, txn_id, position)


class CheckedRows(TableRows):
    """A snapshot's rows of another engine's table, checked as they are loaded (no native bulk format)."""

    def __init__(self, rows: TableRows, found: Sequence[tuple[int, Check]]) -> None:
        super().__init__(rows.meta)
        self._rows, self._found = rows, found

    def values(self) -> Iterator[list[Value]]:
        for values in self._rows.values():
            check_row(self.meta, self._found, values)
            yield values
