"""Online initial sync helpers: copy tables as of an exported snapshot, with bounded memory.

The orchestration (creating the temporary replication slot with ``EXPORT_SNAPSHOT``, choosing the
tables, starting the stream at the slot's position) lives in the sync command. This module does the
database side: it opens a source transaction on that snapshot and streams ``COPY ... TO STDOUT`` from
the primary into ``COPY ... FROM STDIN`` on the standby, block by block, never holding a table in
memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql as psql

from common.errors import SourceError
from consumers.postgresql.applier import PostgresApplier
from consumers.postgresql.catalog import describe_source_tables, neutral_type, shape_version
from consumers.postgresql.sql import qualified, quote_ident
from schemas.entries import TableMeta

__all__ = ["CopyProgress", "copy_table", "describe_source_tables", "neutral_type", "open_snapshot",
           "shape_version"]

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


@dataclass(slots=True)
class CopyProgress:
    """How far the copy of one table is."""

    table: str
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    done: bool = False


def open_snapshot(dsn: str, snapshot: str, **connect_kwargs: Any) -> Conn:
    """A source connection inside ``REPEATABLE READ READ ONLY`` with ``SET TRANSACTION SNAPSHOT``.

    ``snapshot`` is the id exported when the slot was created; it is valid only while the session
    that exported it stays open (and has not run another command). Close the returned connection
    (or commit) when every table is copied.
    """
    try:
        conn: Conn = psycopg.connect(dsn, autocommit=True, application_name="ark-sync", **connect_kwargs)
    except psycopg.Error as exc:
        raise SourceError(f"cannot connect to the primary for the initial copy: {str(exc).strip().splitlines()[-1]}",
                          fix="check the primary's host, port, user and password") from None
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(psql.SQL("SET TRANSACTION SNAPSHOT {}").format(psql.Literal(snapshot)))
    except psycopg.Error as exc:
        conn.close()
        raise SourceError(f"cannot use exported snapshot {snapshot!r}: {exc.diag.message_primary or exc}",
                          fix="keep the session that created the slot open and idle until the copy has "
                              "started, then run the sync again") from None
    return conn


def _source_meta(conn: Conn, table: str) -> TableMeta:
    metas = [m for m in describe_source_tables(conn, [table]) if m.table == table]
    if not metas:
        raise SourceError(f"table {table} not found on the primary (or not an ordinary, logged table)",
                          fix="check the table name (schema.table) and the publication's table list")
    return metas[0]


def copy_table(source: str | Conn, target: PostgresApplier | Conn, table: TableMeta | str, *,
               snapshot: str | None = None, progress: Callable[[CopyProgress], None] | None = None,
               block_bytes: int = 1 << 20, truncate: bool = False, into: str | None = None) -> CopyProgress:
    """Copy one table from the primary's snapshot into the standby; return the final progress.

    ``source`` is a DSN (then ``snapshot`` is required and a snapshot transaction is opened and
    closed here) or a connection already inside the snapshot transaction (see :func:`open_snapshot`).
    ``target`` is the :class:`PostgresApplier` (its session is writable on a read-only standby; the
    copy runs in its open transaction, or in one of its own that is committed here) or a plain
    connection (used as it is). The standby table must exist (see ``apply_table_meta``); with
    ``truncate`` it is emptied first. ``progress`` is called after every block of ``block_bytes``
    (it may raise to abandon the copy). ``into`` names another standby table to fill (a resync's
    staging copy) with the same columns.
    """
    own_source = isinstance(source, str)
    if isinstance(source, str):
        if not snapshot:
            raise ValueError("copy_table from a DSN needs the exported snapshot name")
        src = open_snapshot(source, snapshot)
    else:
        src = source
    own_txn = isinstance(target, PostgresApplier) and not target.in_transaction
    try:
        meta = table if isinstance(table, TableMeta) else _source_meta(src, table)
        if isinstance(target, PostgresApplier):
            if own_txn:
                target.begin()
            dst = target.conn
        else:
            dst = target
        result = _stream(src, dst, meta, progress, block_bytes, truncate, into)
        if own_txn and isinstance(target, PostgresApplier):
            target.commit()
        return result
    except BaseException:
        if own_txn and isinstance(target, PostgresApplier):
            target.rollback()
        raise
    finally:
        if own_source:
            src.close()


def _stream(src: Conn, dst: Conn, meta: TableMeta, progress: Callable[[CopyProgress], None] | None,
            block_bytes: int, truncate: bool, into: str | None = None) -> CopyProgress:
    cols = ", ".join(quote_ident(c.name) for c in meta.columns)
    name = qualified(meta.table)
    target = qualified(into) if into else name
    state = CopyProgress(meta.table)
    started = time.monotonic()
    if truncate:
        # DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe, so a reader on the standby whose snapshot is
        # older than this copy's commit (a REPEATABLE READ report, pg_dump) would see the table empty.
        # With DELETE it keeps seeing the old rows, and everyone else sees the new ones at commit.
        dst.execute(f"DELETE FROM {target}")
    with src.cursor() as scur, dst.cursor() as dcur, \
            scur.copy(f"COPY {name} ({cols}) TO STDOUT") as cin, \
            dcur.copy(f"COPY {target} ({cols}) FROM STDIN") as cout:
        block = bytearray()
        for data in cin:  # libpq hands COPY OUT data over one row at a time
            block += data
            state.rows += 1
            if len(block) >= block_bytes:
                cout.write(block)
                state.bytes += len(block)
                block = bytearray()
                if progress is not None:
                    state.seconds = time.monotonic() - started
                    progress(state)
        if block:
            cout.write(block)
            state.bytes += len(block)
    state.seconds = time.monotonic() - started
    state.done = True
    if progress is not None:
        progress(state)
    log.info("copied %s: %s rows, %s bytes in %.1fs", meta.table, state.rows, state.bytes, state.seconds)
    return state
