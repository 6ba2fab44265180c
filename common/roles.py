"""The group's roles and epochs, derived by replaying the control topic (ARCHITECTURE.md, "Roles, epochs and
failover"), and the configuration of each agent under those roles.

The YAML file names the *initial* primary (``primary:``) and the standbys. From then on the control topic is
the truth: each ``epoch-begun`` record names the primary of a new epoch (a switchover or a failover), each
``standby-from`` record says from which redo offset a node applies as a standby (the old primary after a
switchover, a reinstated one), and ``epoch-ended`` records say where an epoch's end-of-epoch marker is.
Epoch 0 is the reign of the configured primary; nothing marks its start.

A node that was primary and has not been given a ``standby-from`` since it lost the role is *demoted*: no
applier may write to it (it may hold transactions that never reached Kafka: ``ark reinstate`` records them
first). Everything here is pure and replayable; agents call :meth:`Roles.update` with each batch of records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common.config import ArkConfig
from common.control import ControlRecord
from common.engines import engine
from common.errors import ConfigError
from common.settings import DatabaseSettings, PrimarySettings, StandbySettings
from schemas.control import (
    ApplyUntil,
    EndEpoch,
    EpochBegun,
    EpochCut,
    EpochEnded,
    HandoverStep,
    NodeFenced,
    StandbyFrom,
)

#: The fields that say where a database is and how to log in: they move with a node from role to role.
_CONNECTION = tuple(DatabaseSettings.model_fields)


@dataclass(frozen=True)
class Reign:
    """One epoch: its primary, and how it began."""

    epoch: int
    primary: str
    previous: str
    reason: str
    #: The redo offset of the marker that ended the previous epoch (-1: none, epoch 0).
    marker_offset: int
    since_us: int


@dataclass
class Roles:
    """Who is primary in which epoch, who applies from where (see the module docstring)."""

    initial: str
    reigns: list[Reign] = field(default_factory=list)
    ended: dict[int, EpochEnded] = field(default_factory=dict)
    end_requests: dict[int, EndEpoch] = field(default_factory=dict)
    #: node -> (epoch, redo offset) of its last ``standby-from`` record.
    standby_from: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: node -> tables its last ``standby-from`` asks to resync (a reinstated primary's divergence).
    rejoin_resync: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: node -> (epoch, how) of its last fencing.
    fenced: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: epoch -> its point-in-time cut (entries from that offset on are not the group's history).
    cuts: dict[int, EpochCut] = field(default_factory=dict)
    #: node -> the point in time it applies up to (a recovery point being prepared; 0 or absent: none).
    until: dict[str, int] = field(default_factory=dict)
    #: The last steps of handovers (newest last), for status.
    steps: list[tuple[ControlRecord, HandoverStep]] = field(default_factory=list)

    @classmethod
    def replay(cls, initial: str, records: Iterable[ControlRecord]) -> Roles:
        """The roles after ``records`` (in topic order), starting from the configured primary ``initial``."""
        roles = cls(initial)
        roles.update(records)
        return roles

    def update(self, records: Iterable[ControlRecord]) -> bool:
        """Fold newer records in; True when the primary or the epoch changed."""
        before = (self.epoch, self.primary)
        for rec in records:
            body = rec.body
            if isinstance(body, EpochBegun) and body.epoch > self.epoch:
                self.reigns.append(Reign(body.epoch, body.primary, body.previous, body.reason, body.marker_offset,
                                         rec.issued_at_us))
            elif isinstance(body, EpochEnded):
                self.ended.setdefault(body.epoch, body)
            elif isinstance(body, EndEpoch):
                self.end_requests[body.epoch] = body
            elif isinstance(body, StandbyFrom):
                self.standby_from[rec.target] = (body.epoch, body.offset)
                self.rejoin_resync[rec.target] = tuple(body.resync)
            elif isinstance(body, NodeFenced):
                self.fenced[rec.target] = (body.epoch, body.how)
            elif isinstance(body, EpochCut):
                self.cuts.setdefault(body.epoch, body)
            elif isinstance(body, ApplyUntil):
                self.until[rec.target] = body.until_us
            elif isinstance(body, HandoverStep):
                self.steps = [*self.steps[-49:], (rec, body)]
                fenced = self.fenced.get(rec.target)
                if body.action == "lift-fence" and body.phase == "done" and fenced is not None \
                        and fenced[0] <= body.epoch:
                    del self.fenced[rec.target]  # a self-fence lifted at the controller's request (node agent)
        return (self.epoch, self.primary) != before

    # -- questions ---------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The current epoch (0 until the first switchover or failover)."""
        return self.reigns[-1].epoch if self.reigns else 0

    @property
    def primary(self) -> str:
        """The node that is primary in the current epoch."""
        return self.reigns[-1].primary if self.reigns else self.initial

    def primary_of(self, epoch: int) -> str:
        """The primary of ``epoch`` (the configured primary for epoch 0 or an unknown older epoch)."""
        found = self.initial
        for reign in self.reigns:
            if reign.epoch <= epoch:
                found = reign.primary
        return found

    def lost_primacy_at(self, node: str) -> int | None:
        """The epoch in which ``node`` stopped being primary the last time (None: it never was, or still is)."""
        held = [0] if node == self.initial else []
        held += [r.epoch for r in self.reigns if r.primary == node]
        if not held or node == self.primary:
            return None
        last = max(held)
        return min((r.epoch for r in self.reigns if r.epoch > last), default=None)

    def role_of(self, node: str) -> str:
        """primary, standby, or demoted (a former primary that may not be applied to yet)."""
        if node == self.primary:
            return "primary"
        lost = self.lost_primacy_at(node)
        if lost is None:
            return "standby"
        rejoined = self.standby_from.get(node)
        return "standby" if rejoined is not None and rejoined[0] >= lost else "demoted"

    def rejoin_offset(self, node: str) -> tuple[int, int] | None:
        """(epoch, offset) from which ``node`` applies as a standby, when a ``standby-from`` says so."""
        return self.standby_from.get(node) if self.role_of(node) == "standby" else None

    def describe(self) -> str:
        """One line: epoch, primary, since when and why."""
        if not self.reigns:
            return f"epoch 0: primary {self.initial} (as configured)"
        r = self.reigns[-1]
        return f"epoch {r.epoch}: primary {r.primary} (after a {r.reason} from {r.previous})"


