"""The agent skeleton every long-running Ark process shares: supervise, heartbeat, control channel.

An agent (capture, apply, filesync, later the node agent) supplies an :class:`AgentBody`: what one
*session* does, how to judge a failure, and what its heartbeat says. :class:`Agent` does the rest, the
same way for all of them:

1. opens the group's one :class:`~common.control.ControlChannel` (retried with backoff while Kafka is
   away: losing the broker right at start-up is waited out like any later outage, guarantee 7) and
   hands the body the records replayed so far;
2. starts the heartbeat (signed, about once a second; best effort, never fatal);
3. serves Prometheus ``/metrics`` from the heartbeat's record, when given a port (common/metrics.py);
4. runs sessions until stopped. When a session fails, :meth:`AgentBody.recover` decides: start a new
   session at once (:attr:`Retry.NOW`: e.g. a table resync takes over), after a backoff doubling from 1 s
   to 30 s (:attr:`Retry.LATER`: a lost connection, a broker restart), or up to 4 s (:attr:`Retry.SOON`:
   the source database restarting, back within seconds), or stop with an error (returns the exception:
   bad config, fencing, a data error under ``on_data_error: stop``). A session that ran for
   ``SESSION_OK_S`` before it failed starts the backoff over: a new outage, not the last one again.

Broad catches live here only, at the loop boundary; everything else raises typed errors.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import Any

from common.control import ControlChannel, ControlRecord
from common.errors import ArkError, KafkaUnavailable

log = logging.getLogger(__name__)

#: Backoff between failed sessions: starts here, doubles, and stops growing at the maximum.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
#: The longest backoff after :attr:`Retry.SOON` (a try is one refused connection to a restarting database).
BACKOFF_SOON_MAX_S = 4.0
#: A session that ran this long before failing starts the backoff over.
SESSION_OK_S = 30.0


class Retry(Enum):
    """How to go on after a failed session."""

    NOW = "now"
    SOON = "soon"
    LATER = "later"


class Heartbeat:
    """What the skeleton needs of a heartbeat publisher (common.heartbeat.HeartbeatPublisher)."""

    def start(self) -> None:
        """Begin beating."""

    def beat_now(self) -> None:
        """Publish at once (a state change)."""

    def stop(self) -> None:
        """Send a last beat and stop."""

    def record(self) -> dict[str, Any]:
        """The record a beat would send now (what ``/metrics`` serves)."""
        return {}

    def delivered_at(self) -> float | None:
        """When (``time.monotonic()``) the newest beat that Kafka acknowledged was sent (None: none yet)."""
        return None


class AgentBody(ABC):
    """What one kind of agent does (see the module docstring)."""

    #: The heartbeat's ``agent`` field: capture, apply, filesync.
    kind: str = "?"
    #: Instance name: the node for a capture, the standby for an applier, the set for filesync.
    name: str = "?"
    #: The heartbeat's ``role``.
    role: str = "?"

    def __init__(self) -> None:
        self.state = "starting"
        self.message = ""
        #: Set by :meth:`Agent.stop`; sessions check it at their safe points.
        self.stopping = threading.Event()
        #: Set by the skeleton: publish a heartbeat now.
        self.beat_now: Callable[[], None] = lambda: None
        #: Set by the skeleton: when the newest acknowledged heartbeat was sent (the node agent's Kafka lease).
        self.beat_delivered_at: Callable[[], float | None] = lambda: None

    @abstractmethod
    def attach(self, channel: ControlChannel, backlog: list[ControlRecord]) -> None:
        """Start-up: the control records written before this process started (settings, pending requests)."""

    @abstractmethod
    def session(self, channel: ControlChannel) -> None:
        """One session (fresh connections); returns when stopped or when a new session should start."""

    @abstractmethod
    def recover(self, exc: Exception) -> Retry | Exception:
        """After a failed session: retry now, retry later, or the exception to stop with."""

    @abstractmethod
    def heartbeat(self) -> dict[str, Any]:
        """Heartbeat fields now (see schemas/avro/heartbeat.*.avsc)."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release what outlives sessions (background threads); called once, at the end."""


