"""The engine registry: the one place that knows which engines exist and where their parts live.

An engine is a plug-in made of these parts, registered here once:

========== ============================================ ===============================================
part       what it is                                   where
========== ============================================ ===============================================
settings   pydantic models of its primary and standby   ``common/engines/<engine>.py`` (loaded with the
           (defaults, engine-only fields)                config, so they live below every agent)
capture    :class:`producers.base.LogCapture`           ``producers/<engine>/``
snapshot   :class:`common.snapshot.SnapshotSource`      ``producers/<engine>/``, next to its capture
applier    :class:`consumers.base.Applier`              ``consumers/<engine>/``
verifier   :class:`common.verify.Verifier`: compares a  ``consumers/<engine>/`` (it reads the primary
           primary snapshot and a standby, in SQL        through the snapshot's token)
probe      :class:`common.probe.SourceProbe`            ``producers/<engine>/``: what the source says
                                                        when Kafka cannot be reached
node ops   :class:`common.node_ops.NodeOps`: fence,     ``producers/<engine>/`` (a node becomes a source
           sequences, promote (switchover, failover)     when it is promoted)
monitor    :class:`common.monitor.DatabaseMonitor`      ``producers/<engine>/``: sessions, long
           (optional)                                   transactions, lock waits, slots, the server log
health     :class:`common.node_health.HealthProbe`:     ``producers/<engine>/``: the node agent's
           process, login + query, writable (optional)  checks (``ark agent NODE``)
promotable :class:`common.promotable.PromotableCheck`   ``consumers/<engine>/``: what a promotion of a
                                                        standby would lack (``ark check --promotable``)
========== ============================================ ===============================================

The runtime parts are named by ``"module:attribute"`` and imported on first use
(:func:`load`), so loading a config never imports a database driver, and no module outside an engine's
own packages imports them (an import-linter contract checks it). Outside the engine packages and this
registry, no code names an engine: runners, ``ops/`` and the generic config go through :func:`engine`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from common.engines.mariadb import MariaDBPrimary, MariaDBStandby
from common.engines.postgresql import PostgresPrimary, PostgresStandby
from common.errors import ConfigError
from common.settings import PrimarySettings, StandbySettings


@dataclass(frozen=True)
class EngineSpec:
    """One engine's parts. Runtime parts are ``"module:attribute"`` paths, imported by :func:`load`."""

    name: str
    title: str
    primary: type[PrimarySettings]
    standby: type[StandbySettings]
    #: ``cls(cfg: ArkConfig) -> LogCapture``
    capture: str
    #: ``cls(primary: PrimarySettings) -> SnapshotSource``
    snapshot: str
    #: ``cls(standby: StandbySettings) -> Applier``
    applier: str
    #: ``cls() -> Verifier``
    verifier: str
    #: ``cls(cfg: ArkConfig) -> SourceProbe``
    probe: str
    #: ``cls(cfg: ArkConfig, node: str) -> common.node_ops.NodeOps``: fence, promote... ("" = not built yet)
    node_ops: str = ""
    #: ``cls(cfg: ArkConfig, db: DatabaseSettings) -> DatabaseMonitor`` ('' : the agents carry no database facts)
    monitor: str = ""
    #: ``cls(cfg: ArkConfig, db: DatabaseSettings) -> HealthProbe`` ('' : the node agent checks only the listener,
    #: the disks and the services)
    health: str = ""
    #: ``cls() -> PromotableCheck`` (``ark check --promotable``); "" when the engine has none
    promotable: str = ""


_ENGINES: dict[str, EngineSpec] = {}

#: Engines that are planned but not in this build, and why (for the error message).
PLANNED: dict[str, str] = {
    "oracle": "Oracle LogMiner capture is planned; it cannot run on this machine",
    "sqlserver": "SQL Server CDC capture is planned; it cannot run on this machine",
}


def register(spec: EngineSpec) -> None:
    """Add an engine (once)."""
    if spec.name in _ENGINES:
        raise ValueError(f"engine {spec.name} is registered twice")
    _ENGINES[spec.name] = spec


def names() -> list[str]:
    """The engines of this build."""
    return sorted(_ENGINES)


def engine(name: str) -> EngineSpec:
    """The engine called ``name``; ConfigError naming the known ones (and why a planned one is missing)."""
    spec = _ENGINES.get(name)
    if spec is not None:
        return spec
    known = ", ".join(names())
    if name in PLANNED:
        raise ConfigError(f"engine {name}: {PLANNED[name]}", fix=f"use one of: {known}")
    raise ConfigError(f"unknown engine {name!r}", fix=f"engine: is one of {known}")


def load(path: str) -> Any:
    """The object a ``"module:attribute"`` path names (imported now)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


register(EngineSpec(
    name="postgresql", title="PostgreSQL", primary=PostgresPrimary, standby=PostgresStandby,
    capture="producers.postgresql.capture:PostgresCapture",
    snapshot="producers.postgresql.snapshot:PostgresSnapshotSource",
    applier="consumers.postgresql.applier:PostgresApplier",
    verifier="consumers.postgresql.verify:PostgresVerifier",
    probe="producers.postgresql.probe:PostgresProbe",
    node_ops="producers.postgresql.node_ops:PostgresNodeOps",
    monitor="producers.postgresql.monitor:PostgresMonitor",
    health="producers.postgresql.health:PostgresHealth",
    promotable="consumers.postgresql.promotable:PostgresPromotable",
))

register(EngineSpec(
    name="mariadb", title="MariaDB", primary=MariaDBPrimary, standby=MariaDBStandby,
    capture="producers.mariadb.capture:MariaDBCapture",
    snapshot="producers.mariadb.snapshot:MariaDBSnapshotSource",
    applier="consumers.mariadb.applier:MariaDBApplier",
    verifier="consumers.mariadb.verify:MariaDBVerifier",
    probe="producers.mariadb.probe:MariaDBProbe",
    node_ops="producers.mariadb.node_ops:MariaDBNodeOps",
    health="producers.mariadb.health:MariaDBHealth",
    promotable="consumers.mariadb.promotable:MariaDBPromotable",
))
