"""The keyless policy (``primary.keyless``), applied by the capture, and what is not fully protected.

A table without a usable key (no primary key under REPLICA IDENTITY DEFAULT, NOTHING, or an identity
index that was dropped) makes the primary's own UPDATE and DELETE fail the moment a publication
covers it for those operations. Whatever the policy, Ark never lets that happen:

* ``full`` (default): the table gets REPLICA IDENTITY FULL before it is published; every change is
  replicated and the standby finds rows by all their values, one row per change;
* ``insert-only``: the table goes into the group's second publication (``<publication>_inserts``,
  ``publish = 'insert, truncate'``): its UPDATEs and DELETEs work and are not replicated;
* ``skip``: the table is in neither publication.

A publication ``FOR TABLES IN SCHEMA`` covers every table of the schema for every operation, so the
capture uses one only under ``full``; the other policies need table lists (the DDL hook adds new
tables in their CREATE's transaction; without it the capture adds them within seconds).

The DDL hook applies the same rules inside the user's transaction (``ark_capture.apply_policy``); this
module is the capture's side: at set-up, and every few seconds as the fallback for a primary without
the hook (or a hook that failed), always with a short lock timeout so it never queues the
application's statements behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from common.config import ArkConfig
from producers.base import Problem
from producers.postgresql import catalog
from producers.postgresql.catalog import TableInfo, matched_tables, query
from producers.postgresql.hooks import inserts_publication_of

log = logging.getLogger(__name__)

#: The capture's own ALTERs on the primary give up after this long rather than queue the application behind.
LOCK_TIMEOUT = "2s"


@dataclass
class Enforced:
    """What one pass of the policy did."""

    actions: list[str] = field(default_factory=list)
    #: Tables added to a publication after rows were written to them: the standbys need them resynced.
    resync: list[str] = field(default_factory=list)
    #: Tables the pass could not bring in line (a lock timeout, a permission): tried again next pass.
    failed: list[str] = field(default_factory=list)


def _members(conn: Any, publication: str) -> set[str]:
    """Tables listed explicitly in ``publication`` (not through a schema)."""
    rows = query(conn, "SELECT n.nspname, c.relname FROM pg_publication_rel pr JOIN pg_publication p ON "
                       "p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON "
                       "n.oid = c.relnamespace WHERE p.pubname = %s", (publication,))
    return {f"{s}.{t}" for s, t in rows}


def _hooked(conn: Any) -> bool:
    return bool(query(conn, "SELECT to_regclass('ark_capture.identity_full') IS NOT NULL")[0][0])


def enforce(conn: Any, cfg: ArkConfig, table_list: bool, *, may_resync: bool, identity_only: bool = False
            ) -> Enforced:
    """Bring every table ``primary.tables`` names in line with the policy (see the module docstring).

    ``table_list``: the main publication lists its tables (else it covers whole schemas). ``may_resync``:
    the slot already streams, so a table published after rows were written to it must be resynced.
    ``identity_only``: only the replica identities (before a publication covers the tables).
    Each table's changes commit on their own; a table that cannot be changed now is left for next time.
    """
    policy = catalog.pg_primary(cfg).keyless
    pub, ins = catalog.publication_of(cfg), inserts_publication_of(cfg)
    covered = catalog.publication_tables(conn, pub) or set()
    in_main, in_ins = _members(conn, pub), _members(conn, ins)
    hooked = _hooked(conn)
    marked = {int(r[0]) for r in query(conn, "SELECT relid FROM ark_capture.identity_full")} if hooked else set()
    out = Enforced()
    for t in matched_tables(conn, cfg.primary.tables):
        if t.persistence != "p":
            continue
        statements: list[tuple[sql.Composable, str]] = []
        name = sql.Identifier(t.schema, t.name)
        # FULL that Ark set on a table without a key counts as keyless when the policy is no longer 'full'
        ark_full = t.oid in marked and t.replica_identity == "f" and not t.has_pk
        keyless, resync = t.keyless or ark_full, False
        if ark_full and policy != "full" and table_list:
            statements.append((sql.SQL("ALTER TABLE {} REPLICA IDENTITY DEFAULT").format(name),
                               f"replica identity default (primary.keyless: {policy})"))
        if t.relkind == "r" and keyless and (policy == "full" or not table_list) and t.replica_identity != "f":
            statements.append((sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(name), "replica identity full"))
        if (t.relkind == "r" and not keyless and t.replica_identity == "f" and t.has_pk and t.oid in marked):
            statements.append((sql.SQL("ALTER TABLE {} REPLICA IDENTITY DEFAULT").format(name),
                               "replica identity default (its key is back)"))
        if table_list and not identity_only:
            main = sql.SQL("ALTER PUBLICATION {} {} TABLE {}")
            if keyless and policy == "insert-only":
                if t.qualified in in_main:
                    statements.append((main.format(sql.Identifier(pub), sql.SQL("DROP"), name), f"removed from {pub}"))
                if t.qualified not in in_ins:
                    statements.append((main.format(sql.Identifier(ins), sql.SQL("ADD"), name),
                                       f"added to {ins} (inserts and truncates only)"))
                    resync = t.qualified not in in_main
            elif keyless and policy == "skip":
                for p, members in ((pub, in_main), (ins, in_ins)):
                    if t.qualified in members:
                        statements.append((main.format(sql.Identifier(p), sql.SQL("DROP"), name), f"removed from {p}"))
            else:
                if t.qualified in in_ins:
                    statements.append((main.format(sql.Identifier(ins), sql.SQL("DROP"), name), f"removed from {ins}"))
                if t.qualified not in covered:
                    statements.append((main.format(sql.Identifier(pub), sql.SQL("ADD"), name), f"added to {pub}"))
                    resync = True
        if not statements:
            continue
        # Published late: resynced even if it looks empty now, since a row committed between a look and the ALTER
        # would be in neither (only the DDL hook, inside the CREATE's own lock, can tell an empty table for sure).
        resync = resync and may_resync and t.relkind == "r"
        try:
            _run(conn, statements, t, hooked)
        except Exception as exc:  # noqa: BLE001 - one table's failure (lock timeout, permission) must not stop the rest
            out.failed.append(f"{t.qualified}: {' '.join(str(exc).split())}")
            continue
        out.actions += [f"{t.qualified}: {what}" for _stmt, what in statements]
        if resync:
            out.resync.append(t.qualified)
    return out


def _run(conn: Any, statements: list[tuple[sql.Composable, str]], t: TableInfo, hooked: bool) -> None:
    """The statements for one table, in one transaction, with a short lock timeout."""
    old = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            for stmt, what in statements:
                cur.execute(stmt)
                if hooked and what == "replica identity full":
                    cur.execute("INSERT INTO ark_capture.identity_full (relid) VALUES (%s) ON CONFLICT DO NOTHING",
                                (t.oid,))
                elif hooked and what.startswith("replica identity default"):
                    cur.execute("DELETE FROM ark_capture.identity_full WHERE relid = %s", (t.oid,))
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.autocommit = old


def protection(conn: Any, cfg: ArkConfig) -> list[Problem]:
    """Every table ``primary.tables`` names that is not fully protected, and why (never fatal: a choice or a fact
    of the table, each with what would protect it)."""
    policy = catalog.pg_primary(cfg).keyless
    pub, ins = catalog.publication_of(cfg), inserts_publication_of(cfg)
    covered = catalog.publication_tables(conn, pub)
    inserts = catalog.publication_tables(conn, ins) or set()
    out: list[Problem] = []
    for t in matched_tables(conn, cfg.primary.tables):
        add_pk = f"ALTER TABLE {t.sql_name} ADD PRIMARY KEY (...)"
        if t.persistence == "u":
            out.append(Problem(f"table {t.qualified} is UNLOGGED: not replicated (its changes never reach the WAL)",
                               fix=f"ALTER TABLE {t.sql_name} SET LOGGED", fatal=False))
            continue
        if t.relkind != "r":
            continue
        if t.keyless and policy == "insert-only":
            out.append(Problem(f"table {t.qualified} has no usable key (primary.keyless: insert-only): only its "
                               "INSERTs and TRUNCATEs are replicated, its UPDATEs and DELETEs are not",
                               fix=f"{add_pk} (Ark then replicates it fully and resyncs it), or primary.keyless: full",
                               fatal=False))
        elif t.keyless and policy == "skip":
            out.append(Problem(f"table {t.qualified} has no usable key (primary.keyless: skip): not replicated",
                               fix=f"{add_pk} (Ark then replicates it and resyncs it), or primary.keyless: full",
                               fatal=False))
        elif t.keyless:
            out.append(Problem(f"table {t.qualified} has no usable key: Ark sets REPLICA IDENTITY FULL when the "
                               "capture sets up (until then it is not replicated)",
                               fix="run 'ark capture' (or 'ark sync'), which applies primary.keyless: full",
                               fatal=False))
        elif covered is not None and t.qualified not in covered and t.qualified not in inserts:
            out.append(Problem(f"table {t.qualified} matches primary.tables but is not in publication {pub} yet: "
                               "not replicated until the capture adds it (within seconds while it runs)",
                               fix="run 'ark capture'", fatal=False))
    return out


def ensure_publications(conn: Any, cfg: ArkConfig, superuser: bool) -> tuple[bool, list[str]]:
    """Create the main and insert-only publications, or bring the main one to the form the policy needs.

    Returns (table_list, what was done). ``FOR TABLES IN SCHEMA`` (superusers, patterns ``schema.*``, policy
    ``full`` only) follows new tables by itself; under ``insert-only`` and ``skip`` a schema publication would
    publish a keyless table's UPDATEs, so it becomes the equivalent table list (one transaction).
    """
    from producers.postgresql.catalog import publication_tables

    pub, ins = catalog.publication_of(cfg), inserts_publication_of(cfg)
    policy = catalog.pg_primary(cfg).keyless
    # Keyless tables are left to enforce(): FULL first, then published (or not, by the policy).
    tables = [t for t in matched_tables(conn, cfg.primary.tables) if not t.keyless]
    schemas = schema_publication(conn, cfg, superuser)
    explicit = [t for t in tables if t.schema not in schemas and t.persistence == "p"]
    done: list[str] = []
    have = {r[0] for r in query(conn, "SELECT n.nspname FROM pg_publication_namespace pn JOIN pg_publication p ON "
                                      "p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE "
                                      "p.pubname = %s", (pub,))}
    old = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            if publication_tables(conn, pub) is None:
                parts: list[sql.Composable] = []
                if schemas:
                    parts.append(sql.SQL("TABLES IN SCHEMA ") + sql.SQL(", ").join(map(sql.Identifier, schemas)))
                if explicit:
                    parts.append(sql.SQL("TABLE ") + sql.SQL(", ").join(
                        sql.Identifier(t.schema, t.name) for t in explicit))
                stmt = sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(pub))
                if parts:
                    stmt += sql.SQL(" FOR ") + sql.SQL(", ").join(parts)
                # A partitioned table's changes arrive as the table itself, not as its partitions: the standby's
                # partitioned table holds the rows, and partitions added later are covered from their creation.
                cur.execute(stmt + sql.SQL(" WITH (publish_via_partition_root = true)"))
                done.append(f"created publication {pub} (schemas {schemas or 'none'}, {len(explicit)} listed tables)")
            else:
                for schema in sorted(have - set(schemas)):
                    # a schema publication under insert-only/skip: list the schema's tables instead
                    cur.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLES IN SCHEMA {}").format(
                        sql.Identifier(pub), sql.Identifier(schema)))
                    done.append(f"publication {pub}: schema {schema} now listed table by table "
                                f"(primary.keyless: {policy})")
                for schema in schemas:
                    if schema not in have:
                        cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLES IN SCHEMA {}").format(
                            sql.Identifier(pub), sql.Identifier(schema)))
                        done.append(f"publication {pub}: added schema {schema}")
                cur.execute("SELECT n.nspname || '.' || c.relname FROM pg_publication_rel pr JOIN pg_publication p "
                            "ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON "
                            "n.oid = c.relnamespace WHERE p.pubname = %s", (pub,))
                listed = {r[0] for r in cur.fetchall()}
                # Only what a dropped schema clause covered until now (it is in the stream): any other missing table
                # is enforce()'s, which resyncs it when rows were written to it before it is published.
                gone = have - set(schemas)
                missing = [t for t in explicit if t.qualified not in listed and t.schema in gone]
                if missing:
                    cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                        sql.Identifier(pub), sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in missing)))
                    done.append(f"publication {pub}: added {len(missing)} tables")
            if publication_tables(conn, ins) is None:
                cur.execute(sql.SQL("CREATE PUBLICATION {} WITH (publish = 'insert, truncate', "
                                        "publish_via_partition_root = true)").format(
                    sql.Identifier(ins)))
                done.append(f"created publication {ins} (inserts and truncates of tables without a usable key)")
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.autocommit = old
    return not schemas, done


def schema_publication(conn: Any, cfg: ArkConfig, superuser: bool) -> list[str]:
    """The schemas the main publication covers whole (``FOR TABLES IN SCHEMA``): patterns ``schema.*`` of a
    superuser under ``keyless: full`` only (see the module docstring)."""
    if not superuser or catalog.pg_primary(cfg).keyless != "full":
        return []
    existing = {r[0] for r in query(conn, "SELECT nspname FROM pg_namespace")}
    return [s for s in catalog.schema_patterns(cfg.primary.tables) if s in existing]
