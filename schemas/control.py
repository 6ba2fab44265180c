"""Typed records of the control topic: one record type per kind of intent or decision.

The wire form is the highest ``schemas/avro/control.v<N>.avsc`` (v2 added typed bodies, v3 the sequence
requests of issue 9, v4 the role and epoch records of failover/ and the recovery points of ``ark skip`` and
``ark failover --until``, v5 the automatic controller's lease, decisions and maintenance of issue 11, v6 the
node agents' state changes and the alert command's runs): the envelope of v1 (group, kind, target, issued_by,
issued_at_us, request_id, and a string ``args`` map) plus ``body``, a union with one Avro record per kind.
Version 1 records (``args`` only) stay readable: :func:`body_from_wire` rebuilds the typed body from their ``args``
(:func:`body_from_args`).

Every record is authenticated (see :mod:`schemas.envelope`, ``ark-sig``): the typed body is what an
agent acts on, never a string map. Adding a kind means a dataclass here, its Avro record in a new
schema version, and a test that the two agree (tests/unit/test_control_records.py checks it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Final

CONTROL_SCHEMA: Final = "control"
_NS = "ark.control"


# -- operator intents ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetDelay:
    """Apply the target standby (or all: target '') no earlier than commit + ``seconds``."""

    KIND: ClassVar[str] = "set-delay"
    seconds: float


@dataclass(frozen=True)
class Pause:
    """Stop applying on the target standby (or all); entries wait in Kafka."""

    KIND: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume:
    """Apply again on the target standby (or all)."""

    KIND: ClassVar[str] = "resume"


@dataclass(frozen=True)
class ResyncTable:
    """Resync one table of the target standby while the others keep applying."""

    KIND: ClassVar[str] = "resync-table"
    table: str


# -- filesync's delayed targets (filesync/delay.py); target "<set>/<target>", or "<set>/" for every target -----
@dataclass(frozen=True)
class FilesSetDelay:
    """Apply the file target's records no earlier than their publication + ``seconds``."""

    KIND: ClassVar[str] = "files-set-delay"
    seconds: float


@dataclass(frozen=True)
class FilesPause:
    """Hold the file target (it applies nothing until a resume)."""

    KIND: ClassVar[str] = "files-pause"


@dataclass(frozen=True)
class FilesResume:
    """Release a held file target."""

    KIND: ClassVar[str] = "files-resume"


# -- CRC retransmission (guarantee 4): applier -> capture, then the capture's answers ---------------
@dataclass(frozen=True)
class Retransmit:
    """Republish every commit above ``after_key``: the entry at ``offset`` is corrupt."""

    KIND: ClassVar[str] = "retransmit"
    after_position: str
    after_key: bytes
    offset: int
    reason: str


@dataclass(frozen=True)
class RetransmitDone:
    """The capture republishes from ``after_key`` for these requests; the first entry is durable."""

    KIND: ClassVar[str] = "retransmit-done"
    request_ids: tuple[str, ...]
    after_position: str
    after_key: bytes


@dataclass(frozen=True)
class RetransmitFailed:
    """The capture cannot republish from ``after_key``: the source no longer holds that log."""

    KIND: ClassVar[str] = "retransmit-failed"
    request_ids: tuple[str, ...]
    after_position: str
    after_key: bytes
    #: Where the source's retained log starts now ("" when unknown).
    source_floor: str
    reason: str


# -- ark verify's hold (consumers/hold.py has the protocol) ----------------------------------------
@dataclass(frozen=True)
class VerifyHold:
    """CLI -> applier: stop at the next transaction boundary, for at most ``max_hold_s``."""

    KIND: ClassVar[str] = "verify-hold"
    max_hold_s: float


@dataclass(frozen=True)
class VerifyArmed:
    """Applier -> CLI: stopped, with this committed state."""

    KIND: ClassVar[str] = "verify-armed"
    request: str
    position: str
    next_offset: int


@dataclass(frozen=True)
class VerifyAt:
    """CLI -> applier: apply everything below ``key`` (the primary snapshot's position), then hold."""

    KIND: ClassVar[str] = "verify-at"
    request: str
    position: str
    key: bytes


@dataclass(frozen=True)
class VerifyHeld:
    """Applier -> CLI: holding at the position, with this committed state."""

    KIND: ClassVar[str] = "verify-held"
    request: str
    position: str
    position_key: bytes
    next_offset: int
    armed_s: float


@dataclass(frozen=True)
class VerifyRelease:
    """CLI -> applier: go on."""

    KIND: ClassVar[str] = "verify-release"
    request: str


# -- table resync decisions (consumers/table_resync.py): never silent --------------------------------
@dataclass(frozen=True)
class TableResyncStarted:
    """The applier stopped applying ``table`` and started resyncing it (its rows wait meanwhile)."""

    KIND: ClassVar[str] = "table-resync-started"
    table: str
    request: str
    reason: str


