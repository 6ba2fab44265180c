"""Where the console's facts come from, and where its actions go.

:class:`GroupSource` reads only Kafka (the heartbeat and control topics, the redo topic's end) plus,
when reachable, the databases (a standby's state row when its applier is not running; everything
``ark status`` reads when the broker is down). It keeps working when a database or the broker is down,
and says what it cannot see (:attr:`ConsoleView.blind`).

Actions are :class:`IntentActions`: each one is an intent written through :mod:`ops.intents` (the same
functions the CLI uses) on the group's control channel, or, for verify and switchover, the same code as
``ark verify`` and ``ark switchover``. The console never does behind the controller's back what the CLI does not.

The group's roles and epochs (common/roles.py) are replayed from the same control records the event feed
reads (one consumer), so a switchover or failover done elsewhere shows at the next refresh.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from common.config import ArkConfig
from common.control import ControlChannel
from common.errors import ArkError, KafkaUnavailable
from common.kafka import make_consumer, offset_for_time, read_range, topic_exists, watermarks
from common.roles import Roles, nodes, roles_of
from failover.handover import Report, Say
from ops import intents
from ops.console.model import HISTORY_S, ConsoleView, Feed, History, build_view
from schemas import envelope
from schemas.errors import CorruptEntry, NotAuthentic
from schemas.topics import heartbeat_topic

log = logging.getLogger(__name__)

VerifyFn = Callable[[str], tuple[dict[str, Any], int]]
SwitchoverFn = Callable[[str, Say], Report]

#: The switchover's grace for writing sessions and its longest wait per step: ``ark switchover``'s defaults.
SWITCHOVER_GRACE_S = 5.0
SWITCHOVER_TIMEOUT_S = 120.0


class IntentActions:
    """The console's actions: signed intents on ``channel`` (ops/intents.py), and verify."""

    def __init__(self, cfg: ArkConfig, channel: intents.Publisher, verify: VerifyFn | None = None,
                 check_delay: Callable[[ArkConfig, float], str | None] | None = None,
                 switchover: SwitchoverFn | None = None) -> None:
        self.cfg = cfg
        self.channel = channel
        self._verify = verify
        self._switchover = switchover
        self._check_delay = check_delay or (lambda c, s: intents.check_delay(c, s))

    def standby_names(self) -> list[str]:
        return [s.name for s in self.cfg.standbys]

    def set_delay(self, standby: str, seconds: float) -> str:
        """Refused like ``ark delay`` without --force when retention cannot hold the delay (DelayTooLong)."""
        intents.target_of(self.cfg, standby)
        self._check_delay(self.cfg, seconds)
        return intents.set_delay(self.channel, self.cfg, standby, seconds)

    def pause(self, standby: str) -> str:
        return intents.pause(self.channel, self.cfg, standby)

    def resume(self, standby: str) -> str:
        return intents.resume(self.channel, self.cfg, standby)

    def resync_table(self, standby: str, table: str) -> str:
        return intents.resync_table(self.channel, self.cfg, standby, table)

    def verify(self, standby: str) -> tuple[dict[str, Any], int]:
        """``ark verify STANDBY``: the report document and its exit code (takes seconds)."""
        if self._verify is not None:
            return self._verify(standby)
        from ops.verify import Options, verify_standby

        return verify_standby(self.cfg, standby, Options())

    def switchover(self, target: str, say: Say) -> Report:
        """``ark switchover TARGET`` with its default grace and timeout (takes seconds; each step line goes to
        ``say``). Raises HandoverRefused (nothing changed, exit 41) or HandoverFailed (part-way, exit 42)."""
        if self._switchover is not None:
            return self._switchover(target, say)
        from ops.handover import run_switchover

        return run_switchover(self.cfg, target, grace_s=SWITCHOVER_GRACE_S, timeout_s=SWITCHOVER_TIMEOUT_S, say=say)


class ConsoleSource(ABC):
    """What the console app needs: a view now, and the actions."""

    actions: IntentActions

    @abstractmethod
    def snapshot(self) -> ConsoleView:
        """Read what is new and build the view (blocking I/O: the app calls it from a worker thread)."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release connections."""


