"""The primary's objects on a PostgreSQL standby: its schema copy (``ark sync``, table resync), and its sequences.

**Schema copy.** The definitions come from the primary's pg_dump (:mod:`producers.postgresql.dump`), in
its order and in its own SQL. They run in the applier's open transaction, so a sync or a resync stays
one transaction: if anything fails, nothing of it remains. Each definition runs inside a savepoint: an
object that already exists (a standby synced before, a table resynced) is kept as it is and counted,
anything else that fails stops the work with the definition named. What "already exists" means is
narrow: the SQLSTATEs of a duplicate schema, relation, object or function, and for a primary key or a
partition attachment the errors PostgreSQL gives when the table already has one. Differences between an
existing object and the primary's are what ``ark check --promotable`` reports. Privileges that name a role
the standby cluster lacks are left out with a warning: roles belong to the cluster, not to the copy.

The tables of the copy that exist already are emptied first (a DELETE, so readers keep the old rows
until the commit): they are being replaced, and a partition the primary added cannot be attached while
the standby's default partition holds rows of its range.

Extensions come first: one the objects use is created with ``CREATE EXTENSION`` when the standby's
server has it (PostgreSQL's own, such as hstore and citext, come with the server), and its absence is an
error that names the package to install.

**Sequences** move forward only: ``setval`` where the standby's value is behind the primary's (lower, or
higher for a descending sequence).
``setval`` is not transactional (PostgreSQL never takes a sequence back), which is harmless here: the
values are the primary's, and a sequence ahead of its rows is what a standby needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from common.errors import TargetError
from common.snapshot import Extension, ObjectDef, SchemaObjects
from consumers.postgresql.ddl import StandbyColumn
from consumers.postgresql.sql import qualified, quote_ident, quote_literal, split_table
from schemas.entries import SequenceValue, TableMeta

log = logging.getLogger(__name__)

#: duplicate_schema, duplicate_table (any relation), duplicate_object, duplicate_function.
_EXISTS = frozenset({"42P06", "42P07", "42710", "42723"})
#: More "it is there already", only for these kinds: a table's second primary key (invalid_table_definition),
#: a partition attached again (wrong_object_type: "is already a partition").
_EXISTS_FOR_KIND = {"42P16": ("CONSTRAINT",), "42809": ("TABLE ATTACH",)}
#: Privileges: the roles they name are the cluster's, and may be missing on the standby's.
_GRANTS = ("ACL", "DEFAULT ACL")
#: Settings pg_dump's SQL assumes (every name it writes is schema-qualified; function bodies refer to objects
#: created later), restored after the copy so that the rest of the transaction runs as before.
_SETTINGS = {"search_path": "", "check_function_bodies": "off", "client_min_messages": "warning"}


@dataclass
class Created:
    """What a schema copy did."""

    created: int = 0
    existing: int = 0
    #: Tables this copy created (empty, with the primary's shape): their rows can be loaded as they are.
    tables: set[str] = field(default_factory=set)
    extensions: list[str] = field(default_factory=list)
    #: Privileges that name a role the standby cluster lacks.
    left_out: list[str] = field(default_factory=list)


def _first_line(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None else None) or str(exc)
    return " ".join(text.split())


def _exists(exc: psycopg.Error, kind: str) -> bool:
    state = exc.sqlstate or ""
    return state in _EXISTS or kind in _EXISTS_FOR_KIND.get(state, ())


def ensure_extensions(conn: psycopg.Connection[Any], extensions: Sequence[Extension], standby: str) -> list[str]:
    """Create the extensions the objects use that the standby lacks; the names of those created."""
    made = []
    for ext in extensions:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [ext.name]).fetchone():
            continue
        versions = [str(r[0]) for r in conn.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = %s", [ext.name]).fetchall()]
        if not versions:
            raise TargetError(f"extension {ext.name} (version {ext.version} on the primary, used by the replicated "
                              f"objects) is not installed on the host of standby {standby}",
                              fix=f"install it there (PostgreSQL's own extensions such as {ext.name} come with the "
                                  "server package, e.g. apt-get install postgresql-15; others with their own "
                                  "package), then run the command again")
        version = f" VERSION {quote_literal(ext.version)}" if ext.version in versions else ""
        conn.execute("SAVEPOINT ark_extension")
        try:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(ext.schema)}")
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS {quote_ident(ext.name)} WITH SCHEMA "
                         f"{quote_ident(ext.schema)}{version} CASCADE")
        except psycopg.Error as exc:
            conn.execute("ROLLBACK TO SAVEPOINT ark_extension")
            raise TargetError(f"standby {standby} cannot create extension {ext.name}: {_first_line(exc)}",
                              fix=f"create it there as a superuser (CREATE EXTENSION {ext.name} WITH SCHEMA "
                                  f"{ext.schema}), then run the command again") from None
        conn.execute("RELEASE SAVEPOINT ark_extension")
        made.append(ext.name)
        log.info("standby %s: created extension %s in schema %s", standby, ext.name, ext.schema)
    return made


def create(conn: psycopg.Connection[Any], objects: SchemaObjects, *, after_rows: bool, standby: str,
           only: Callable[[ObjectDef], bool] = lambda d: True) -> Created:
    """Run the definitions of one side of the rows (see the module docstring), in the open transaction."""
    done = Created()
    if not after_rows:
        done.extensions = ensure_extensions(conn, objects.extensions, standby)
    defs = [d for d in (objects.after_rows if after_rows else objects.before_rows) if only(d)]
    if not defs:
        return done
    if not after_rows:
        _empty(conn, [d.table for d in defs if d.kind == "TABLE" and d.table])
    saved = conn.execute("SELECT " + ", ".join(f"current_setting({quote_literal(n)})" for n in _SETTINGS)).fetchone()
    assert saved is not None
    for name, value in _SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, true)", [name, value])
    try:
        for d in defs:
            if d.kind in _GRANTS:
                _grant(conn, d, done, standby)
                continue
            conn.execute("SAVEPOINT ark_object")
            try:
                conn.execute(d.sql)  # the primary's own pg_dump SQL, verbatim
            except psycopg.Error as exc:
                conn.execute("ROLLBACK TO SAVEPOINT ark_object")
                if _exists(exc, d.kind):
                    done.existing += 1
                    log.debug("standby %s already has %s %s", standby, d.kind, d.name)
                    continue
                raise TargetError(f"standby {standby} cannot create {d.kind} {d.name}: {_first_line(exc)}",
                                  fix="make the standby able to hold it (a missing extension or collation is named "
                                      "above), or create it there by hand, then run the command again") from None
            conn.execute("RELEASE SAVEPOINT ark_object")
            done.created += 1
            if d.kind == "TABLE" and d.table:
                done.tables.add(d.table)
    finally:
        for name, value in zip(_SETTINGS, saved, strict=True):
            conn.execute("SELECT set_config(%s, %s, true)", [name, value])
    log.info("standby %s: %d objects %s the rows created, %d existed already", standby, done.created,
             "after" if after_rows else "before", done.existing)
    return done


def _grant(conn: psycopg.Connection[Any], d: ObjectDef, done: Created, standby: str) -> None:
    """Privileges, one GRANT or REVOKE at a time (pg_dump writes one per line): one that names a role this
    cluster lacks is left out, with a warning, and the others still apply."""
    for statement in (line for line in d.sql.splitlines() if line.strip() and not line.startswith("--")):
        conn.execute("SAVEPOINT ark_object")
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            conn.execute("ROLLBACK TO SAVEPOINT ark_object")
            if exc.sqlstate != "42704":  # undefined_object: a role this cluster lacks
                raise TargetError(f"standby {standby} cannot apply the privileges {d.name}: {_first_line(exc)}",
                                  fix="grant them there by hand as on the primary, then run the command again"
                                  ) from None
            done.left_out.append(f"{statement.strip()} ({_first_line(exc)})")
            log.warning("standby %s: privileges left out: %s (%s); create the role and grant as on the primary "
                        "before a promotion", standby, statement.strip(), _first_line(exc))
            continue
        conn.execute("RELEASE SAVEPOINT ark_object")
    done.created += 1


def check_created(columns: Sequence[StandbyColumn] | None, meta: TableMeta) -> None:
    """A table the schema copy just created must have the stream's columns, in order (generated ones aside)."""
    have = [c.name for c in columns or []]
    want = [c.name for c in meta.columns]
    if have != want:
        raise TargetError(f"table {meta.table} as created from the primary's schema has columns {have}, but the "
                          f"snapshot describes {want}", fix="report this as a bug; nothing was changed")


