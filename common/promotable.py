"""``ark check --promotable STANDBY``: what a promotion of the standby would lack, object by object.

Each engine implements :class:`PromotableCheck` (the ``promotable`` part of its registry entry). It
reads the primary inside the snapshot :mod:`ops.promotable` opens (the same one ``ark verify`` uses) and
the standby as it stands, and compares what a standby must have to take over: extensions, types (enum
labels in order), sequences (definition, and a value at or ahead of the primary's; none behind the rows
it numbers), tables and partitions, columns with their defaults, identity and generation, constraints,
indexes, triggers, and row counts. Every :class:`Lack` says what is missing and how to fix it; the check
passes only when there is none.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from common.settings import PrimarySettings, StandbySettings
from common.snapshot import Snapshot
from schemas.entries import TableMeta


@dataclass(frozen=True, slots=True)
class Lack:
    """One thing a promotion would lack (``subject``: ``sequence public.t_id_seq``, ``index public.x`` ...)."""

    subject: str
    what: str
    fix: str


class PromotableCheck(ABC):
    """Compares a primary and a standby object by object (see the module docstring)."""

    @abstractmethod
    def lacks(self, primary: PrimarySettings, snapshot: Snapshot, standby: StandbySettings,
              tables: Sequence[TableMeta]) -> list[Lack]:
        """What the standby lacks for ``tables`` (the snapshot's replicated tables), each with its fix.

        Reads only: nothing is written on either side. Raises SourceError / TargetError when a side cannot
        be read."""