class HeartbeatFollower:
    """Follows the heartbeat topic from :data:`HISTORY_S` ago: the newest beat per agent, its history,
    and the feed's state changes and alerts."""

    def __init__(self, cfg: ArkConfig, history: History, feed: Feed) -> None:
        self.cfg = cfg
        self.history, self.feed = history, feed
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.refused = 0
        self._topic = heartbeat_topic(cfg.group)
        self._key = cfg.control_key_bytes()
        self._consumer: Any = None
        self._next = -1

    def poll(self) -> bool:
        """Read the beats sent since the last call; False when the topic does not exist yet."""
        if self._consumer is None:
            if not topic_exists(self.cfg.kafka, self._topic):
                return False
            self._next = offset_for_time(self.cfg.kafka, self._topic, int((time.time() - HISTORY_S) * 1000))
            self._consumer = make_consumer(self.cfg.kafka, group_id="ark-console")
        low, high = watermarks(self._consumer, self._topic)
        for msg in read_range(self._consumer, self._topic, max(self._next, low), high, timeout=10):
            self._next = (msg.offset() or 0) + 1
            try:
                envelope.check_signature(msg.value(), msg.headers(), self._key)
                beat = envelope.decode(msg.value(), msg.headers(), topic=self._topic, offset=msg.offset()).record
            except NotAuthentic:
                self.refused += 1
                continue
            except CorruptEntry:
                continue
            self.latest[(beat["agent"], beat["name"])] = beat
            self.history.add_beat(beat)
            self.feed.add_beat(beat)
        return True

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class GroupSource(ConsoleSource):
    """The console's view of a real group (see the module docstring)."""

    def __init__(self, cfg: ArkConfig, verify: VerifyFn | None = None) -> None:
        self.cfg = cfg
        self.history, self.feed = History(), Feed()
        self.follower = HeartbeatFollower(cfg, self.history, self.feed)
        self._reader: ControlChannel | None = None
        self._writer: ControlChannel | None = None
        #: Replayed from the control records the feed reads (None until the topic was read once).
        self.roles: Roles | None = None
        self._engines = {n.name: n.engine for n in nodes(cfg)}
        self._verify = verify
        self.actions = IntentActions(cfg, _LazyChannel(self._channel_for_writing), verify)

    def _channel_for_writing(self) -> ControlChannel:
        if self._writer is None:
            self._writer = ControlChannel.for_config(self.cfg, start=None)
        return self._writer

    def snapshot(self) -> ConsoleView:
        from ops.status import gather
        from ops.status_offline import probe

        reason = probe(self.cfg, timeout=3.0)
        if reason is not None:
            return self._offline(reason)
        blind: list[str] = []
        try:
            if not self.follower.poll():
                blind.append("no heartbeat topic yet: no agent of this group has run")
            self._read_control()
            status = gather(self.cfg, heartbeats=(self.follower.latest, self.follower.refused), roles=self.roles)
        except KafkaUnavailable as exc:
            return self._offline(exc.message)
        for sb in status["standbys"]:
            if sb["state"] in ("not running", "never synced") or sb["state"].startswith("down"):
                seen = f": {sb['message']}" if sb.get("message") else ""
                blind.append(f"standby {sb['name']} is {sb['state']}{seen}")
        for (agent, name), beat in self.follower.latest.items():
            if agent in ("capture", "apply") and not beat.get("db_healthy", True):
                blind.append(f"{agent} {name}: its database does not answer ({beat.get('message') or 'no detail'})")
        return build_view(status, self.follower.latest, self.history, self.feed, sorted(self.cfg.files), blind=blind,
                          roles=self.roles, engines=self._engines)

    def _read_control(self) -> None:
        """The control records that arrived: into the feed and the roles (the whole topic the first time)."""
        if self._reader is None:
            reader = ControlChannel.for_config(self.cfg, start=0)
            try:
                records = reader.replay()
            except KafkaUnavailable:
                reader.close()
                raise
            self._reader = reader
            self.roles = roles_of(self.cfg, records)
        else:
            records = self._reader.poll(5000)
            assert self.roles is not None
            self.roles.update(records)
        self.feed.add_records(records)

    def _offline(self, reason: str) -> ConsoleView:
        """Kafka unreachable: what the databases say (status_offline), and what cannot be seen."""
        from ops.status_offline import gather_offline

        doc = gather_offline(self.cfg, reason)
        p = doc["primary"]
        status = {"group": self.cfg.group, "redo_end_offset": -1, "warnings": [],
                  "capture": {"node": p["node"], "state": "unknown (Kafka unreachable)",
                              "source_position": p.get("current_position") or "", "produced_offset": -1,
                              "stalled": p["summary"] or p["message"], "message": ""},
                  "standbys": [{"name": sb["name"], "state": sb["state"],
                                "delay_seconds": self.cfg.standby(sb["name"]).delay_seconds,
                                "lag_seconds": sb["commit_age_seconds"], "lag_entries": None,
                                "applied_position": sb["applied_position"], "applied_offset": sb["applied_offset"],
                                "message": sb["message"]} for sb in doc["standbys"]]}
        blind = [f"Kafka unreachable ({reason}): no heartbeats, no events, no redo end; positions below come from "
                 "the databases, lag is the age of the last applied commit"]
        blind += [f"standby {sb['name']}: {sb['message']}" for sb in doc["standbys"] if sb["message"]]
        if p["message"]:
            blind.append(f"primary {p['node']}: {p['message']}")
        view = build_view(status, {}, self.history, self.feed, sorted(self.cfg.files), blind=blind, roles=self.roles,
                          engines=self._engines)
        view.kafka_ok = False
        return view

    def close(self) -> None:
        self.follower.close()
        for channel in (self._reader, self._writer):
            if channel is not None:
                try:
                    channel.close()
                except ArkError as exc:
                    log.debug("closing a control channel: %s", exc)


class _LazyChannel:
    """A control channel opened on first use (the console starts even when Kafka is down)."""

    def __init__(self, open_channel: Callable[[], ControlChannel]) -> None:
        self._open = open_channel

    def publish(self, body: Any, target: str = "") -> str:
        return self._open().publish(body, target)