@dataclass(frozen=True)
class TableResyncProgress:
    """A step of a table resync: ``phase`` is snapshot, copied, swapped or failed."""

    KIND: ClassVar[str] = "table-resync-progress"
    table: str
    request: str
    phase: str
    position: str = ""
    rows: int = 0
    error: str = ""


@dataclass(frozen=True)
class TableResynced:
    """The table follows the stream again: copied at ``position``, ``replayed`` rows re-applied after it."""

    KIND: ClassVar[str] = "table-resynced"
    table: str
    request: str
    position: str
    rows: int
    replayed: int


@dataclass(frozen=True)
class TableResyncRefused:
    """The applier will not resync ``table`` (not a replicated table, ...)."""

    KIND: ClassVar[str] = "table-resync-refused"
    table: str
    request: str
    reason: str


# -- identities (common/guard.py) -------------------------------------------------------------------
@dataclass(frozen=True)
class NodeIdentity:
    """The database behind node ``node`` (the record's target) is ``identity`` (``engine:server:database``),
    in ``role`` primary or standby: recorded by the capture when it starts and by ``ark sync``."""

    KIND: ClassVar[str] = "node-identity"
    role: str
    identity: str
    label: str


# -- source gaps (producers/gap.py, consumers/gaps.py) ---------------------------------------------
@dataclass(frozen=True)
class SourceGap:
    """The operator accepted a hole in the source's log after ``after_key``; redo entries from
    ``first_offset`` on follow it."""

    KIND: ClassVar[str] = "source-gap"
    after_position: str
    after_key: bytes
    first_offset: int
    hole: str


# -- sequences (schema v3): the capture publishes their values on request (before a switchover) --------
@dataclass(frozen=True)
class PublishSequences:
    """Operator or controller -> capture: publish the values of every replicated sequence now."""

    KIND: ClassVar[str] = "publish-sequences"
    reason: str


@dataclass(frozen=True)
class SequencesPublished:
    """Capture -> requester: the values asked for by ``request`` are in the redo topic at ``offset``."""

    KIND: ClassVar[str] = "sequences-published"
    request: str
    position: str
    offset: int
    sequences: int


# -- roles and epochs (common/roles.py derives the group's roles by replaying these; failover/ writes them) ----
@dataclass(frozen=True)
class EpochBegun:
    """Node ``primary`` (also the record's target) is the group's primary from epoch ``epoch`` on.

    ``previous`` was the primary of the epoch before; ``reason`` is switchover or failover;
    ``marker_offset`` is the redo offset of the end-of-epoch marker that closed the previous epoch."""

    KIND: ClassVar[str] = "epoch-begun"
    epoch: int
    primary: str
    previous: str
    reason: str
    marker_offset: int


@dataclass(frozen=True)
class EndEpoch:
    """Intent to the capture of epoch ``epoch``: publish everything up to the (fenced) primary's log position
    ``upto``, then the end-of-epoch marker naming ``next_primary``, then stop publishing."""

    KIND: ClassVar[str] = "end-epoch"
    epoch: int
    next_primary: str
    upto: str


@dataclass(frozen=True)
class EpochEnded:
    """Epoch ``epoch`` ended with the marker at redo offset ``marker_offset``; ``position`` is its last source
    position. Nothing of that epoch may be published after it (appliers reject it, captures refuse)."""

    KIND: ClassVar[str] = "epoch-ended"
    epoch: int
    next_primary: str
    marker_offset: int
    position: str


@dataclass(frozen=True)
class StandbyFrom:
    """Node (the record's target) applies as a standby of epoch ``epoch`` from redo offset ``offset`` on: its
    data already holds everything below (the old primary after a switchover, a reinstated one after its resync)."""

    KIND: ClassVar[str] = "standby-from"
    epoch: int
    offset: int
    reason: str
    #: Tables whose rows on the node differ from the group's (a reinstated primary's divergence): the applier
    #: resyncs them from the primary, holding their rows back meanwhile.
    resync: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeFenced:
    """Node (the record's target), a primary, was made read-only by failover's fencing (the only path that may
    make a primary read-only), with ``sessions_ended`` client sessions ended after the grace."""

    KIND: ClassVar[str] = "node-fenced"
    epoch: int
    how: str
    sessions_ended: int


@dataclass(frozen=True)
class HandoverStep:
    """A step of a switchover, failover or reinstatement (``action``) towards epoch ``epoch``, for the record:
    ``phase`` is started, fenced, drained, applied, sequences, promoted, done or failed."""

    KIND: ClassVar[str] = "handover"
    action: str
    epoch: int
    phase: str
    detail: str
    seconds: float


