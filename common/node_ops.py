"""What failover needs of one database node, whatever its engine: fence, read positions, sequences, promote.

Each engine implements :class:`NodeOps` in its own package and names it in the registry
(``EngineSpec.node_ops``); :func:`node_ops` builds it for a node of the group. failover/ drives these
operations in the order of a switchover or a failover (failover/handover.py); nothing here decides anything.

Fencing a primary (:meth:`NodeOps.fence`) is the only path that may make a primary read-only (common/guard.py:
an applier never does); whoever calls it records it on the control topic (a ``node-fenced`` record).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from common.config import ArkConfig
from common.engines import engine, load
from common.errors import ConfigError
from common.roles import node


@dataclass(frozen=True)
class FenceReport:
    """What fencing did: the grace it waited, and the client sessions it ended after it."""

    waited_s: float
    sessions_ended: int
    #: The node's log position once no session that could write was left (drain at least this far).
    position: str


@dataclass(frozen=True)
class Sequence:
    """One sequence of the primary: its last value (None: never used) and its definition (SQL-standard terms), so
    that a node that lacks it can create it (an initial sync copies tables, not sequences)."""

    last_value: int | None
    data_type: str = "bigint"
    start: int = 1
    minimum: int = 1
    maximum: int = 9223372036854775807
    increment: int = 1
    cycle: bool = False
    cache: int = 1
    #: A counter that belongs to a table column (MariaDB's AUTO_INCREMENT, keyed ``schema.table``): the column.
    #: Empty for a sequence object.
    column: str = ""


@dataclass(frozen=True)
class SequenceReport:
    """Sequences set forward on a new primary (never backwards), and those it does not have."""

    moved: int
    unchanged: int
    #: Sequences the node did not have: created with the primary's definition.
    created: tuple[str, ...] = field(default_factory=tuple)


class NodeOps(ABC):
    """One node of the group (see the module docstring). Opens its connection on first use."""

    @abstractmethod
    def writable(self) -> bool:
        """True when ordinary sessions may write (not fenced, not guarded read-only, not in recovery)."""

    @abstractmethod
    def fence(self, grace_s: float) -> FenceReport:
        """Make the database read-only for every session but Ark's; give the transactions in flight ``grace_s``
        to finish, then end every client session that started before (they could still write)."""

    @abstractmethod
    def unfence(self) -> None:
        """Let ordinary sessions write again (a promoted node, or a switchover given up before its marker)."""

    @abstractmethod
    def log_position(self) -> str:
        """The node's current log position, as the capture writes positions."""

    @abstractmethod
    def sequences(self) -> dict[str, Sequence]:
        """Every sequence of the replicated schemas (schema.name -> its last value and definition)."""

    @abstractmethod
    def set_sequences(self, values: dict[str, Sequence]) -> SequenceReport:
        """Move this node's sequences forward to at least ``values`` (never backwards); create the missing ones."""

    @abstractmethod
    def promote(self) -> str:
        """Make the node a source: its capture set-up (publication, slot) and writable; returns where its log
        stands (the slot's start). Idempotent."""

    @abstractmethod
    def drop_source(self) -> list[str]:
        """The node stops being a source: drop its capture set-up (what is dropped, for the record)."""

    @abstractmethod
    def row(self, table: str, key: dict[str, object]) -> dict[str, object] | None:
        """The row of ``table`` with this key as the node holds it now (None: no such row)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


def node_ops(cfg: ArkConfig, name: str, *, connect_timeout_s: int | None = None) -> NodeOps:
    """The operations of node ``name`` (primary or standby of the config), by its engine; ``connect_timeout_s``
    overrides the node's own (a failover gives a primary that may be gone only a few seconds to answer)."""
    found = node(cfg, name)
    path = engine(found.engine).node_ops
    if not path:
        raise ConfigError(f"node {name}: switchover and failover are not built yet for {found.engine}",
                          fix="hand over by hand: stop writes, wait for the standby, re-point the group")
    ops: NodeOps = load(path)(cfg, name, connect_timeout_s=connect_timeout_s)
    return ops
