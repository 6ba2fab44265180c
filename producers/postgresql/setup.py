"""Source prerequisites (what ``ark check`` reports) and the idempotent creation of publication and slot.

Table rules (the ones that make capture exact):

* **UNLOGGED** tables never reach the WAL (our analogue of Oracle NOLOGGING): fatal.
* **REPLICA IDENTITY DEFAULT without a primary key**, or **NOTHING**: once published, UPDATE and
  DELETE on the source fail, and they could not be applied anyway: fatal.
* **REPLICA IDENTITY FULL** with a primary key or a unique index on NOT NULL columns: that key is the
  one the standby applies with. FULL with neither is accepted with a warning: the standby finds each
  changed row by all its old values, one row per change (identical rows are interchangeable).
* No table matched by ``primary.tables``: a warning (capture would run, replicating nothing).
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg2 import sql

from common.config import ArkConfig
from producers.base import Problem
from producers.postgresql import catalog
from producers.postgresql.catalog import (
    TableInfo,
    matched_tables,
    publication_tables,
    query,
    role_flags,
    schema_patterns,
    settings,
    slot_state,
)

log = logging.getLogger(__name__)


def _table_problems(t: TableInfo) -> list[Problem]:
    name = t.qualified
    out = []
    if t.persistence == "u":
        out.append(Problem(f"table {name} is UNLOGGED: its changes never reach the WAL and cannot be captured",
                           fix=f"ALTER TABLE {t.sql_name} SET LOGGED"))
    add_pk = f"ALTER TABLE {t.sql_name} ADD PRIMARY KEY (...)"
    if t.replica_identity == "n":
        out.append(Problem(f"table {name} has REPLICA IDENTITY NOTHING: its updates and deletes cannot be "
                           "replicated", fix=f"ALTER TABLE {t.sql_name} REPLICA IDENTITY DEFAULT (with a primary"
                                             f" key), or {add_pk}"))
    elif t.replica_identity == "d" and not t.has_pk:
        alt = (f"ALTER TABLE {t.sql_name} REPLICA IDENTITY FULL (it has a unique index on NOT NULL columns)"
               if t.has_unique_not_null else
               f"ALTER TABLE {t.sql_name} REPLICA IDENTITY FULL only after adding a unique key")
        out.append(Problem(f"table {name} has no primary key (replica identity DEFAULT): once published, "
                           "UPDATE and DELETE on it fail on the primary", fix=f"{add_pk}, or {alt}"))
    elif t.replica_identity == "f" and not t.has_pk and not t.has_unique_not_null:
        out.append(Problem(f"table {name} has no unique key (REPLICA IDENTITY FULL): a standby finds each updated "
                           "or deleted row by all its values, one row per change, which is slow on large tables",
                           fix=f"{add_pk} when the data allows it", fatal=False))
    return out


def problems(conn: Any, cfg: ArkConfig) -> list[Problem]:
    """Everything missing on the source for exact capture, each with its fix."""
    out: list[Problem] = []
    s = settings(conn)
    restart = "then restart PostgreSQL"
    if s.get("wal_level") != "logical":
        out.append(Problem(f"wal_level is {s.get('wal_level')}; logical decoding needs logical",
                           fix=f"ALTER SYSTEM SET wal_level = logical; {restart}"))
    for name in ("max_replication_slots", "max_wal_senders"):
        if int(s.get(name, "0")) < 1:
            out.append(Problem(f"{name} is 0; capture needs one", fix=f"ALTER SYSTEM SET {name} = 10; {restart}"))
    superuser, replication = role_flags(conn)
    user = cfg.primary.user
    if not (superuser or replication):
        out.append(Problem(f"user {user} lacks the REPLICATION attribute",
                           fix=f'ALTER ROLE "{user}" REPLICATION'))
    tables = matched_tables(conn, cfg.primary.tables)
    if not tables:
        out.append(Problem(f"no table matches primary.tables {list(cfg.primary.tables)}",
                           fix="create the tables, or correct primary.tables (schema.table patterns)",
                           fatal=False))
    for t in tables:
        out.extend(_table_problems(t))
    out.extend(_partition_root_problems(conn, cfg))
    slot = slot_state(conn, catalog.slot_of(cfg))
    if slot is not None:
        if slot.slot_type != "logical" or slot.plugin != "pgoutput" or slot.database != cfg.primary.dbname:
            out.append(Problem(f"replication slot {catalog.slot_of(cfg)} exists but is {slot.slot_type} "
                               f"{slot.plugin or ''} on database {slot.database}, not pgoutput on "
                               f"{cfg.primary.dbname}",
                               fix=f"SELECT pg_drop_replication_slot('{catalog.slot_of(cfg)}'), or set primary.slot"))
        elif slot.wal_status == "lost":
            out.append(Problem(f"replication slot {catalog.slot_of(cfg)} was invalidated (its WAL was removed)",
                               fix="run 'ark sync' to rebuild the standbys from a new slot"))
    return out


def _partition_root_problems(conn: Any, cfg: ArkConfig) -> list[Problem]:
    """A publication made before Ark set publish_via_partition_root publishes partitions as themselves."""
    pub = catalog.publication_of(cfg)
    rows = query(conn, "SELECT p.pubviaroot, EXISTS (SELECT FROM pg_publication_tables t "
                       "JOIN pg_namespace n ON n.nspname = t.schemaname "
                       "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename "
                       "WHERE t.pubname = p.pubname AND (c.relkind = 'p' OR c.relispartition)) "
                       "FROM pg_publication p WHERE p.pubname = %s", (pub,))
    if not rows or rows[0][0] or not rows[0][1]:
        return []
    return [Problem(f"publication {pub} publishes partitioned tables as their partitions (publish_via_partition_root "
                    "is off): a standby's partitioned table would not receive their rows as itself",
                    fix=f'ALTER PUBLICATION "{pub}" SET (publish_via_partition_root = true), then resync every '
                        "partitioned table on every standby (ark resync STANDBY --table SCHEMA.TABLE)", fatal=False)]


def _ident(name: str) -> sql.Composable:
    return sql.Identifier(name)


def ensure(conn: Any, cfg: ArkConfig) -> None:
    """Create the publication (or add what it misses), then the slot. Idempotent; never drops anything.

    Patterns of the form ``schema.*`` become ``TABLES IN SCHEMA`` (so later CREATE TABLEs are
    captured too) when the user is a superuser, which PostgreSQL 15 requires for that clause;
    everything else is listed table by table.
    """
    pub = catalog.publication_of(cfg)
    superuser, _ = role_flags(conn)
    tables = matched_tables(conn, cfg.primary.tables)
    existing_schemas = {r[0] for r in query(conn, "SELECT nspname FROM pg_namespace")}
    schemas = [s for s in schema_patterns(cfg.primary.tables) if s in existing_schemas] if superuser else []
    explicit = [t for t in tables if t.schema not in schemas]
    covered = publication_tables(conn, pub)
    with conn.cursor() as cur:
        if covered is None:
            parts: list[sql.Composable] = []
            if schemas:
                parts.append(sql.SQL("TABLES IN SCHEMA ") + sql.SQL(", ").join(map(_ident, schemas)))
            if explicit:
                parts.append(sql.SQL("TABLE ") + sql.SQL(", ").join(
                    sql.Identifier(t.schema, t.name) for t in explicit))
            stmt = sql.SQL("CREATE PUBLICATION {}").format(_ident(pub))
            if parts:
                stmt += sql.SQL(" FOR ") + sql.SQL(", ").join(parts)
            # A partitioned table's changes arrive as the table itself, not as its partitions: the standby's
            # partitioned table holds the rows, and partitions added later are covered from their creation.
            cur.execute(stmt + sql.SQL(" WITH (publish_via_partition_root = true)"))
            log.info("created publication %s (schemas %s, %d listed tables)", pub, schemas, len(explicit))
        else:
            have = {r[0] for r in query(conn, "SELECT n.nspname FROM pg_publication_namespace pn "
                                              "JOIN pg_publication p ON p.oid = pn.pnpubid "
                                              "JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = %s",
                                        (pub,))}
            for schema in schemas:
                if schema not in have:
                    cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLES IN SCHEMA {}").format(
                        _ident(pub), _ident(schema)))
                    log.info("publication %s: added schema %s", pub, schema)
            covered = publication_tables(conn, pub) or set()
            missing = [t for t in explicit if t.qualified not in covered]
            if missing:
                cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    _ident(pub), sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in missing)))
                log.info("publication %s: added %d tables", pub, len(missing))
        if slot_state(conn, catalog.slot_of(cfg)) is None:
            cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
                        (catalog.slot_of(cfg),))
            row = cur.fetchone()
            log.info("created replication slot %s at %s", catalog.slot_of(cfg), row[0] if row else "?")


def add_new_tables(conn: Any, cfg: ArkConfig, reported: set[str]) -> list[tuple[str, bool]]:
    """Add tables created since that match ``primary.tables`` but that the publication does not cover.

    A publication ``FOR TABLES IN SCHEMA`` covers new tables by itself (from the CREATE TABLE on,
    rows of the creating transaction included); a table list does not. Rows written to a new table
    before it is added here are not in the stream. Returns ``(table, had_rows)`` for every table
    added: ``had_rows`` means rows existed when it was added, so the standbys need a resync of it.
    A table with a fatal problem (no key, unlogged) is not added: publishing it would make UPDATE and
    DELETE on it fail on the primary. It is reported once (``reported`` remembers it).
    """
    covered = publication_tables(conn, catalog.publication_of(cfg))
    if covered is None:
        return []
    added: list[tuple[str, bool]] = []
    for t in matched_tables(conn, cfg.primary.tables):
        if t.qualified in covered:
            continue
        problems = _table_problems(t)
        if problems:
            if t.qualified not in reported:
                reported.add(t.qualified)
                log.error("new table %s matches primary.tables but is not captured: %s (fix: %s)", t.qualified,
                          problems[0].what, problems[0].fix)
            continue
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                _ident(catalog.publication_of(cfg)), sql.Identifier(t.schema, t.name)))
            cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(t.schema, t.name)))
            row = cur.fetchone()
        added.append((t.qualified, bool(row and row[0])))
    return added