# -- a delayed standby as a recovery point (consumers/recovery.py, failover/handover.py) ---------------------
@dataclass(frozen=True)
class SkipTransaction:
    """The target standby must not apply the source transaction that starts at redo offset ``offset`` (its id
    ``txn_id``, for the record): an operator's ``ark skip`` of a bad transaction still inside its delay."""

    KIND: ClassVar[str] = "skip-transaction"
    offset: int
    txn_id: str
    reason: str


@dataclass(frozen=True)
class ApplyUntil:
    """The target standby applies every transaction committed before ``until_us`` at once (no delay) and holds
    at the first one committed at or after it (0: no such point any more)."""

    KIND: ClassVar[str] = "apply-until"
    until_us: int


@dataclass(frozen=True)
class EpochCut:
    """A point-in-time failover to the target node: entries of epoch ``epoch`` from redo offset ``from_offset``
    on (committed at or after ``until_us``) are not part of the group's history; every applier skips them, and
    one that applied some must be resynced."""

    KIND: ClassVar[str] = "epoch-cut"
    epoch: int
    from_offset: int
    until_us: int


# -- automatic failover (schema v5; failover/controller.py, failover/lease.py, failover/automation.py) ---------
@dataclass(frozen=True)
class ControllerLease:
    """A controller claims or renews the group's one active-controller lease for ``ttl_s`` seconds (0: it gives
    the lease up). Written on ``ark.<group>.lease``, not on the control topic (one every ttl/3 s forever would
    make every agent's replay of the control topic grow without end); failover/lease.py has the rules."""

    KIND: ClassVar[str] = "controller-lease"
    holder: str
    ttl_s: float


@dataclass(frozen=True)
class ControllerDecision:
    """The active controller ``holder`` decided ``action`` (active, failover, failover-done, failover-failed; or
    error: a controller's session failed) in epoch ``epoch``; the record's target is the failover target;
    ``sentence`` says why, as the controller logs it."""

    KIND: ClassVar[str] = "controller-decision"
    action: str
    epoch: int
    sentence: str
    holder: str


@dataclass(frozen=True)
class SetMaintenance:
    """An operator's ``ark maintenance on|off`` (``mode``): while on, no controller fails over automatically."""

    KIND: ClassVar[str] = "maintenance"
    mode: str
    reason: str


@dataclass(frozen=True)
class NodeState:
    """A node agent's change of state (the record's target is the node): ``state`` failed, restarting, or healthy
    again after one of those; ``previous`` the state before; the node's ``role`` and the group's ``epoch`` then;
    ``message`` the agent's sentence. Fencing is recorded as :class:`NodeFenced` instead."""

    KIND: ClassVar[str] = "node-state"
    state: str
    previous: str
    role: str
    epoch: int
    message: str


@dataclass(frozen=True)
class AlertSent:
    """The active controller ``holder`` ran the group's alert command for the event at control offset
    ``event_offset`` (kind ``event_kind``); ``outcome`` says how it ended, after ``attempts`` runs (2: retried once).
    A controller that takes over alerts only events above the highest ``event_offset`` recorded (failover/alerts.py)."""

    KIND: ClassVar[str] = "alert-sent"
    event_offset: int
    event_kind: str
    outcome: str
    attempts: int
    holder: str


Body = (SetDelay | Pause | Resume | ResyncTable | FilesSetDelay | FilesPause | FilesResume | Retransmit
        | RetransmitDone | RetransmitFailed | VerifyHold | VerifyArmed | VerifyAt | VerifyHeld | VerifyRelease
        | TableResyncStarted | TableResyncProgress | TableResynced | TableResyncRefused | NodeIdentity | SourceGap
        | PublishSequences | SequencesPublished | EpochBegun | EndEpoch | EpochEnded | StandbyFrom | NodeFenced
        | HandoverStep | SkipTransaction | ApplyUntil | EpochCut | ControllerLease | ControllerDecision
        | SetMaintenance | NodeState | AlertSent)

#: Every kind, by its wire name.
KINDS: Final[dict[str, type[Any]]] = {cls.KIND: cls for cls in (
    SetDelay, Pause, Resume, ResyncTable, FilesSetDelay, FilesPause, FilesResume, Retransmit, RetransmitDone,
    RetransmitFailed, VerifyHold, VerifyArmed, VerifyAt, VerifyHeld, VerifyRelease, TableResyncStarted,
    TableResyncProgress, TableResynced, TableResyncRefused, NodeIdentity, SourceGap, PublishSequences,
    SequencesPublished, EpochBegun, EndEpoch, EpochEnded, StandbyFrom, NodeFenced, HandoverStep, SkipTransaction,
    ApplyUntil, EpochCut, ControllerLease, ControllerDecision, SetMaintenance, NodeState, AlertSent)}

