"""One description of a PostgreSQL table, whether it comes from the stream or from a snapshot.

The stream describes a table with pgoutput's Relation message (columns, type OIDs, the replica
identity's columns) plus catalog details (:func:`catalog.column_details`), through
:func:`relations.build_relation`. A snapshot has no Relation message, so :func:`snapshot_relation`
builds the one the server would send for the table as it stands in the snapshot (same columns, same
order, same replica-identity flags), and the very same :func:`build_relation` turns it into a
:class:`TableMeta`. One key rule (the replica identity), one type map, one shape hash: a standby
synced from a snapshot and one that followed the stream cannot disagree about which row a change
names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from producers.postgresql import pgoutput
from producers.postgresql.catalog import column_details, query
from producers.postgresql.relations import Rel, build_relation
from schemas.entries import TableMeta

#: Schemas that never hold replicated tables (the catalog's and Ark's own on a loopback standby).
_SKIP_SCHEMAS = ("pg_catalog", "information_schema", "ark", "ark_resync", "ark_capture")

# Ordinary and partitioned tables; a partition also names its ancestors (a partition of a replicated table is
# part of it: the stream names its root, publish_via_partition_root).
_RELATIONS_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident,
       CASE WHEN c.relispartition THEN ARRAY(
         SELECT an.nspname || '.' || ac.relname FROM pg_partition_ancestors(c.oid) a
         JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
         WHERE a.relid <> c.oid) ELSE '{}'::text[] END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
  AND n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY n.nspname, c.relname
"""
# The columns pgoutput sends: not dropped, not generated, in attnum order.
_COLUMNS_SQL = """
SELECT a.attname, a.atttypid::int, a.atttypmod, a.attnum
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""
# The replica identity's columns, as pgoutput flags them: DEFAULT = the primary key's (only an immediate one:
# PostgreSQL ignores a DEFERRABLE primary key as replica identity), INDEX = that index's.
_IDENTITY_SQL = """
SELECT i.indkey::int2[] FROM pg_index i
WHERE i.indrelid = %s
  AND CASE %s WHEN 'd' THEN i.indisprimary AND i.indimmediate WHEN 'i' THEN i.indisreplident ELSE false END
"""


def snapshot_relation(conn: Any, relid: int, namespace: str, name: str, replident: str) -> pgoutput.Relation:
    """The Relation message pgoutput would send for this table now (as the connection's snapshot sees it)."""
    identity: set[int] = set()
    if replident in ("d", "i"):
        rows = query(conn, _IDENTITY_SQL, (relid, replident))
        identity = set(rows[0][0]) if rows else set()
    columns = []
    for attname, typoid, typmod, attnum in query(conn, _COLUMNS_SQL, (relid,)):
        flagged = replident == "f" or attnum in identity
        columns.append(pgoutput.RelationColumn(pgoutput.COLUMN_KEY if flagged else 0, str(attname), int(typoid),
                                               int(typmod)))
    return pgoutput.Relation(relid, namespace, name, replident, tuple(columns))


def describe_relation(conn: Any, relid: int, namespace: str, name: str, replident: str) -> Rel:
    """The table as the stream would describe it (position left empty: a snapshot has none)."""
    rel = snapshot_relation(conn, relid, namespace, name, replident)
    return build_relation(rel, column_details(conn, relid), {}, "")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def matching_relations(conn: Any, patterns: Sequence[str]) -> list[tuple[int, str, str, str]]:
    """(oid, schema, name, replica identity) of the logged tables whose ``schema.table`` matches: ordinary and
    partitioned tables, less the partitions of a matching table (its rows are the partitioned table's)."""
    rows = query(conn, _RELATIONS_SQL, (list(_SKIP_SCHEMAS),))
    return [(int(oid), str(nsp), str(rel), str(ident)) for oid, nsp, rel, ident, ancestors in rows
            if _matches(f"{nsp}.{rel}", patterns) and not any(_matches(a, patterns) for a in ancestors or ())]


def describe_tables(conn: Any, patterns: Sequence[str]) -> list[TableMeta]:
    """Every table matching ``patterns``, described exactly as the stream describes it."""
    return [describe_relation(conn, *found).meta for found in matching_relations(conn, patterns)]


def describe_rels(conn: Any, patterns: Sequence[str]) -> list[Rel]:
    """Like :func:`describe_tables`, with each table's value converters (to read its rows)."""
    return [describe_relation(conn, *found) for found in matching_relations(conn, patterns)]
