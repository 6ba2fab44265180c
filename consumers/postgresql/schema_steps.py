"""Running the steps of a primary's DDL on a PostgreSQL standby (see consumers/schema_change.py).

Each step is one statement the capture generated from catalog facts (schema-qualified, idempotent). A
step that fails stops the standby with :class:`SchemaChangeFailed`, naming the object, the DDL and a fix
that works: nothing of the source transaction is applied, and once the cause is fixed the applier runs
the same step again. An ``optional-sql`` step that fails is rolled back to a savepoint and logged as a
warning (it says why that is safe). Transient failures (a lock timeout, a lost connection) are retried
like any other.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from psycopg import errors as pge

from consumers.errors import SchemaChangeFailed
from consumers.postgresql.sql import qualified, quote_ident, split_table
from schemas.entries import SchemaStep

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]

#: What makes a standby unable to run a step, and what to do about it.
_FIXES: list[tuple[type[Exception], str]] = [
    (pge.UndefinedFile, "install the extension's package on the standby's host (Debian: postgresql-15-<name>, or "
                        "postgresql-contrib for the extensions shipped with PostgreSQL), then restart 'ark apply'"),
    (pge.FeatureNotSupported, "make the standby able to run it (same PostgreSQL major version and extensions as the "
                              "primary), then restart 'ark apply'"),
    (pge.UndefinedObject, "create the missing object on the standby as it is on the primary (or 'ark sync' the "
                          "standby again), then restart 'ark apply'"),
    (pge.UndefinedTable, "create the missing table on the standby as it is on the primary (or 'ark sync' the "
                         "standby again), then restart 'ark apply'"),
    (pge.UndefinedFunction, "create the missing function on the standby as it is on the primary, then restart "
                            "'ark apply'"),
    (pge.DependentObjectsStillExist, "objects on the standby depend on it (created there, not by Ark): drop them "
                                     "on the standby, then restart 'ark apply'"),
]
_TRANSIENT = (pge.LockNotAvailable, pge.DeadlockDetected, pge.SerializationFailure, pge.QueryCanceled,
              pge.AdminShutdown, pge.CannotConnectNow, psycopg.OperationalError)


def _extension_of(step: SchemaStep) -> str:
    match = re.match(r'^extension "?([^"]+)"?$', step.object)
    return match.group(1) if match else ""


def run_step(conn: Conn, group: str, step: SchemaStep, *, follow_drop: bool, what: str, standby: str) -> bool:
    """Run one step in the open transaction (see the module docstring); True when the transaction must commit
    at the end of this source transaction (a new enum value)."""
    if step.action in ("drop-table", "drop-schema") and not follow_drop:
        log.warning("%s: the primary dropped %s; standby %s keeps it and its data (follow_drop is off)", what,
                    step.object, standby)
        return False
    log.info("%s on %s: %s", what, step.object, step.sql)
    if step.action == "optional-sql":
        conn.execute("SAVEPOINT ark_step")
        try:
            conn.execute(step.sql)
        except psycopg.Error as exc:
            if isinstance(exc, _TRANSIENT):
                raise
            conn.execute("ROLLBACK TO SAVEPOINT ark_step")
            line = (exc.diag.message_primary or str(exc)).strip()
            log.warning("%s: %s left out on standby %s (%s): %s", what, step.object, standby, step.detail, line)
        conn.execute("RELEASE SAVEPOINT ark_step")
        return False
    try:
        conn.execute(step.sql)
    except psycopg.Error as exc:
        if isinstance(exc, _TRANSIENT):
            raise
        raise _failed(exc, step, what, standby) from exc
    if step.action == "drop-table":
        conn.execute('DELETE FROM ark.table_meta WHERE "group" = %s AND "table" = %s', [group, step.object])
    return bool(re.search(r"\bADD VALUE\b", step.sql))


def _failed(exc: psycopg.Error, step: SchemaStep, what: str, standby: str) -> SchemaChangeFailed:
    line = (exc.diag.message_primary or str(exc)).strip()
    fix = next((f for cls, f in _FIXES if isinstance(exc, cls)),
               "make the standby able to run it (run the statement there yourself if it is safe), then restart "
               "'ark apply'; or 'ark sync' the standby again")
    ext = _extension_of(step)
    if ext and isinstance(exc, (pge.UndefinedFile, pge.FeatureNotSupported)):
        fix = (f"install extension {ext} on the standby's host (the package that provides it, of the version the "
               f"primary runs), then restart 'ark apply {standby}'")
    fix = fix.replace("'ark apply'", f"'ark apply {standby}'")
    table = step.object if "." in step.object and " " not in step.object else ""
    return SchemaChangeFailed(f"standby {standby} cannot follow {what} on {step.object}: {line} [{step.sql[:300]}]",
                              fix=fix, table=table)


def rename(conn: Conn, group: str, old: str, new: str, standby: str) -> None:
    """Rename (or move) table ``old`` to ``new`` and its stored shape; a table that is not here is left alone."""
    old_schema, old_name = split_table(old)
    new_schema, new_name = split_table(new)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [qualified(old)]).fetchone()
    if not row or not row[0]:
        log.warning("the primary renamed %s to %s; standby %s does not have %s", old, new, standby, old)
    else:
        if old_schema != new_schema:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(new_schema)}")
            conn.execute(f"ALTER TABLE {qualified(old)} SET SCHEMA {quote_ident(new_schema)}")
        if old_name != new_name:
            conn.execute(f"ALTER TABLE {quote_ident(new_schema)}.{quote_ident(old_name)} RENAME TO "
                         f"{quote_ident(new_name)}")
        log.info("table %s renamed to %s on standby %s, as on the primary", old, new, standby)
    conn.execute("""UPDATE ark.table_meta SET "table" = %s, meta = jsonb_set(meta, '{table}', to_jsonb(%s::text))
                    WHERE "group" = %s AND "table" = %s""", [new, new, group, old])