#: v1 names of kinds that were renamed (a "quarantine" is a corrupt entry only; a table is resynced).
_RENAMED: Final = {"table-quarantined": TableResyncStarted.KIND}


def kind_of(body: Body) -> str:
    """The wire name of a body's kind."""
    return body.KIND


def avro_name(cls: type[Any]) -> str:
    """The full Avro name of a kind's record."""
    return f"{_NS}.{cls.__name__}"


def to_wire(body: Body) -> tuple[str, dict[str, Any]]:
    """The Avro union branch (name, record) of ``body``."""
    record = {f.name: (list(v) if isinstance(v := getattr(body, f.name), tuple) else v)
              for f in dataclasses.fields(body)}
    return avro_name(type(body)), record


def _from_record(cls: type[Any], record: dict[str, Any]) -> Body:
    values = {}
    for f in dataclasses.fields(cls):
        value = record[f.name]
        values[f.name] = tuple(value) if isinstance(value, list) else value
    body: Body = cls(**values)
    return body


def _ids(args: dict[str, str]) -> tuple[str, ...]:
    return tuple(i for i in args.get("request_ids", args.get("request_id", "")).split(",") if i)


def body_from_args(kind: str, args: dict[str, str]) -> Body | None:
    """A v1 record's body, from its string map (None for a kind this build does not know)."""
    a = args
    hexa = bytes.fromhex
    builders: dict[str, Any] = {
        SetDelay.KIND: lambda: SetDelay(float(a["seconds"])),
        Pause.KIND: Pause,
        Resume.KIND: Resume,
        ResyncTable.KIND: lambda: ResyncTable(a.get("table", "")),
        FilesSetDelay.KIND: lambda: FilesSetDelay(float(a["seconds"])),
        FilesPause.KIND: FilesPause,
        FilesResume.KIND: FilesResume,
        Retransmit.KIND: lambda: Retransmit(a.get("after_position", ""), hexa(a.get("after_key", "")),
                                            int(a.get("offset", "-1")), a.get("reason", "")),
        RetransmitDone.KIND: lambda: RetransmitDone(_ids(a), a.get("after_position", ""),
                                                    hexa(a.get("after_key", ""))),
        RetransmitFailed.KIND: lambda: RetransmitFailed(_ids(a), a.get("after_position", ""),
                                                        hexa(a.get("after_key", "")), a.get("slot_confirmed", ""),
                                                        a.get("reason", "")),
        VerifyHold.KIND: lambda: VerifyHold(float(a.get("max_hold_s", "30"))),
        VerifyArmed.KIND: lambda: VerifyArmed(a.get("request", ""), a.get("position", ""),
                                              int(a.get("next_offset", "-1"))),
        VerifyAt.KIND: lambda: VerifyAt(a.get("request", ""), a.get("position", ""), hexa(a.get("key", ""))),
        VerifyHeld.KIND: lambda: VerifyHeld(a.get("request", ""), a.get("position", ""),
                                            hexa(a.get("position_key", "")), int(a.get("next_offset", "-1")),
                                            float(a.get("armed_s", "0"))),
        VerifyRelease.KIND: lambda: VerifyRelease(a.get("request", "")),
        TableResyncStarted.KIND: lambda: TableResyncStarted(a.get("table", ""), a.get("request", ""),
                                                            a.get("reason", "")),
        TableResyncProgress.KIND: lambda: TableResyncProgress(a.get("table", ""), a.get("request", ""),
                                                              a.get("phase", ""), a.get("position", ""),
                                                              int(a.get("rows", "0")), a.get("error", "")),
        TableResynced.KIND: lambda: TableResynced(a.get("table", ""), a.get("request", ""), a.get("position", ""),
                                                  int(a.get("rows", "0")), int(a.get("replayed", "0"))),
        TableResyncRefused.KIND: lambda: TableResyncRefused(a.get("table", ""), a.get("request", ""),
                                                            a.get("reason", "")),
        NodeIdentity.KIND: lambda: NodeIdentity(a.get("role", ""), a.get("identity", ""), a.get("label", "")),
        SourceGap.KIND: lambda: SourceGap(a.get("after_position", ""), hexa(a.get("after_key", "")),
                                          int(a.get("offset", "0")), a.get("hole", "")),
    }
    build = builders.get(_RENAMED.get(kind, kind))
    return build() if build is not None else None


def body_from_wire(record: dict[str, Any]) -> Body | None:
    """The typed body of a decoded control record of any version (None: a kind this build does not know).

    Raises ValueError (or KeyError) when a v1 record's args do not parse.
    """
    kind = _RENAMED.get(record["kind"], record["kind"])
    body = record.get("body")
    if body is not None:
        cls = KINDS.get(kind)
        return _from_record(cls, body) if cls is not None else None
    return body_from_args(kind, dict(record.get("args") or {}))
