"""Source prerequisites (what ``ark check`` reports) and the idempotent set-up of hooks, publications and slot.

Table rules (the ones that make capture exact):

* **UNLOGGED** tables never reach the WAL (our analogue of Oracle NOLOGGING): fatal.
* **No usable key** (no primary key under REPLICA IDENTITY DEFAULT, NOTHING, or a dropped identity
  index): published as it is, the primary's own UPDATE and DELETE on it would fail. The keyless
  policy (:mod:`.policy`, ``primary.keyless``) decides before any publication covers it: REPLICA
  IDENTITY FULL (default), inserts only, or not replicated. Reported as a warning, never fatal.
* **REPLICA IDENTITY FULL** with a primary key or a unique index on NOT NULL columns: that key is the
  one the standby applies with. FULL with neither is accepted with a warning: the standby finds each
  changed row by all its old values, one row per change (identical rows are interchangeable).
* No table matched by ``primary.tables``: a warning (capture would run, replicating nothing).
* **The DDL hook** (:mod:`.hooks`): a superuser's capture installs it; without it, what is then not
  followed exactly is reported (a warning).
"""

from __future__ import annotations

import logging
from typing import Any

from common.config import ArkConfig
from producers.base import Problem
from producers.postgresql import catalog, hooks, policy
from producers.postgresql.catalog import TableInfo, matched_tables, query, role_flags, settings, slot_state

log = logging.getLogger(__name__)


def _table_problems(t: TableInfo) -> list[Problem]:
    name = t.qualified
    out = []
    if t.persistence == "u":
        out.append(Problem(f"table {name} is UNLOGGED: its changes never reach the WAL and cannot be captured",
                           fix=f"ALTER TABLE {t.sql_name} SET LOGGED"))
    elif t.replica_identity == "f" and not t.has_pk and not t.has_unique_not_null and t.relkind == "r":
        out.append(Problem(f"table {name} has no unique key (REPLICA IDENTITY FULL): a standby finds each updated "
                           "or deleted row by all its values, one row per change, which is slow on large tables",
                           fix=f"ALTER TABLE {t.sql_name} ADD PRIMARY KEY (...) when the data allows it", fatal=False))
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
    # Tables without a usable key and the DDL hook: see protection() (ark check and ark status list them).
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


NO_HOOK_EFFECTS = (
    "Ark's DDL event trigger is not installed on the primary, so: table shapes are read from the live catalog "
    "(a column renamed, or dropped and added again, while the capture lags may need a table resync); types, "
    "indexes, constraints, sequences, defaults, views, functions and triggers created or changed later are not "
    "replicated; a new table is published by polling within seconds (a keyless one's UPDATE and DELETE fail until "
    "then, and rows written to a new table before it are copied by an automatic table resync)")


def hook_problems(conn: Any, superuser: bool) -> list[Problem]:
    """What is not followed exactly without the DDL hook (empty when it is installed and enabled)."""
    state = hooks.hook_state(conn)
    if state.installed:
        return []
    if superuser:
        return [Problem(f"{state.why_not}: 'ark capture' installs them when it sets up", fix="run 'ark capture'",
                        fatal=False)]
    return [Problem(f"{state.why_not} and the capture's user may not install them (event triggers need a "
                    f"superuser). {NO_HOOK_EFFECTS}",
                    fix="let the capture's user be a superuser (ALTER ROLE ... SUPERUSER), then run 'ark capture'",
                    fatal=False)]


def ensure(conn: Any, cfg: ArkConfig) -> list[str]:
    """Hooks, keyless policy, publications, slot: create or correct what is missing. Idempotent; drops nothing.

    Order: the hooks first (their shapes baseline precedes the slot), then REPLICA IDENTITY FULL on keyless
    tables under ``full`` before any publication covers them, then the publications, then the policy's
    memberships, then the slot. Returns what it did to which tables (logged, and printed by the CLI).
    """
    superuser, _ = role_flags(conn)
    slot_existed = slot_state(conn, catalog.slot_of(cfg)) is not None
    table_list = not policy.schema_publication(conn, cfg, superuser)
    done: list[str] = []
    if superuser:
        done += hooks.install(conn, cfg, table_list)
    first = policy.enforce(conn, cfg, table_list, may_resync=False, identity_only=True)
    made, pubs = policy.ensure_publications(conn, cfg, superuser)
    done += first.actions + pubs
    second = policy.enforce(conn, cfg, made, may_resync=slot_existed)
    done += second.actions
    for failed in first.failed + second.failed:
        log.warning("keyless policy: could not change %s (tried again while the capture runs)", failed)
    if second.resync:
        lsn = hooks.emit_resync(conn, second.resync, "rows were written to it before it was published")
        done.append(f"resync of {', '.join(second.resync)} requested on every standby (in the WAL at {lsn})")
    if not slot_existed:
        with conn.cursor() as cur:
            cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
                        (catalog.slot_of(cfg),))
            row = cur.fetchone()
        done.append(f"created replication slot {catalog.slot_of(cfg)} at {row[0] if row else '?'}")
    for line in done:
        log.info("set-up: %s", line)
    return done
