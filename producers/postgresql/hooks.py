"""Installing and reading Ark's hooks on a PostgreSQL primary (the SQL is in :mod:`.hooks_sql`).

The capture installs them at setup when its role may (event triggers need a superuser), and reads back
what they recorded: the table shape in force at a WAL position, and the DDL they could not record in the
WAL. Without them (:func:`hook_state` says why), the capture falls back to reading the live catalog and
to polling for new tables; ``ark check`` says exactly what is then not followed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from common.config import ArkConfig
from producers.postgresql import catalog
from producers.postgresql.catalog import query
from producers.postgresql.hooks_sql import (
    EVENT_TRIGGERS,
    FUNCTIONS,
    META_COLUMNS,
    PREFIX,
    PRUNE_SHAPES,
    SCHEMA,
    SHAPE_AT,
    TABLES,
)

log = logging.getLogger(__name__)


def pattern_regex(pattern: str) -> str:
    """An fnmatch pattern (``public.*``, ``app.t_?``, ``s.[ab]*``) as an anchored POSIX regular expression."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append("\\[")
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif ch.isalnum() or ch == "_":
            out.append(ch)
        else:
            out.append("\\" + ch)
        i += 1
    return "".join(out) + "$"


def inserts_publication_of(cfg: ArkConfig) -> str:
    """The group's second publication: tables without a usable key under ``keyless: insert-only``."""
    return f"{catalog.publication_of(cfg)}_inserts"


@dataclass(frozen=True)
class HookState:
    """Whether the hooks are in place on the primary, and why not."""

    installed: bool
    why_not: str = ""


def hook_state(conn: Any) -> HookState:
    """The hooks' state on the primary (read-only)."""
    rows = query(conn, "SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname = ANY (%s)",
                 (list(EVENT_TRIGGERS),))
    found = {str(name): str(enabled) for name, enabled in rows}
    missing = sorted(set(EVENT_TRIGGERS) - set(found))
    if missing:
        return HookState(False, f"event triggers {', '.join(missing)} are not installed")
    disabled = sorted(n for n, e in found.items() if e == "D")
    if disabled:
        return HookState(False, f"event triggers {', '.join(disabled)} are disabled")
    return HookState(True)


def install(conn: Any, cfg: ArkConfig, table_list: bool) -> list[str]:
    """Create or update schema ark_capture, its functions and event triggers, and this group's row.

    Idempotent, in one transaction. Returns what it did (for the log and the operator). Tables the group
    follows get their shape recorded now (the baseline the capture reads for WAL after this point).
    """
    p = catalog.pg_primary(cfg)
    capture_path = str(query(conn, "SELECT current_setting('search_path')")[0][0]).strip() or "public"
    done: list[str] = []
    old_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL ark.hook_busy = 'on'")  # Ark's own DDL: the hooks do not describe it
            cur.execute(TABLES)
            cur.execute(META_COLUMNS.replace("{capture_path}", capture_path))
            cur.execute(FUNCTIONS)
            cur.execute("SELECT evtname FROM pg_event_trigger WHERE evtname = ANY (%s)", (list(EVENT_TRIGGERS),))
            have = {r[0] for r in cur.fetchall()}
            for name, (event, function) in EVENT_TRIGGERS.items():
                if name not in have:
                    cur.execute(sql.SQL("CREATE EVENT TRIGGER {} ON {} EXECUTE FUNCTION {}.{}()").format(
                        sql.Identifier(name), sql.SQL(event), sql.Identifier(SCHEMA), sql.Identifier(function)))
                    done.append(f"created event trigger {name} ({event})")
                # ALWAYS: it also fires in sessions with session_replication_role = replica (an applier of a
                # chained group writing here), whose DDL the next group must see too.
                cur.execute(sql.SQL("ALTER EVENT TRIGGER {} ENABLE ALWAYS").format(sql.Identifier(name)))
            cur.execute(f"INSERT INTO {SCHEMA}.groups (group_name, patterns, keyless, publication, "
                        "inserts_publication, table_list) VALUES (%s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (group_name) DO UPDATE SET patterns = EXCLUDED.patterns, "
                        "keyless = EXCLUDED.keyless, publication = EXCLUDED.publication, "
                        "inserts_publication = EXCLUDED.inserts_publication, table_list = EXCLUDED.table_list, "
                        "updated_at = now()",
                        (cfg.group, [pattern_regex(x) for x in cfg.primary.tables], p.keyless,
                         catalog.publication_of(cfg), inserts_publication_of(cfg), table_list))
            cur.execute(f"INSERT INTO {SCHEMA}.shapes (objid, lsn, facts) "
                        f"SELECT c.oid, pg_current_wal_lsn(), {SCHEMA}.table_facts(c.oid) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        f"WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND n.nspname <> '{SCHEMA}' "
                        "AND (n.nspname || '.' || c.relname) ~ ANY (%s) "
                        f"AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.shapes s WHERE s.objid = c.oid) "
                        "ON CONFLICT DO NOTHING", ([pattern_regex(x) for x in cfg.primary.tables],))
            if cur.rowcount:
                done.append(f"recorded the shape of {cur.rowcount} tables")
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.autocommit = old_autocommit
    return done


def shape_at(conn: Any, relid: int, lsn: str) -> dict[str, Any] | None:
    """The facts of table ``relid`` in force at WAL position ``lsn`` (None when the hooks recorded none)."""
    rows = query(conn, SHAPE_AT, (relid, lsn))
    if not rows:
        return None
    facts = rows[0][0]
    return facts if isinstance(facts, dict) else json.loads(facts)


def prune(conn: Any) -> int:
    """Forget recorded shapes no slot of the database can decode again; returns how many."""
    with conn.cursor() as cur:
        cur.execute(PRUNE_SHAPES)
        pruned = int(cur.rowcount or 0)
        cur.execute(f"DELETE FROM {SCHEMA}.failures WHERE handled AND at < now() - interval '7 days'")
    return pruned


@dataclass(frozen=True)
class Failure:
    """A DDL the hooks could not record in the WAL (kept in ark_capture.failures)."""

    id: int
    tag: str
    tables: tuple[str, ...]
    error: str


def failures(conn: Any) -> list[Failure]:
    """Unhandled failures, oldest first (empty when the hooks are not installed)."""
    if not query(conn, "SELECT to_regclass(%s)", (f"{SCHEMA}.failures",))[0][0]:
        return []
    rows = query(conn, f"SELECT id, tag, objects, error FROM {SCHEMA}.failures WHERE NOT handled ORDER BY id")
    return [Failure(int(i), str(tag), tuple(str(o) for o in objs or ()), str(err)) for i, tag, objs, err in rows]


def emit_resync(conn: Any, tables: list[str], reason: str, failure_id: int | None = None) -> str:
    """Put a resync marker for ``tables`` in the primary's WAL (one transaction; a handled failure is marked so
    in it, so the marker is written exactly once). Returns its LSN."""
    payload = json.dumps({"v": 1, "event": "resync", "tables": [{"name": t} for t in tables], "reason": reason})
    old_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_logical_emit_message(true, %s, convert_to(%s, 'UTF8'))::text", (PREFIX, payload))
            row = cur.fetchone()
            if failure_id is not None:
                cur.execute(f"UPDATE {SCHEMA}.failures SET handled = true WHERE id = %s", (failure_id,))
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.autocommit = old_autocommit
    return str(row[0]) if row else ""