def roles_of(cfg: ArkConfig, records: Iterable[ControlRecord]) -> Roles:
    """The group's roles after ``records``."""
    return Roles.replay(cfg.primary.name, records)


# -- the configuration of each node under the current roles ---------------------------------------------------
def nodes(cfg: ArkConfig) -> list[DatabaseSettings]:
    """Every database node of the group: the configured primary first, then the standbys."""
    return [cfg.primary, *cfg.standbys]


def node(cfg: ArkConfig, name: str) -> DatabaseSettings:
    """The node called ``name`` (primary or standby); ConfigError listing the names otherwise."""
    for found in nodes(cfg):
        if found.name == name:
            return found
    known = ", ".join(n.name for n in nodes(cfg))
    raise ConfigError(f"no node named {name!r} in group {cfg.group}", fix=f"use one of: {known}")


def _connection(settings: DatabaseSettings) -> dict[str, Any]:
    return {k: getattr(settings, k) for k in _CONNECTION}


def as_standby(cfg: ArkConfig, name: str) -> StandbySettings:
    """Standby settings of node ``name``: its own when it is a configured standby, else (the configured
    primary, demoted) its connection with the engine's standby defaults."""
    found = node(cfg, name)
    if isinstance(found, StandbySettings):
        return found
    model: type[StandbySettings] = engine(found.engine).standby
    return model.model_validate(_connection(found))


def as_primary(cfg: ArkConfig, name: str) -> PrimarySettings:
    """Primary settings of node ``name``: the configured primary's capture settings (tables, slot, publication)
    with the node's connection."""
    found = node(cfg, name)
    if found.name == cfg.primary.name:
        return cfg.primary
    if found.engine != cfg.primary.engine:
        raise ConfigError(f"node {name} runs {found.engine} and the group's primary {cfg.primary.engine}: a node of "
                          "another engine cannot become this group's primary",
                          fix="choose a standby of the primary's engine")
    model: type[PrimarySettings] = engine(found.engine).primary
    capture_fields = {k: getattr(cfg.primary, k) for k in type(cfg.primary).model_fields if k not in _CONNECTION}
    return model.model_validate({**capture_fields, **_connection(found)})


def config_under(cfg: ArkConfig, primary: str) -> ArkConfig:
    """The group's config with ``primary`` as its primary and every other node as a standby (the configured
    standbys keep their settings: a delayed standby keeps its delay across a switchover)."""
    if primary == cfg.primary.name:
        return cfg
    standbys = tuple(as_standby(cfg, n.name) for n in nodes(cfg) if n.name != primary)
    return cfg.model_copy(update={"primary": as_primary(cfg, primary), "standbys": standbys})
