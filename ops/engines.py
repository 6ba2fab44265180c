"""Which capture and apply implementation serves which engine (the only place that knows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.config import ArkConfig, StandbySettings
from common.errors import ConfigError, PrerequisiteError
from consumers.base import Applier
from producers.base import LogCapture

_NOT_YET = {
    "oracle": "Oracle LogMiner capture is planned; it cannot run on this machine",
    "sqlserver": "SQL Server CDC capture is planned; it cannot run on this machine",
}


def capture_factory(cfg: ArkConfig) -> Callable[[], LogCapture]:
    """A function building a fresh LogCapture for the group's primary."""
    if cfg.primary.engine == "postgresql":
        from producers.postgresql.capture import PostgresCapture

        return lambda: PostgresCapture(cfg)
    if cfg.primary.engine == "mariadb":
        from producers.mariadb.capture import MariaDBCapture

        return lambda: MariaDBCapture(cfg)
    raise ConfigError(f"engine {cfg.primary.engine}: {_NOT_YET[cfg.primary.engine]}",
                      fix="use engine: postgresql for now")


def applier_factory(standby: StandbySettings) -> Callable[[], Applier]:
    """A function building a fresh Applier for one standby."""
    if standby.engine == "postgresql":
        from consumers.postgresql.applier import PostgresApplier

        return lambda: PostgresApplier(standby)
    if standby.engine == "mariadb":
        from consumers.mariadb.applier import MariaDBApplier

        return lambda: MariaDBApplier(standby)
    raise ConfigError(f"engine {standby.engine}: {_NOT_YET[standby.engine]}", fix="use engine: postgresql for now")


def snapshot_source(cfg: ArkConfig) -> Any | None:
    """The primary's snapshot source (``open()`` -> position, tables(patterns), rows(meta), close()), or
    None for engines whose initial sync is still their own (PostgreSQL's exported-snapshot COPY)."""
    if cfg.primary.engine == "mariadb":
        from producers.mariadb.snapshot import MariaDBSnapshotSource

        return MariaDBSnapshotSource(cfg.primary)
    return None


def require_prerequisites(capture: LogCapture) -> None:
    """Raise PrerequisiteError for the first fatal problem of the source (with its fix)."""
    fatal = [p for p in capture.check_prerequisites() if p.fatal]
    if fatal:
        more = f" (and {len(fatal) - 1} more: run 'ark check')" if len(fatal) > 1 else ""
        raise PrerequisiteError(fatal[0].what + more, fix=fatal[0].fix)
