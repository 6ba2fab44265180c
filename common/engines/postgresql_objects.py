"""Which PostgreSQL objects a standby needs besides the replicated tables' rows, read from the catalog.

One definition, used by the three places that must agree on it: the schema copy of ``ark sync`` and of a
table resync (producers/postgresql/dump.py), the capture's sequence publication
(producers/postgresql/capture.py) and ``ark check --promotable`` (consumers/postgresql/promotable.py).

* **Tables**: the replicated tables (the roots: a partition whose partitioned table is replicated is
  part of its root, whose rows it holds) and every partition below them.
* **Schemas**: those of the tables, and those of the types and functions the tables use, directly or
  through other objects (a domain over an enum in another schema), found by following ``pg_depend``.
* **Extensions**: those whose objects the tables or the objects of those schemas use (a column of
  type ``citext``, an index with an ``hstore`` operator class, a function taking ``hstore``).
* **Sequences**: every sequence of those schemas except the ones that belong to a table that is not
  replicated (serial and identity sequences of other tables).

Only catalog queries, no driver: ``query(sql, params)`` is whatever connection the caller has
(psycopg 2 for the capture, psycopg 3 elsewhere; both take ``%s`` parameters). Every query here is a
cheap read of the catalog that takes no lock on user tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.snapshot import Extension

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

#: Schemas that hold no replicated object (the catalog's, and Ark's own on a loopback standby).
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "ark", "ark_resync")

#: (oid, schema, name) of the given tables and of every partition below them.
TABLES_SQL = """
WITH roots AS (
  SELECT c.oid FROM unnest(%s::text[], %s::text[]) AS r(nsp, rel)
  JOIN pg_namespace n ON n.nspname = r.nsp JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = r.rel
  WHERE c.relkind IN ('r', 'p')
), tree AS (
  SELECT oid FROM roots
  UNION
  SELECT t.relid FROM roots r, pg_partition_tree(r.oid) t WHERE t.relid IS NOT NULL
)
SELECT c.oid::int8, n.nspname, c.relname FROM tree JOIN pg_class c ON c.oid = tree.oid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')
ORDER BY n.nspname, c.relname
"""

# What the tables (and the objects that belong to them: indexes, constraints, defaults, triggers, owned
# sequences) use, followed through pg_depend, and what the non-extension types and functions of the given
# schemas use (not their array types: an extension type's array type is not a member of the extension). The
# walk never enters another relation (a foreign key names a table that may not be replicated), and stops at
# extension members (deptype 'e' names their extension; their own schema is the extension's business).
_WALK_SQL = """
WITH RECURSIVE start(classid, objid) AS (
    SELECT 'pg_class'::regclass::oid, t FROM unnest(%(tables)s::oid[]) t
  UNION
    SELECT d.classid, d.objid FROM pg_depend d
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY (%(tables)s::oid[]) AND d.deptype IN ('n', 'a', 'i')
  UNION
    SELECT 'pg_type'::regclass::oid, t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = ANY (%(schemas)s::text[]) AND t.typrelid = 0
      AND NOT EXISTS (SELECT FROM pg_type e WHERE e.typarray = t.oid)
  UNION
    SELECT 'pg_proc'::regclass::oid, p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ANY (%(schemas)s::text[])
), walk(classid, objid) AS (
    SELECT s.classid, s.objid FROM start s
    WHERE NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = s.classid AND e.objid = s.objid AND e.deptype = 'e')
       OR s.classid = 'pg_class'::regclass
  UNION
    SELECT d.refclassid, d.refobjid FROM walk w JOIN pg_depend d ON d.classid = w.classid AND d.objid = w.objid
    WHERE d.deptype IN ('n', 'a', 'i')
      AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = w.classid AND e.objid = w.objid AND e.deptype = 'e')
      AND NOT (d.refclassid = 'pg_class'::regclass AND d.refobjid <> ALL (%(tables)s::oid[])
               AND EXISTS (SELECT FROM pg_class r WHERE r.oid = d.refobjid AND r.relkind IN ('r', 'p', 'f', 'v', 'm')))
)
SELECT 'extension', e.extname, en.nspname, e.extversion
FROM walk w JOIN pg_depend d ON d.classid = w.classid AND d.objid = w.objid AND d.deptype = 'e'
JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND e.oid = d.refobjid
JOIN pg_namespace en ON en.oid = e.extnamespace
UNION
SELECT 'schema', n.nspname, '', '' FROM walk w JOIN pg_namespace n ON w.classid = 'pg_namespace'::regclass
AND n.oid = w.objid
"""

#: (schema, name) of the sequences of the schemas, less those that belong to a table not among the tables.
SEQUENCES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname = ANY (%s::text[])
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                  AND d.refobjid <> ALL (%s::oid[]))
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid
                  AND e.deptype = 'e')
ORDER BY 1, 2
"""

