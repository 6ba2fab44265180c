"""From pgoutput Relation messages to TableMeta, and from row messages to RowChange entries.

Keys: with replica identity DEFAULT or USING INDEX the key is the columns pgoutput flags (in the
order of the primary key when they are exactly the primary key). With FULL pgoutput flags every
column, so the key is the table's primary key, else its first unique index on NOT NULL columns,
else all columns. Nullability and the declared names of non-builtin types come from the catalog
(as it is now, which may be newer than the decoded WAL after DDL). So do each column's attnum,
default expression and missing value (what a standby needs to follow ADD COLUMN ... DEFAULT and
RENAME COLUMN exactly), but only for columns the catalog still has under the same name:
otherwise they are left unknown (0 / None) and the standby decides conservatively (see
consumers/postgresql/ddl.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from producers.postgresql import pgoutput
from producers.postgresql.catalog import ColumnDetails
from producers.postgresql.types import Converter, converters, describe, is_known
from schemas.entries import UNCHANGED, Column, Op, RowChange, TableMeta, Value


@dataclass(slots=True)
class Rel:
    """What capture keeps per relation id: its entry metadata, converters and key columns."""

    table: str
    meta: TableMeta
    convs: tuple[Converter, ...]
    key_idx: tuple[int, ...]


def row_change(rel: Rel, m: pgoutput.Insert | pgoutput.Update | pgoutput.Delete) -> RowChange:
    """The RowChange of one pgoutput row message parsed with ``rel.convs`` (old key in key order)."""
    key_idx = rel.key_idx
    if isinstance(m, pgoutput.Insert):
        return RowChange(rel.table, Op.INSERT, m.new)
    if isinstance(m, pgoutput.Delete):
        return RowChange(rel.table, Op.DELETE, [], [m.old[i] for i in key_idx])
    values = m.new
    old_key: list[Value] | None = None
    if m.old is not None:
        candidate = [m.old[i] for i in key_idx]
        # Without a unique key the old row is the only way to find the row: always send it.
        if rel.meta.identity == "full" or any(values[i] is not UNCHANGED and values[i] != o
                                              for i, o in zip(key_idx, candidate, strict=True)):
            old_key = candidate
    return RowChange(rel.table, Op.UPDATE, values, old_key)


def build_relation(r: pgoutput.Relation, details: ColumnDetails | None, type_names: dict[int, str],
                   position: str) -> Rel:
    """The Rel of a Relation message; ``type_names`` maps OIDs named by Type messages."""
    table = f"{r.namespace or 'pg_catalog'}.{r.name}"
    names = [c.name for c in r.columns]
    flagged = tuple(c.name for c in r.columns if c.is_key)
    identity = "key"
    if r.replica_identity == "f":  # every column is flagged: use the real key, else all columns
        key = details.key if details and details.key else tuple(names)
        identity = "key" if details and details.key else "full"
    elif details and details.key and set(details.key) == set(flagged):
        key = details.key
    else:
        key = flagged
    if not key:
        identity = "none"  # no replica identity: only its INSERTs and TRUNCATEs are published (keyless policy)
    # Defaults and attnums only where the catalog still has the decoded column (see ColumnDetails.trusted).
    trusted = details.trusted([c.name for c in r.columns]) if details else set()
    columns = []
    for c in r.columns:
        fallback = type_names.get(c.type_oid) or (details.declared.get(c.name) if details else None)
        neutral, declared = describe(c.type_oid, c.typmod, fallback)
        if not is_known(c.type_oid) and details and c.name in details.declared:
            declared = details.declared[c.name]
        key_pos = key.index(c.name) + 1 if c.name in key else 0
        # Key columns of a real key are NOT NULL; with identity "full" every column is a key column and keeps
        # its own nullability.
        nullable = not (key_pos and identity == "key") and not (details and details.not_null.get(c.name, False))
        columns.append(Column(c.name, neutral, declared, nullable, key_pos,
                              default_expr=details.defaults.get(c.name) if details and c.name in trusted else None,
                              missing_value=details.missing.get(c.name) if details and c.name in trusted else None,
                              column_id=details.attnums[c.name] if details and c.name in trusted else 0))
    shape = repr((table, identity, [(c.name, c.type, c.source_type, c.nullable, c.key_position, c.default_expr,
                                     c.missing_value, c.column_id) for c in columns]))
    version = hashlib.sha256(shape.encode()).hexdigest()[:16]
    meta = TableMeta(table, tuple(columns), version, position, identity)
    return Rel(table, meta, converters([c.type_oid for c in r.columns]), meta.key_indexes)
