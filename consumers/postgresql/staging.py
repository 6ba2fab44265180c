"""Table-level resync on a PostgreSQL standby: the staging copy's SQL, and the swap's.

1. A snapshot's rows of the table are loaded into ``ark_resync."schema.table"`` on the standby
   (:meth:`PostgresApplier.stage_copy`, a background thread with its own connection), committed on its own.
2. The swap (:meth:`PostgresApplier.swap_in_table`): the table is emptied, brought to the snapshot's
   shape (any ALTER works on an empty table), refilled from the staging copy, and the staging copy is
   dropped, in one transaction. Readers keep seeing the old rows until it commits.
"""

from __future__ import annotations

from dataclasses import replace

from consumers.base import StagedTable
from consumers.postgresql.sql import OVERRIDING, create_table_sql, qualified, quote_ident
from consumers.postgresql.state import RESYNC_SCHEMA
from consumers.tables import staging_name
from schemas.entries import TableMeta


def staging_table(table: str) -> str:
    """``schema.name`` of ``table``'s staging copy."""
    return staging_name(table, RESYNC_SCHEMA)


def staging_ddl(meta: TableMeta, staging: str) -> list[str]:
    """Statements that (re)create the empty staging table for ``meta`` (no key: COPY is faster; the
    target's own key checks the rows at the swap)."""
    bare = replace(meta, table=staging, columns=tuple(replace(c, key_position=0) for c in meta.columns))
    return [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(RESYNC_SCHEMA)}",
            f"DROP TABLE IF EXISTS {qualified(staging)}", create_table_sql(bare)]


def refill_sql(staged: StagedTable) -> list[str]:
    """Refill the (emptied, reshaped) table from its staging copy, then drop the copy."""
    cols = ", ".join(quote_ident(c.name) for c in staged.meta.columns)
    target, source = qualified(staged.table), qualified(staged.staging)
    return [f"INSERT INTO {target} ({cols}) {OVERRIDING} SELECT {cols} FROM {source}", f"DROP TABLE {source}"]


def drop_staging_sql(table: str) -> str:
    """``DROP TABLE IF EXISTS`` of ``table``'s staging copy."""
    return f"DROP TABLE IF EXISTS {qualified(staging_table(table))}"


def drop_all_staging_sql() -> list[str]:
    """Drop every staging copy (a whole-standby resync starts from nothing)."""
    name = quote_ident(RESYNC_SCHEMA)
    return [f"DROP SCHEMA IF EXISTS {name} CASCADE", f"CREATE SCHEMA {name}"]
