"""Table-level resync on a PostgreSQL standby: the staging copy and the swap.

1. :func:`stage_table` (background thread, own connections): a temporary replication slot on the
   primary exports a snapshot at position P; the table is copied from that snapshot into
   ``ark_resync."schema.table"`` on the standby, which is committed on its own.
2. :func:`refill_sql` (main apply session, inside its open transaction): the table is emptied, brought
   to the snapshot's shape (any ALTER works on an empty table), refilled from the staging copy, and
   the staging copy is dropped. Readers keep seeing the old rows until that transaction commits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg

from common.config import PrimarySettings
from common.errors import SourceError
from consumers.base import StagedTable
from consumers.postgresql.exported_snapshot import ExportedSnapshot
from consumers.postgresql.snapshot import CopyProgress, copy_table, describe_source_tables, open_snapshot
from consumers.postgresql.sql import create_table_sql, qualified, quote_ident
from consumers.postgresql.state import RESYNC_SCHEMA
from consumers.tables import staging_name
from schemas.entries import Position, TableMeta

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]


def _source_kwargs(primary: PrimarySettings) -> dict[str, Any]:
    kwargs = primary.connect_kwargs()
    kwargs.pop("application_name", None)  # open_snapshot names the session itself
    return kwargs


def staging_ddl(meta: TableMeta, staging: str) -> list[str]:
    """Statements that (re)create the empty staging table for ``meta`` (no key: COPY is faster; the
    target's own key checks the rows at the swap)."""
    bare = replace(meta, table=staging, columns=tuple(replace(c, key_position=0) for c in meta.columns))
    return [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(RESYNC_SCHEMA)}",
            f"DROP TABLE IF EXISTS {qualified(staging)}", create_table_sql(bare)]


def stage_table(dst: Conn, primary: PrimarySettings, table: str, *, on_snapshot: Callable[[Position], None],
                on_rows: Callable[[int], None]) -> StagedTable:
    """Copy ``table`` from a fresh snapshot of ``primary`` into its staging table over ``dst``.

    ``dst`` is an autocommit standby session that may write (the applier's); the staging copy is made
    in one transaction on it and committed here. Source failures raise :class:`SourceError`.
    """
    staging = staging_name(table, RESYNC_SCHEMA)
    with ExportedSnapshot(primary) as snap, \
            contextlib.closing(open_snapshot("", snap.name, **_source_kwargs(primary))) as src:
        assert snap.position is not None
        on_snapshot(snap.position)
        metas = [m for m in describe_source_tables(src, [table]) if m.table == table]
        if not metas:
            raise SourceError(f"table {table} is not on the primary (or is not an ordinary, logged table)",
                              fix="check the table name (schema.table) and primary.tables in the config")
        meta = metas[0]
        dst.execute("BEGIN READ WRITE")
        try:
            for stmt in staging_ddl(meta, staging):
                dst.execute(stmt)

            def progress(p: CopyProgress) -> None:
                on_rows(p.rows)

            done = copy_table(src, dst, meta, progress=progress, into=staging)
            dst.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                dst.execute("ROLLBACK")
            raise
    log.info("staged %s: %d rows from the snapshot at %s into %s", table, done.rows, snap.position.text, staging)
    return StagedTable(table=table, staging=staging, meta=meta, position=snap.position, rows=done.rows)


def refill_sql(staged: StagedTable) -> list[str]:
    """Refill the (emptied, reshaped) table from its staging copy, then drop the copy."""
    cols = ", ".join(quote_ident(c.name) for c in staged.meta.columns)
    target, source = qualified(staged.table), qualified(staged.staging)
    return [f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {source}", f"DROP TABLE {source}"]


def drop_staging_sql(table: str) -> str:
    """``DROP TABLE IF EXISTS`` of ``table``'s staging copy."""
    return f"DROP TABLE IF EXISTS {qualified(staging_name(table, RESYNC_SCHEMA))}"


def drop_all_staging_sql() -> list[str]:
    """Drop every staging copy (a whole-standby resync starts from nothing)."""
    name = quote_ident(RESYNC_SCHEMA)
    return [f"DROP SCHEMA IF EXISTS {name} CASCADE", f"CREATE SCHEMA {name}"]
