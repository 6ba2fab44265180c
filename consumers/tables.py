"""Per-table apply state: which tables are set aside for a resync, and which rows the apply loop skips.

A table in state ``resyncing`` no longer follows the stream: the apply loop skips its rows while a
fresh copy is made in the background (:mod:`consumers.table_resync`); every other table keeps
applying. The state is stored on the standby (``Applier.save_table_state``) so that a restarted
applier knows the table is still being resynced and starts its copy again from scratch.

Everything here is pure (no I/O), so the skipping rule is unit-tested with tables of cases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from schemas.entries import RowChange

#: The table follows the stream.
OK = "ok"
#: The table's rows are skipped until its fresh copy is swapped in.
RESYNCING = "resyncing"


@dataclass(frozen=True, slots=True)
class TableState:
    """One table's apply state on one standby.

    ``floor_position``/``floor_key`` record the position the table's last resync copy was taken at
    (just below the snapshot's consistent point): rows of transactions at or below it are in the copy.
    ``reason`` says why the table is being resynced (or how it was), for operators.
    """

    table: str
    state: str = OK
    floor_position: str = ""
    floor_key: bytes = b""
    reason: str = ""
    updated_at_us: int = 0

    @property
    def resyncing(self) -> bool:
        """True while the table's rows are skipped."""
        return self.state == RESYNCING


def resyncing_tables(states: Mapping[str, TableState]) -> set[str]:
    """The tables whose rows are being skipped."""
    return {t for t, s in states.items() if s.resyncing}


def split_rows(changes: Sequence[RowChange],
               skip: Iterable[str]) -> tuple[Sequence[RowChange], dict[str, list[RowChange]]]:
    """Rows to apply (source order kept) and, per skipped table, its rows that were left out (in order).

    Returns ``changes`` itself (no copy) when nothing is skipped: the hot path of a healthy standby.
    """
    skipped_tables = skip if isinstance(skip, (set, frozenset)) else set(skip)
    if not skipped_tables or not any(c.table in skipped_tables for c in changes):
        return changes, {}
    kept: list[RowChange] = []
    skipped: dict[str, list[RowChange]] = {}
    for change in changes:
        if change.table in skipped_tables:
            skipped.setdefault(change.table, []).append(change)
        else:
            kept.append(change)
    return kept, skipped


def staging_name(table: str, schema: str = "ark_resync") -> str:
    """The staging table (``schema.name``) that holds ``table``'s fresh copy during a resync.

    The name is the source's ``schema.table`` itself (a quoted identifier may contain a dot), cut to
    PostgreSQL's 63 bytes with a short hash when longer.
    """
    name = table if "." in table else f"public.{table}"
    if len(name.encode()) > 63:
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:10]
        name = name.encode()[:52].decode(errors="ignore") + "~" + digest
    return f"{schema}.{name}"