def _empty(conn: psycopg.Connection[Any], tables: Sequence[str]) -> None:
    """Empty those of ``tables`` that exist (MVCC-safe DELETE, as the copy would): they are about to be replaced,
    and a new partition cannot be attached while the default partition holds rows of its range."""
    for table in tables:
        if conn.execute("SELECT to_regclass(%s)", [qualified(table)]).fetchone() != (None,):
            conn.execute(f"DELETE FROM {qualified(table)}")


_ADVANCE_SQL = """
SELECT count(setval(format('%%I.%%I', s.schemaname, s.sequencename)::regclass, q.value, true))
FROM unnest(%s::text[], %s::text[], %s::int8[]) AS q(nsp, rel, value)
JOIN pg_sequences s ON s.schemaname = q.nsp AND s.sequencename = q.rel
WHERE s.last_value IS NULL OR (s.increment_by > 0 AND s.last_value < q.value)
   OR (s.increment_by < 0 AND s.last_value > q.value)
"""


def advance_sequences(conn: psycopg.Connection[Any], values: Sequence[SequenceValue]) -> int:
    """Move each sequence the standby has to at least the primary's value (never back); how many moved.

    Sequences the standby does not have are left alone (those of tables that are not replicated)."""
    used = [v for v in values if v.is_called]
    if not used:
        return 0
    pairs = [split_table(v.name) for v in used]
    row = conn.execute(_ADVANCE_SQL, [[p[0] for p in pairs], [p[1] for p in pairs],
                                      [v.last_value for v in used]]).fetchone()
    return int(row[0]) if row else 0
