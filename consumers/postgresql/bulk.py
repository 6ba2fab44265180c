"""Bulk loading a snapshot's rows into a PostgreSQL standby table with COPY, in bounded memory.

A PostgreSQL snapshot hands its rows over as COPY text (``PG_COPY_TEXT``): those blocks go to
``COPY ... FROM STDIN`` as they are (the fast path, no parsing). Rows from any other source arrive as
engine-neutral values and are written with psycopg's COPY row formatting (in C), so PostgreSQL parses
each value with the input function of the column's own type, exactly as for streamed rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from common.engines.postgresql import PG_COPY_TEXT
from common.snapshot import TableRows
from consumers.postgresql.sql import qualified, quote_ident

log = logging.getLogger(__name__)

#: Rows between two progress reports on the value path.
_REPORT_ROWS = 10_000


def load(conn: psycopg.Connection[Any], rows: TableRows, target: str, *, replace: bool,
         progress: Callable[[int], None] | None) -> int:
    """COPY ``rows`` into ``target`` (``schema.table``) in the open transaction; returns the row count.

    ``replace`` empties the target first with DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe, so a
    reader whose snapshot is older than this load (a REPEATABLE READ report, pg_dump) would see the
    table empty; with DELETE it keeps seeing the old rows, and everyone else sees the new ones at commit.
    """
    name = qualified(target)
    cols = ", ".join(quote_ident(c.name) for c in rows.meta.columns)
    if replace:
        conn.execute(f"DELETE FROM {name}")
    count, started = 0, time.monotonic()
    with conn.cursor() as cur, cur.copy(f"COPY {name} ({cols}) FROM STDIN") as copy:
        if rows.native_format == PG_COPY_TEXT:
            for block in rows.native_blocks():
                copy.write(block)
                count += block.count(b"\n")  # COPY text escapes newlines inside values: one per row
                if progress is not None:
                    progress(count)
        else:
            write = copy.write_row
            for values in rows.values():
                write(values)
                count += 1
                if progress is not None and count % _REPORT_ROWS == 0:
                    progress(count)
    if progress is not None:
        progress(count)
    log.info("loaded %s rows into %s in %.1f s", count, target, time.monotonic() - started)
    return count
