"""Typed access to the engine registry (:mod:`common.engines`) for the CLI: one factory per part.

Nothing here names an engine: each function looks the engine up by the ``engine:`` of the settings it
is given and builds that engine's part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.config import ArkConfig
from common.engines import engine, load
from common.errors import PrerequisiteError
from common.probe import SourceProbe
from common.promotable import PromotableCheck
from common.settings import PrimarySettings, StandbySettings
from common.snapshot import SnapshotSource
from common.verify import Verifier
from consumers.base import Applier
from producers.base import LogCapture


def _part(engine_name: str, attr: str) -> Any:
    return load(getattr(engine(engine_name), attr))


def capture_factory(cfg: ArkConfig) -> Callable[[], LogCapture]:
    """A function building a fresh LogCapture for the group's primary."""
    cls = _part(cfg.primary.engine, "capture")
    return lambda: cls(cfg)


def snapshot_source(primary: PrimarySettings) -> SnapshotSource:
    """The primary's snapshot source (opens nothing yet)."""
    source: SnapshotSource = _part(primary.engine, "snapshot")(primary)
    return source


def applier_factory(standby: StandbySettings) -> Callable[[], Applier]:
    """A function building a fresh Applier for one standby."""
    cls = _part(standby.engine, "applier")
    return lambda: cls(standby)


def verifier(engine_name: str) -> Verifier:
    """The engine's verifier (compares a primary snapshot and a standby)."""
    found: Verifier = _part(engine_name, "verifier")()
    return found


def promotable_check(engine_name: str) -> PromotableCheck | None:
    """The engine's ``ark check --promotable`` comparison, or None when it has none."""
    path = engine(engine_name).promotable
    found: PromotableCheck | None = load(path)() if path else None
    return found


def source_probe(cfg: ArkConfig) -> SourceProbe:
    """What the primary itself says about the capture's position (for status without Kafka)."""
    probe: SourceProbe = _part(cfg.primary.engine, "probe")(cfg)
    return probe


def require_prerequisites(capture: LogCapture) -> None:
    """Raise PrerequisiteError for the first fatal problem of the source (with its fix)."""
    fatal = [p for p in capture.check_prerequisites() if p.fatal]
    if fatal:
        more = f" (and {len(fatal) - 1} more: run 'ark check')" if len(fatal) > 1 else ""
        raise PrerequisiteError(fatal[0].what + more, fix=fatal[0].fix)
