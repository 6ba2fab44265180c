"""MariaDB SEQUENCE objects of the replicated schemas, read for the stream's SequenceValues entries.

A sequence's binlog rows (NEXTVAL past its cache, SETVAL) are not published as a table (see
:mod:`.shapes`): like PostgreSQL's capture, the capture reads the values now and then and at shape
changes, and a standby moves its sequences forward only (``SETVAL``, which never moves one back).

The value published is the last one the primary *may* have handed out: MariaDB keeps no "last value"
(``LASTVAL`` is per session), only ``next_not_cached_value``, past the block of values sessions hold in
their cache. Everything below it may have been handed out, so that is what a promoted standby must pass
(forward only: safe; it may skip up to a cache's worth of values, as a restarted MariaDB does).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from producers.mariadb import catalog
from schemas.entries import SequenceValue, SequenceValues

#: Sequences per query (one UNION ALL statement; a sequence is read like a one-row table, no lock a writer waits for).
_PER_QUERY = 200


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def replicated(conn: Any, patterns: Sequence[str]) -> list[tuple[str, str]]:
    """(schema, name) of every SEQUENCE whose ``schema.name`` matches the capture's table patterns."""
    rows = catalog.query(conn, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = "
                               "'SEQUENCE' ORDER BY TABLE_SCHEMA, TABLE_NAME")
    found = [(_text(s), _text(n)) for s, n in rows]
    return [(s, n) for s, n in found if catalog.matches(f"{s}.{n}", patterns)]


def last_value(next_not_cached: int, increment: int, start: int) -> int | None:
    """The last value the sequence may have handed out, None when it has handed out none (still at its start)."""
    last = next_not_cached - increment
    if increment >= 0 and last < start or increment < 0 and last > start:
        return None
    return last


def read_values(conn: Any, names: Sequence[tuple[str, str]]) -> SequenceValues:
    """The values of ``names`` now (sequences dropped meanwhile are left out)."""
    read_us = time.time_ns() // 1000
    values: list[SequenceValue] = []
    for at in range(0, len(names), _PER_QUERY):
        part = names[at:at + _PER_QUERY]
        present = {(s, n) for s, n in catalog.query(
            conn, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'SEQUENCE' AND "
                  "(" + " OR ".join(["(TABLE_SCHEMA = %s AND TABLE_NAME = %s)"] * len(part)) + ")",
            [x for pair in part for x in pair])}
        part = [(s, n) for s, n in part if (s, n) in present]
        if not part:
            continue
        sql = " UNION ALL ".join(f"SELECT %s, %s, next_not_cached_value, increment, start_value FROM "
                                 f"{_ident(s)}.{_ident(n)}" for s, n in part)
        for schema, name, nxt, increment, start in catalog.query(conn, sql, [x for pair in part for x in pair]):
            last = last_value(int(nxt), int(increment), int(start))
            if last is not None:
                values.append(SequenceValue(f"{_text(schema)}.{_text(name)}", last))
    return SequenceValues(read_us, tuple(values))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
