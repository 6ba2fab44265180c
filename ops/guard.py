"""Gathering what the refusals of common/guard.py look at, for the commands that write to a standby.

Everything here only reads: the standby's identity, state rows and replication sources; the primary's
and the other standbys' identities (best effort: an unreachable one is left out, and the identities
recorded on the control topic stand in for it); the recorded identities (best effort when Kafka is down).
"""

from __future__ import annotations

import contextlib
import logging

from common.config import ArkConfig, StandbySettings
from common.control import ControlChannel
from common.errors import ArkError
from common.guard import Recorded, Situation, first_refusal, recorded_identities, refusals
from common.identity import DatabaseIdentity
from consumers.base import Applier
from ops.engines import applier_factory, snapshot_source
from schemas.control import NodeIdentity

log = logging.getLogger(__name__)


def recorded(cfg: ArkConfig) -> Recorded:
    """The identities recorded on the group's control topic (empty when Kafka cannot be read)."""
    try:
        channel = ControlChannel.for_config(cfg)
        try:
            return recorded_identities(channel.replay())
        finally:
            channel.close()
    except ArkError as exc:
        log.info("recorded identities unavailable (%s): checking against live databases only", exc.message)
        return Recorded()


def _identity_of(kind: str, read: object) -> DatabaseIdentity | None:
    try:
        return read()  # type: ignore[operator]
    except ArkError as exc:
        log.info("%s's identity unavailable: %s", kind, exc.message)
        return None


def situation(cfg: ArkConfig, standby: StandbySettings, applier: Applier, action: str, *,
              overwrite: bool = False, occupied: dict[str, int] | None = None,
              rec: Recorded | None = None) -> Situation:
    """What the refusals look at for ``standby`` (read-only; TargetError when the standby cannot be read)."""
    facts = applier.inspect()
    primary = _identity_of("the primary", snapshot_source(cfg.primary).identity)
    others: dict[str, DatabaseIdentity] = {}
    for other in cfg.standbys:
        if other.name == standby.name:
            continue
        with contextlib.closing(applier_factory(other)()) as app:
            ident = _identity_of(f"standby {other.name}", app.identity)
        if ident is not None:
            others[other.name] = ident
    return Situation(group=cfg.group, standby=standby.name, action=action, facts=facts,
                     recorded=rec if rec is not None else recorded(cfg), primary=primary,
                     primary_name=cfg.primary.name, others=others, chain=standby.chain, overwrite=overwrite,
                     occupied=occupied or {}, config_path=str(cfg.source_path or "the config"))


def refuse_if_harmful(cfg: ArkConfig, standby: StandbySettings, applier: Applier, action: str, **kw: object
                      ) -> Situation:
    """Raise the first refusal for ``action`` on ``standby``; returns what was looked at."""
    s = situation(cfg, standby, applier, action, **kw)  # type: ignore[arg-type]
    first_refusal(s)
    return s


def all_refusals(cfg: ArkConfig, standby: StandbySettings) -> list[ArkError]:
    """Every refusal that would stop the applier of ``standby`` (for ``ark check``)."""
    with contextlib.closing(applier_factory(standby)()) as applier:
        return list(refusals(situation(cfg, standby, applier, "check")))


def record_standby(cfg: ArkConfig, standby: StandbySettings, ident: DatabaseIdentity) -> None:
    """Record on the control topic that ``standby`` is this database (after a sync)."""
    channel = ControlChannel.for_config(cfg, start=None)
    try:
        channel.publish(NodeIdentity("standby", ident.key, ident.label), standby.name)
    finally:
        channel.close()


def primary_refusal_check(cfg: ArkConfig, live: DatabaseIdentity) -> None:
    """Raise when the configured primary is recorded as one of the group's standbys (before capture sets up)."""
    from common.guard import source_refusal

    refusal = source_refusal(cfg.group, cfg.primary.name, live, recorded(cfg), str(cfg.source_path or "the config"))
    if refusal is not None:
        raise refusal
