"""What the console shows, computed from what it read (pure: no Kafka, no database, no Textual).

The console's source (ops/console/source.py) reads the status document (:func:`ops.status.gather`,
the same one ``ark status --json`` prints), the heartbeats it follows, and the control topic's
records. This module turns them into a :class:`ConsoleView`: the topology, one row per standby with
its sparklines, the capture, every agent's health and host facts, and the event feed.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.control import ControlRecord
from common.roles import Roles
from failover.plan import Decision, NodeView, decide_switchover
from failover.view import FRESH_S
from ops.lag import STALE_AFTER_S
from schemas.control import (
    AlertSent,
    ApplyUntil,
    ControllerDecision,
    EndEpoch,
    EpochBegun,
    EpochCut,
    EpochEnded,
    HandoverStep,
    NodeFenced,
    NodeIdentity,
    Pause,
    Resume,
    ResyncTable,
    Retransmit,
    RetransmitDone,
    RetransmitFailed,
    SetDelay,
    SetMaintenance,
    SourceGap,
    StandbyFrom,
    TableResynced,
    TableResyncProgress,
    TableResyncRefused,
    TableResyncStarted,
    VerifyHold,
)

#: How much history the sparklines show.
HISTORY_S = 600.0
#: Events kept in the feed.
MAX_EVENTS = 500
_BLOCKS = "▁▂▃▄▅▆▇█"

#: How applier states read in the console.
STATE_WORDS = {"awaiting-retransmit": "waiting for retransmit", "held for verify": "held for verify",
               "error": "stopped"}


def sparkline(values: Sequence[float | None], width: int = 20) -> str:
    """``values`` as a row of block characters, ``width`` wide (newest on the right; blank: no data).
    More values than columns are folded by taking each column's maximum (a lag spike stays visible)."""
    n = len(values)
    buckets: list[float | None]
    if n <= width:
        pad: list[float | None] = [None] * (width - n)
        buckets = pad + list(values)
    else:
        buckets = []
        for i in range(width):
            chunk = [v for v in values[i * n // width:(i + 1) * n // width] if v is not None]
            buckets.append(max(chunk) if chunk else None)
    known = [v for v in buckets if v is not None]
    top = max(known, default=0.0)
    out = []
    for v in buckets:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(_BLOCKS[0])
        else:
            out.append(_BLOCKS[min(len(_BLOCKS) - 1, int(v / top * (len(_BLOCKS) - 1) + 0.5))])
    return "".join(out)


@dataclass
class Sample:
    """One point of an agent's history."""

    at: float
    lag_s: float | None = None
    rate: float | None = None  # rows per second (applied or published)


class History:
    """The last :data:`HISTORY_S` seconds of each agent's lag and rate, from its heartbeats."""

    def __init__(self, window_s: float = HISTORY_S) -> None:
        self.window_s = window_s
        self._points: dict[tuple[str, str], deque[Sample]] = {}
        self._last: dict[tuple[str, str], tuple[float, float]] = {}  # (sent_at, rows counter)

    def add_beat(self, beat: dict[str, Any]) -> None:
        """Record one heartbeat (in the order they were sent)."""
        key = (beat["agent"], beat["name"])
        at = beat["sent_at_us"] / 1e6
        rows = float((beat.get("metrics") or {}).get("rows", 0.0))
        rate = None
        last = self._last.get(key)
        if last is not None and at > last[0]:
            rate = max(0.0, rows - last[1]) / (at - last[0]) if rows >= last[1] else 0.0
        self._last[key] = (at, rows)
        lag = float(beat.get("lag_seconds", 0.0)) if beat["agent"] == "apply" else None
        self.add(key, Sample(at, lag, rate))

    def add(self, key: tuple[str, str], sample: Sample) -> None:
        """Add a point."""
        points = self._points.setdefault(key, deque())
        points.append(sample)
        while points and points[0].at < sample.at - self.window_s:
            points.popleft()

    def series(self, key: tuple[str, str], what: str) -> list[float | None]:
        """The values of ``what`` (lag_s or rate) over the window, oldest first."""
        return [getattr(s, what) for s in self._points.get(key, ())]

    def latest_rate(self, key: tuple[str, str], over_s: float = 10.0) -> float | None:
        """Mean rate over the last ``over_s`` seconds."""
        points = [s for s in self._points.get(key, ()) if s.rate is not None]
        if not points:
            return None
        recent = [s.rate for s in points if s.at >= points[-1].at - over_s and s.rate is not None]
        return sum(recent) / len(recent) if recent else None


@dataclass(frozen=True)
class Event:
    """One line of the event feed."""

    at: float
    severity: str  # info, warn, error
    kind: str
    text: str


#: A control record's feed line: (severity, kind, text) from its body and the record (who issued it, its target).
_Line = tuple[str, str, str]


def _to(rec: ControlRecord) -> str:
    return rec.target or "all standbys"


def _resync_progress(b: TableResyncProgress, rec: ControlRecord) -> _Line:
    detail = f": {b.error}" if b.error else (f", {b.rows} rows" if b.rows else "")
    return "error" if b.phase == "failed" else "info", "resync", f"{_to(rec)}: {b.table} {b.phase}{detail}"


def _end_epoch(b: EndEpoch, rec: ControlRecord) -> _Line:
    if not b.next_primary:
        return "warn", "epoch", f"{rec.issued_by}: end of epoch {b.epoch} withdrawn"
    return "info", "epoch", f"{rec.issued_by}: capture asked to end epoch {b.epoch} at {b.upto} for {b.next_primary}"


def _standby_from(b: StandbyFrom, rec: ControlRecord) -> _Line:
    resync = f", resyncing {', '.join(b.resync)}" if b.resync else ""
    return "info", "role", (f"{rec.target} applies as a standby of epoch {b.epoch} from redo offset {b.offset} "
                            f"({b.reason}{resync})")


# One entry per record type the feed shows; the hold protocol's chatter has none. Handover records (common/roles.py
# replays them) name their node in ``rec.target`` as it is; the others read an empty target as "all standbys".
_LINES: dict[type, Callable[[Any, ControlRecord], _Line]] = {
    Retransmit: lambda b, r: ("warn", "quarantine", f"{_to(r)}: entry at redo offset {b.offset} corrupt "
                              f"({b.reason}): quarantined, retransmission requested after "
                              f"{b.after_position or 'the start'}"),
    RetransmitDone: lambda b, r: ("info", "retransmit", f"capture republishes after {b.after_position or 'the start'} "
                                  f"({len(b.request_ids)} request(s))"),
    RetransmitFailed: lambda b, r: ("error", "retransmit",
                                    f"capture cannot republish after {b.after_position}: {b.reason}"),
    TableResyncStarted: lambda b, r: ("warn", "resync", f"{_to(r)}: {b.table} resync started: {b.reason}"),
    TableResyncProgress: _resync_progress,
    TableResynced: lambda b, r: ("info", "resync", f"{_to(r)}: {b.table} resynced ({b.rows} rows at {b.position}, "
                                 f"{b.replayed} replayed)"),
    TableResyncRefused: lambda b, r: ("error", "resync", f"{_to(r)}: resync of {b.table} refused: {b.reason}"),
    SourceGap: lambda b, r: ("error", "gap", f"source gap accepted after {b.after_position} ({b.hole}); standbys "
                             f"stop at redo offset {b.first_offset} until resynced"),
    SetDelay: lambda b, r: ("info", "intent", f"{r.issued_by}: delay of {_to(r)} set to {b.seconds:g} s"),
    Pause: lambda b, r: ("info", "intent", f"{r.issued_by}: pause {_to(r)}"),
    Resume: lambda b, r: ("info", "intent", f"{r.issued_by}: resume {_to(r)}"),
    ResyncTable: lambda b, r: ("info", "intent", f"{r.issued_by}: resync {b.table} on {_to(r)}"),
    VerifyHold: lambda b, r: ("info", "verify", f"{r.issued_by}: verify of {_to(r)} started"),
    ControllerDecision: lambda b, r: ({"failover": "warn", "failover-failed": "error"}.get(b.action, "info"),
                                      "controller", f"{b.holder}: {b.action} {r.target} ({b.sentence})"),
    SetMaintenance: lambda b, r: ("warn" if b.mode == "on" else "info", "intent",
                                  f"{r.issued_by}: maintenance {b.mode}" + (f" ({b.reason})" if b.reason else "")),
    NodeIdentity: lambda b, r: ("info", "identity", f"{_to(r)} recorded as {b.role} ({b.label})"),
    HandoverStep: lambda b, r: ("error" if b.phase == "failed" else "info", b.action,
                                f"epoch {b.epoch}: {b.phase}: {b.detail}"),
    EpochBegun: lambda b, r: ("warn", "epoch", f"epoch {b.epoch} begins: {b.primary} is primary (after a "
                              f"{b.reason} from {b.previous}; end-of-epoch marker at redo offset {b.marker_offset})"),
    EndEpoch: _end_epoch,
    EpochEnded: lambda b, r: ("info", "epoch", f"epoch {b.epoch} ended at {b.position or '-'}: marker at redo "
                              f"offset {b.marker_offset}, next primary {b.next_primary}"),
    NodeFenced: lambda b, r: ("warn", "fenced", f"{r.target} fenced in epoch {b.epoch}: {b.how}, "
                              f"{b.sessions_ended} sessions ended"),
    StandbyFrom: _standby_from,
    EpochCut: lambda b, r: ("warn", "epoch", f"epoch {b.epoch} cut at redo offset {b.from_offset}: entries "
                            "committed from then on are not the group's history"),
    ApplyUntil: lambda b, r: ("info", "intent", f"{r.issued_by}: {r.target} applies up to a point in time"
                              if b.until_us else f"{r.issued_by}: {r.target} applies without a point in time again"),
    # node-state records are not repeated: the feed shows the agents' own changes
    AlertSent: lambda b, r: ("info" if b.outcome.startswith("exited 0") else "error", "alert",
                             f"{b.holder}: alert for {b.event_kind} of {r.target or 'the group'}: {b.outcome}"),
}


def event_of(rec: ControlRecord) -> Event | None:
    """The feed line of a control record (None for the hold protocol's chatter)."""
    line = _LINES.get(type(rec.body))
    if line is None:
        return None
    severity, kind, text = line(rec.body, rec)
    return Event(rec.issued_at_us / 1e6, severity, kind, text)


class Feed:
    """The event feed: control records, agents' state changes and their server-log alerts, newest last."""

    def __init__(self) -> None:
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._states: dict[tuple[str, str], str] = {}
        self._alerts_seen: set[tuple[str, int, str]] = set()

    def add(self, event: Event) -> None:
        self.events.append(event)

    def add_records(self, records: Iterable[ControlRecord]) -> None:
        for rec in records:
            ev = event_of(rec)
            if ev is not None:
                self.add(ev)

    def add_beat(self, beat: dict[str, Any]) -> None:
        """State changes of an agent (to an error, a retry, a stop, and back) and its new alert lines."""
        key = (beat["agent"], beat["name"])
        at, state = beat["sent_at_us"] / 1e6, beat["state"]
        before = self._states.get(key)
        self._states[key] = state
        if before is not None and before != state:
            sev = "error" if state == "error" else "warn" if state in ("retrying", "stopped",
                                                                        "awaiting-retransmit") else "info"
            detail = f": {beat['message']}" if beat.get("message") and sev != "info" else ""
            self.add(Event(at, sev, "agent", f"{key[0]} {key[1]}: {before} → {state}{detail}"))
        for alert in beat.get("alerts") or ():
            mark = (alert["source"], alert["at_us"], alert["text"])
            if mark in self._alerts_seen:
                continue
            self._alerts_seen.add(mark)
            sev = "error" if alert["severity"] in ("PANIC", "FATAL") else "warn"
            self.add(Event(alert["at_us"] / 1e6, sev, "alert", f"{alert['source']}: {alert['text']}"))

    def newest(self, n: int = MAX_EVENTS) -> list[Event]:
        """The newest ``n`` events, oldest first (sorted by time)."""
        return sorted(self.events, key=lambda e: e.at)[-n:]


# -- the view --------------------------------------------------------------------------------------------
@dataclass
class StandbyRow:
    name: str
    state: str
    delay_s: float
    lag_s: float | None
    lag_entries: int | None
    rate: float | None
    applied_position: str
    applied_offset: int
    message: str
    applied_commit_time: str = ""
    lag_series: list[float | None] = field(default_factory=list)
    rate_series: list[float | None] = field(default_factory=list)
    #: standby, or demoted (a former primary no applier may write to until 'ark reinstate').
    role: str = "standby"


@dataclass
class AgentRow:
    agent: str
    name: str
    host: str
    pid: int
    role: str
    epoch: int
    state: str
    age_s: float
    metrics: dict[str, float]
    processes: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    message: str
    db_healthy: bool


@dataclass
class ConsoleView:
    """Everything the screens show at one moment."""

    group: str
    at: float
    kafka_ok: bool = True
    redo_end: int = -1
    capture: dict[str, Any] = field(default_factory=dict)
    standbys: list[StandbyRow] = field(default_factory=list)
    agents: list[AgentRow] = field(default_factory=list)
    file_sets: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: What the console cannot see right now, and why.
    blind: list[str] = field(default_factory=list)
    #: The group's roles and epochs as the control topic says (a copy: the source keeps updating its own).
    roles: Roles | None = None
    #: Every node as a switchover decides on it (roles and the appliers' fresh heartbeats), and the capture's
    #: state by its fresh heartbeat ("not running" when none).
    nodes: dict[str, NodeView] = field(default_factory=dict)
    capture_beat_state: str = "not running"


def describe_state(state: str, message: str) -> str:
    """An applier's state in the console's words: running, delayed, paused, waiting for retransmit,
    resyncing TABLE, stopped (with its error), down."""
    for part in message.split(";"):
        part = part.strip()
        if " resyncing" in part:
            return f"resyncing {part.split(' resyncing', 1)[0]}"
    return STATE_WORDS.get(state, state)


def agent_rows(beats: dict[tuple[str, str], dict[str, Any]], now: float) -> list[AgentRow]:
    rows = []
    for (agent, name), b in sorted(beats.items()):
        age = now - b["sent_at_us"] / 1e6
        state = b["state"] if age < STALE_AFTER_S else f"down ({age:.0f} s)"
        rows.append(AgentRow(agent, name, b.get("host", ""), int(b.get("pid", 0)), b.get("role", ""),
                             int(b.get("epoch", 0)), state, age, dict(b.get("metrics") or {}),
                             list(b.get("processes") or []), list(b.get("alerts") or []), b.get("message", ""),
                             bool(b.get("db_healthy", True))))
    return rows


def node_views(roles: Roles, engines: dict[str, str], beats: dict[tuple[str, str], dict[str, Any]],
               now: float) -> dict[str, NodeView]:
    """Every node (``engines``: name -> engine) as failover/plan.py decides on it: its role, and its applier as a
    heartbeat sent within :data:`failover.view.FRESH_S` says (as ``ark switchover`` sees it)."""
    out = {}
    for name, eng in engines.items():
        beat = beats.get(("apply", name))
        if beat is not None and now - beat["sent_at_us"] / 1e6 >= FRESH_S:
            beat = None
        out[name] = NodeView(name=name, role=roles.role_of(name), engine=eng,
                             applier_state=beat["state"] if beat else "not running",
                             applied_offset=int(beat.get("applied_offset", -1)) if beat else -1,
                             epoch=int(beat.get("epoch", 0)) if beat else 0,
                             delay_seconds=float(beat.get("delay_seconds", 0.0)) if beat else 0.0)
    return out


def capture_beat_state(beats: dict[tuple[str, str], dict[str, Any]], now: float) -> str:
    """The capture's state by its freshest heartbeat, with its message ("not running" when none is fresh)."""
    fresh = [b for (agent, _n), b in beats.items() if agent == "capture" and now - b["sent_at_us"] / 1e6 < FRESH_S]
    if not fresh:
        return "not running"
    beat = max(fresh, key=lambda b: b["sent_at_us"])
    return beat["state"] + (f" ({beat['message']})" if beat.get("message") else "")


def switchover_decision(view: ConsoleView, target: str) -> Decision:
    """``failover/plan.decide_switchover`` on what the console knows (``ark switchover`` decides again)."""
    if view.roles is None or not view.kafka_ok:
        return Decision(False, "the console cannot read the control topic now, so it does not know the group's roles",
                        fix="wait until the banner no longer says Kafka is unreachable, or run 'ark switchover "
                        f"{target}'")
    state = view.capture_beat_state
    return decide_switchover(view.roles, target, view.nodes, capture_running=state == "running",
                             capture_state=state)


def _when(us: int) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(us / 1e6))


def topology_lines(view: ConsoleView) -> list[str]:
    """Who feeds whom: the epoch and since when, the primary and its capture, each node's role, state and delay."""
    cap = view.capture
    roles = view.roles
    if roles is None:
        lines = [f"epoch {cap.get('epoch', 0)} (by the capture's heartbeat: the control topic is not readable)"]
    elif roles.reigns:
        lines = [f"{roles.describe()} since {_when(roles.reigns[-1].since_us)}"]
    else:
        lines = [roles.describe()]
    if roles is not None and not view.kafka_ok:
        lines[0] += " (as last read: Kafka is unreachable)"
    lines.append(f"{cap.get('node', '?')} [primary] → capture {cap.get('state', '?')} → redo topic")
    for sb in view.standbys:
        if sb.role == "demoted":
            lines.append(f"  ✗ {sb.name} [demoted: former primary; 'ark reinstate {sb.name}' makes it a standby]")
            continue
        delay = f"delay {sb.delay_s:g} s" if sb.delay_s else "real time"
        lines.append(f"  └→ {sb.name} [{sb.role}] {sb.state}, {delay}")
    return lines


def build_view(status: dict[str, Any], beats: dict[tuple[str, str], dict[str, Any]], history: History, feed: Feed,
               file_sets: Sequence[str] = (), now: float | None = None, blind: Sequence[str] = (),
               roles: Roles | None = None, engines: dict[str, str] | None = None) -> ConsoleView:
    """The console's view from the status document, the newest heartbeats, the history and the feed;
    ``roles`` (replayed from the control topic) and ``engines`` (node -> engine) for the topology and the
    switchover's decision."""
    now = time.time() if now is None else now
    view = ConsoleView(group=status["group"], at=now, redo_end=status.get("redo_end_offset", -1),
                       warnings=list(status.get("warnings", [])), blind=list(blind))
    if roles is not None:
        view.roles = copy.deepcopy(roles)
        view.nodes = node_views(view.roles, engines or {}, beats, now)
    view.capture_beat_state = capture_beat_state(beats, now)
    cap = dict(status.get("capture", {}))
    cap_beat = beats.get(("capture", cap.get("node", "")))
    metrics = (cap_beat or {}).get("metrics") or {}
    cap["epoch"] = int((cap_beat or {}).get("epoch", 0))
    cap["retained_bytes"] = metrics.get("db.slot_retained_bytes")
    cap["rate"] = history.latest_rate(("capture", cap.get("node", "")))
    cap["rate_series"] = history.series(("capture", cap.get("node", "")), "rate")
    view.capture = cap
    for sb in status.get("standbys", []):
        key = ("apply", sb["name"])
        view.standbys.append(StandbyRow(
            name=sb["name"], state=describe_state(sb["state"], sb.get("message", "")),
            delay_s=float(sb.get("delay_seconds") or 0.0), lag_s=sb.get("lag_seconds"),
            lag_entries=sb.get("lag_entries"), rate=history.latest_rate(key),
            applied_position=sb.get("applied_position") or "", applied_offset=int(sb.get("applied_offset", -1)),
            message=sb.get("message", ""), applied_commit_time=sb.get("applied_commit_time") or "",
            lag_series=history.series(key, "lag_s"), rate_series=history.series(key, "rate"),
            role=sb.get("role", "standby")))
    view.agents = agent_rows(beats, now)
    for fs in file_sets:
        members = [a for a in view.agents if a.agent == "filesync" and (a.name == fs or a.name.startswith(f"{fs}/"))]
        view.file_sets.append({"name": fs, "agents": [(a.name, a.role, a.state) for a in members]})
    view.events = feed.newest()
    return view