#: (schema.name, last_value) of the given sequences that were used; NULL when the user may not read one.
SEQUENCE_VALUES_SQL = """
SELECT s.schemaname || '.' || s.sequencename, s.last_value::int8
FROM pg_sequences s JOIN unnest(%s::text[], %s::text[]) AS q(nsp, rel)
  ON s.schemaname = q.nsp AND s.sequencename = q.rel
WHERE s.last_value IS NOT NULL
"""

#: When the values were read, on the server's clock (µs since the epoch), and the WAL position then.
READ_TIME_SQL = """
SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8,
       CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END
"""


@dataclass(frozen=True, slots=True)
class ReplicatedObjects:
    """What a standby of these tables needs (see the module docstring)."""

    #: Every replicated table: (oid, "schema.name"), roots and partitions.
    tables: tuple[tuple[int, str], ...]
    schemas: tuple[str, ...]
    extensions: tuple[Extension, ...]
    #: "schema.name" of the sequences.
    sequences: tuple[str, ...]

    @property
    def table_oids(self) -> list[int]:
        """The oids of :attr:`tables`."""
        return [oid for oid, _ in self.tables]


def split_name(name: str) -> tuple[str, str]:
    """``schema.name`` split at the first dot (the convention of every Ark table name)."""
    schema, dot, rest = name.partition(".")
    return (schema, rest) if dot else ("public", name)


def replicated_objects(query: Query, roots: Sequence[str]) -> ReplicatedObjects:
    """What a standby of the tables ``roots`` (``schema.table``) needs, as the connection behind ``query`` sees it."""
    pairs = [split_name(r) for r in roots]
    rows = query(TABLES_SQL, ([p[0] for p in pairs], [p[1] for p in pairs]))
    tables = tuple((int(oid), f"{nsp}.{rel}") for oid, nsp, rel in rows)
    oids = [oid for oid, _ in tables]
    schemas = {split_name(name)[0] for _, name in tables}
    extensions: dict[str, Extension] = {}
    for _round in range(4):  # a function of schema A may take a type of schema B: follow until nothing new
        found = query(_WALK_SQL, {"tables": oids, "schemas": sorted(schemas)})  # type: ignore[arg-type]
        more = {str(name) for kind, name, _s, _v in found if kind == "schema"} - set(SYSTEM_SCHEMAS)
        for kind, name, schema, version in found:
            if kind == "extension" and name != "plpgsql":  # plpgsql is in every database
                extensions[str(name)] = Extension(str(name), str(schema), str(version))
        if more <= schemas:
            break
        schemas |= more
    seq_rows = query(SEQUENCES_SQL, (sorted(schemas), oids))
    return ReplicatedObjects(tables=tables, schemas=tuple(sorted(schemas)),
                             extensions=tuple(sorted(extensions.values(), key=lambda e: e.name)),
                             sequences=tuple(f"{nsp}.{rel}" for nsp, rel in seq_rows))


def sequence_values(query: Query, sequences: Sequence[str]) -> tuple[int, str, list[tuple[str, int]]]:
    """(read time µs, WAL position, [(schema.name, last_value)]) of the used ones among ``sequences``."""
    rows: list[tuple[Any, ...]] = []
    if sequences:
        pairs = [split_name(s) for s in sequences]
        rows = query(SEQUENCE_VALUES_SQL, ([p[0] for p in pairs], [p[1] for p in pairs]))
    # Read after the values: a delayed standby must not see them before read time + delay.
    time_row = query(READ_TIME_SQL, ())
    read_us, position = int(time_row[0][0]), str(time_row[0][1] or "")
    return read_us, position, sorted((str(name), int(value)) for name, value in rows)