class Agent:
    """Runs an :class:`AgentBody` until :meth:`stop` (see the module docstring)."""

    def __init__(self, body: AgentBody, *, channel: Callable[[], ControlChannel],
                 heartbeat: Callable[[Callable[[], dict[str, Any]]], Heartbeat], metrics_port: int | None = None,
                 metrics_host: str = "0.0.0.0", group: str = "") -> None:
        self.body = body
        self._open_channel = channel
        self._make_heartbeat = heartbeat
        self.channel: ControlChannel | None = None
        self._beat: Heartbeat | None = None
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._group = group
        #: The port /metrics is served on (once running; useful with port 0).
        self.metrics_port: int | None = None

    def stop(self) -> None:
        """Ask the body to finish at its next safe point."""
        self.body.stopping.set()

    def _snapshot(self) -> dict[str, Any]:
        snap = self.body.heartbeat()
        if self.channel is not None:
            metrics = dict(snap.get("metrics", {}))
            if self.channel.refused:
                metrics["control_refused"] = float(sum(self.channel.refused.values()))
            published = self.channel.published
            for key, kind in (("quarantines", "retransmit"), ("resyncs", "table-resync-started")):
                if published[kind]:
                    metrics[key] = float(published[kind])
            snap["metrics"] = metrics
        return snap

    def _record(self) -> dict[str, Any]:
        """What /metrics serves: the heartbeat's record, or the body's state before the heartbeat starts."""
        if self._beat is not None:
            return self._beat.record()
        return {"state": self.body.state, "message": self.body.message}

    def _serve_metrics(self) -> Any:
        if self._metrics_port is None:
            return None
        from common.metrics import HeartbeatCollector, MetricsServer

        body = self.body
        server = MetricsServer(self._metrics_port, self._metrics_host,
                               HeartbeatCollector(self._record, self._group, body.kind, body.name))
        self.metrics_port = server.port
        log.info("%s %s serves /metrics on %s:%d", body.kind, body.name, self._metrics_host, server.port)
        return server

    def _attach(self) -> ControlChannel | None:
        body, backoff = self.body, BACKOFF_START_S
        while not body.stopping.is_set():
            try:
                channel = self._open_channel()
                backlog = channel.replay()
            except KafkaUnavailable as exc:
                body.state, body.message = "retrying", exc.message
                log.warning("%s %s cannot reach Kafka yet: %s; retrying in %.0f s", body.kind, body.name,
                            exc.message, backoff)
                body.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            body.attach(channel, backlog)
            return channel
        return None

    def run(self) -> None:
        """Supervise sessions until stopped; raises the error the body decided to stop with."""
        metrics = self._serve_metrics()  # a port in use fails here, before anything starts
        try:
            self._supervise()
        finally:
            if metrics is not None:
                metrics.close()

    def _supervise(self) -> None:
        body = self.body
        channel = self._attach()
        if channel is None:
            body.state = "stopped"
            return
        self.channel = channel
        beat = self._make_heartbeat(self._snapshot)
        self._beat = beat
        body.beat_now = beat.beat_now
        # Duck-typed heartbeats (tests' fakes) may lack acknowledgements: the lease then stays unknown (None).
        body.beat_delivered_at = getattr(beat, "delivered_at", body.beat_delivered_at)
        beat.start()
        backoff = BACKOFF_START_S
        try:
            while not body.stopping.is_set():
                started = time.monotonic()
                try:
                    body.session(channel)
                    backoff = BACKOFF_START_S
                except Exception as exc:  # noqa: BLE001 - loop boundary: the body judges every failure
                    verdict = body.recover(exc)
                    if isinstance(verdict, Exception):
                        body.state, body.message = "error", str(verdict)
                        beat.beat_now()
                        if verdict is exc:
                            raise
                        raise verdict from None
                    if verdict is Retry.NOW:
                        continue
                    ceiling = BACKOFF_SOON_MAX_S if verdict is Retry.SOON else BACKOFF_MAX_S
                    if time.monotonic() - started >= SESSION_OK_S:
                        backoff = BACKOFF_START_S
                    backoff = min(backoff, ceiling)
                    body.state = "retrying"
                    body.message = exc.message if isinstance(exc, ArkError) else f"{type(exc).__name__}: {exc}"
                    log.warning("%s %s: session ended: %s; retrying in %.0f s", body.kind, body.name, body.message,
                                backoff)
                    beat.beat_now()
                    body.stopping.wait(backoff)
                    backoff = min(backoff * 2, ceiling)
        finally:
            body.state = "stopped"
            try:
                body.close()
            finally:
                beat.stop()
                channel.close()
