"""Moving a MariaDB standby's SEQUENCEs forward to the primary's values (SequenceValues entries).

``SETVAL(seq, n)`` never moves a sequence back (it answers NULL then), so an old or repeated entry
changes nothing, and a promoted standby never hands out a value the primary may have handed out.
``SETVAL`` does not end the open transaction (checked on 10.11.19), so it runs in the applier's
transaction, with the state row. A sequence the standby lacks is left alone, as the PostgreSQL
applier does: ``ark sync`` copies tables only, and creating one here needs DDL (which commits) and
the definition (increment, cache, bounds) the entry does not carry; ``ark switchover`` creates it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from consumers.mariadb.sql import qualified, split_table
from schemas.entries import SequenceValue

log = logging.getLogger(__name__)

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def present(query: Query, names: Sequence[str]) -> set[str]:
    """Which of ``names`` (schema.name) are SEQUENCEs on the standby."""
    pairs = [split_table(n) for n in names]
    if not pairs:
        return set()
    rows = query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'SEQUENCE' AND ("
                 + " OR ".join(["(TABLE_SCHEMA = %s AND TABLE_NAME = %s)"] * len(pairs)) + ")",
                 [x for pair in pairs for x in pair])
    return {f"{_text(s)}.{_text(n)}" for s, n in rows}


def advance(query: Query, values: Sequence[SequenceValue], warned: set[str]) -> int:
    """SETVAL each sequence the standby has to the primary's value; how many moved. Names of missing sequences
    are logged once (``warned`` remembers them)."""
    used = [v for v in values if v.is_called]
    here = present(query, [v.name for v in used])
    moved = 0
    for value in used:
        if value.name not in here:
            if value.name not in warned:
                warned.add(value.name)
                log.warning("sequence %s is not on this standby: its values are not followed here (ark switchover "
                            "creates it; or CREATE SEQUENCE it as on the primary)", value.name)
            continue
        (result,), = query(f"SELECT SETVAL({qualified(value.name)}, %s)", [int(value.last_value)])
        if result is not None:  # NULL: the standby's sequence is already there or past it
            moved += 1
    return moved


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
