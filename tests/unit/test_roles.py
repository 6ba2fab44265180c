"""Roles and epochs (issue 10): replayed roles, the switchover/failover decisions, and fencing in the capture and
the applier, fast, against the in-memory log, source and standby (tests/support/memory.py).

The same properties are proven with real processes in tests/faults/test_f16_switchover.py and test_f17_failover.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from common import agent
from common.config import ArkConfig, parse_config
from common.errors import NotPrimary
from common.guard import recorded_identities
from common.roles import Roles, as_primary, as_standby, config_under
from consumers.base import ApplyState
from consumers.runner import ApplyRunner
from failover.plan import NodeView, decide_failover, decide_switchover, dry_run_rows
from producers.publisher import RedoPublisher
from producers.resume import find_resume_point
from producers.runner import CaptureRunner
from schemas import envelope
from schemas.control import EndEpoch, EpochBegun, EpochEnded, NodeIdentity, StandbyFrom
from schemas.entries import REDO_SCHEMA, EpochMarker, RedoEntry, TxnChunk, from_record
from schemas.positions import pg_lsn
from tests.support.memory import (
    MemoryApplier,
    MemoryCapture,
    MemoryRedoLog,
    MemorySource,
    MemoryStandby,
    Running,
    ins,
    memory_channel,
    record,
    table_meta,
    wait_until,
)

T = "public.t"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(agent, "BACKOFF_MAX_S", 0.05)


def config() -> ArkConfig:
    pg = {"engine": "postgresql"}
    return parse_config({
        "group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
        "primary": {"name": "p", "tables": ["app.*"], "slot": "s1", **pg},
        "capture": {"batch_max_ms": 5},
        "standbys": [{"name": "sb", "port": 6000, **pg}, {"name": "late", "delay_seconds": 60, **pg}]})


def rec(body: Any, target: str = "", offset: int = 0) -> Any:
    from common.control import ControlRecord

    return ControlRecord(offset, body, target, "test@host", 1, f"r{offset}-{id(body)}")


# -- roles -----------------------------------------------------------------------------------------------
def test_roles_follow_switchovers_and_failovers() -> None:
    roles = Roles.replay("p", [])
    assert (roles.epoch, roles.primary, roles.role_of("p"), roles.role_of("sb")) == (0, "p", "primary", "standby")
    roles.update([rec(EpochBegun(1, "sb", "p", "switchover", 40), "sb")])
    assert (roles.epoch, roles.primary) == (1, "sb")
    assert roles.role_of("p") == "demoted"  # no standby-from yet: nothing may be applied to it
    roles.update([rec(StandbyFrom(1, 41, "switchover to sb"), "p")])
    assert roles.role_of("p") == "standby" and roles.rejoin_offset("p") == (1, 41)
    roles.update([rec(EpochBegun(2, "late", "sb", "failover", 90), "late")])
    assert roles.role_of("sb") == "demoted" and roles.role_of("p") == "standby" and roles.primary_of(1) == "sb"
    assert roles.primary_of(0) == "p" and roles.primary_of(5) == "late"
    roles.update([rec(EpochBegun(2, "p", "sb", "failover", 95), "p")])  # an older or equal epoch changes nothing
    assert roles.primary == "late"


def test_a_switchover_lets_the_guard_treat_the_old_primary_as_a_standby() -> None:
    ident = {"p": "postgresql:1:10", "sb": "postgresql:2:10"}
    records = [rec(NodeIdentity("primary", ident["p"], ""), "p"), rec(NodeIdentity("standby", ident["sb"], ""), "sb")]
    before = recorded_identities(records)
    assert before.nodes["p"][0] == "primary" and len(before.primaries) == 1
    records.append(rec(EpochBegun(1, "sb", "p", "switchover", 7), "sb"))
    mid = recorded_identities(records)
    assert mid.nodes["sb"][0] == "primary" and len(mid.primaries) == 2  # the old primary is still refused
    records.append(rec(StandbyFrom(1, 8, "switchover"), "p"))
    after = recorded_identities(records)
    assert after.nodes["p"][0] == "standby" and [i.key for i in after.primaries] == [ident["sb"]]


def test_each_node_gets_its_role_settings() -> None:
    cfg = config()
    assert as_primary(cfg, "sb").port == 6000 and as_primary(cfg, "sb").tables == ("app.*",)
    assert as_primary(cfg, "sb").slot == "s1"  # type: ignore[attr-defined]
    assert as_standby(cfg, "p").name == "p" and as_standby(cfg, "p").delay_seconds == 0
    under = config_under(cfg, "sb")
    assert under.primary.name == "sb" and [s.name for s in under.standbys] == ["p", "late"]
    assert under.standbys[1].delay_seconds == 60  # a delayed standby keeps its delay across a switchover


# -- decisions -------------------------------------------------------------------------------------------
def views(**over: NodeView) -> dict[str, NodeView]:
    base = {"p": NodeView("p", "primary", "postgresql"),
            "sb": NodeView("sb", "standby", "postgresql", "running", 100, 0),
            "late": NodeView("late", "standby", "postgresql", "delayed", 60, 0, 60.0)}
    base.update(over)
    return base


def test_switchover_decisions_say_why_not() -> None:
    roles = Roles("p")
    assert decide_switchover(roles, "sb", views(), capture_running=True).go
    assert "already the primary" in decide_switchover(roles, "p", views(), capture_running=True).sentence
    no_capture = decide_switchover(roles, "sb", views(), capture_running=False)
    assert not no_capture.go and "ark failover sb" in no_capture.fix
    delayed = decide_switchover(roles, "late", views(), capture_running=True)
    assert not delayed.go and "ark delay late 0" in delayed.fix
    stopped = decide_switchover(roles, "sb", views(sb=NodeView("sb", "standby", "postgresql")), capture_running=True)
    assert not stopped.go and "ark apply sb" in stopped.fix
    demoted = decide_switchover(roles, "sb", views(sb=NodeView("sb", "demoted", "postgresql", "running")),
                                capture_running=True)
    assert not demoted.go and "ark reinstate sb" in demoted.fix


def test_failover_refuses_a_target_behind_another_standby_unless_forced() -> None:
    roles = Roles("p")
    nodes = views(late=NodeView("late", "standby", "postgresql", "running", 150))
    refused = decide_failover(roles, "sb", nodes, force=False)
    assert not refused.go and "late is more advanced" in refused.sentence and "--force" in refused.fix
    assert decide_failover(roles, "sb", nodes, force=True).go
    assert decide_failover(roles, "late", nodes, force=False).go
    rows = {r["standby"]: r for r in dry_run_rows(roles, nodes, redo_end=201)}
    assert rows["sb"]["lag_entries"] == 100 and rows["late"]["lag_entries"] == 50 and "p" not in rows


# -- the capture -----------------------------------------------------------------------------------------
def bodies(log: MemoryRedoLog) -> list[tuple[int, int, Any]]:
    out = []
    for r in log.entries():
        dec = envelope.decode(r.value, r.headers, expect=REDO_SCHEMA)
        out.append((r.offset, dec.epoch, from_record(dec.record).body))
    return out


def test_the_capture_ends_its_epoch_on_request_then_follows_the_new_primary() -> None:
    cfg = config()
    old, new = MemorySource(), MemorySource()
    log, store = MemoryRedoLog(), []
    meta = table_meta(T)
    for i in range(3):
        old.commit([ins(T, i)], [meta])
    runner = CaptureRunner(cfg, lambda: MemoryCapture(old), log, factory_for=lambda _cfg: lambda: MemoryCapture(new))
    running = Running(runner, store)
    channel = memory_channel(store)
    try:
        wait_until(lambda: len([b for _o, _e, b in bodies(log) if isinstance(b, TxnChunk)]) == 3, what="3 txns")
        old.commit([ins(T, 3)], [meta])  # committed before the fence: must be in the epoch
        channel.publish(EndEpoch(0, "sb", pg_lsn(old.end).text), "p")
        wait_until(lambda: any(isinstance(b, EpochMarker) for _o, _e, b in bodies(log)), what="the end marker")
        ended = [r.body for r in channel.replay() if isinstance(r.body, EpochEnded)]
        assert len(ended) == 1 and ended[0].next_primary == "sb"
        marker_at = next(o for o, _e, b in bodies(log) if isinstance(b, EpochMarker))
        assert ended[0].marker_offset == marker_at
        assert [b.changes[0].values[0] for _o, _e, b in bodies(log) if isinstance(b, TxnChunk)] == [0, 1, 2, 3]
        old.commit([ins(T, 99)], [meta])  # after the end of its epoch: never published
        new.commit([ins(T, 100)], [meta])
        channel.publish(EpochBegun(1, "sb", "p", "switchover", marker_at), "sb")
        wait_until(lambda: any(isinstance(b, TxnChunk) and b.changes and b.changes[0].values[0] == 100
                               for _o, _e, b in bodies(log)), what="the new primary's transaction")
    finally:
        running.stop()
    seen = bodies(log)
    markers = [(e, b.new_epoch, b.primary) for _o, e, b in seen if isinstance(b, EpochMarker)]
    assert markers == [(0, 1, "sb"), (1, 1, "sb")]  # end of epoch 0, start of epoch 1
    keys = [b.changes[0].values[0] for _o, _e, b in seen if isinstance(b, TxnChunk) and b.changes]
    assert 99 not in keys and keys[-1] == 100
    assert all(e == 1 for o, e, b in seen if o > marker_at and not isinstance(b, EpochMarker) or o > marker_at + 2)
    point = find_resume_point(log)
    assert point.epoch == 1 and point.written_epoch == 1


def test_a_capture_pinned_to_a_node_that_is_no_longer_primary_refuses() -> None:
    cfg = config()
    store: list[Any] = []
    memory_channel(store).publish(EpochBegun(1, "sb", "p", "failover", 5), "sb")
    log = MemoryRedoLog()
    running = Running(CaptureRunner(cfg, lambda: MemoryCapture(MemorySource()), log, node="p", pinned=True), store)
    error = running.wait_exit()
    assert isinstance(error, NotPrimary) and "epoch 1: primary sb" in error.message
    assert log.entries() == []  # nothing published


def test_a_writer_of_the_group_fences_an_older_one() -> None:
    from common.errors import FencedError

    log = MemoryRedoLog()
    old = RedoPublisher(log.writer())
    RedoPublisher(log.writer())  # the new primary's capture, or a failover's marker: same transactional id
    with pytest.raises(FencedError):
        old.publish(RedoEntry("g", "postgresql", 0, EpochMarker(1, "sb", "")))
        old.commit()


# -- the applier -----------------------------------------------------------------------------------------
def _publish(log: MemoryRedoLog, epoch: int, body: Any) -> None:
    pub = RedoPublisher(log.writer())
    pub.publish(RedoEntry("g", "postgresql", epoch, body))
    pub.commit()


def _txn(lsn: int, key: int) -> TxnChunk:
    return TxnChunk(txn_id=str(lsn), commit=pg_lsn(lsn), commit_time_us=1, chunk_index=0, last=True,
                    changes=[ins(T, key)], confirm=pg_lsn(lsn + 1).text)


def _standby(log: MemoryRedoLog) -> MemoryStandby:
    standby = MemoryStandby()
    app = MemoryApplier(standby)
    app.begin()
    app.apply_table_meta("g", table_meta(T), None)
    floor = pg_lsn(1)
    app.save_state(ApplyState("g", "sb", log.topic, 0, 0, floor.text, floor.key, 0, 0, 0))
    app.commit()
    return standby


def _apply(cfg: ArkConfig, standby: MemoryStandby, log: MemoryRedoLog, store: list[Any], upto: int) -> None:
    running = Running(ApplyRunner(cfg, cfg.standbys[0], lambda: MemoryApplier(standby), log), store)
    try:
        wait_until(lambda: standby.db.state is not None and standby.db.state.next_offset >= upto,
                   what=f"offset {upto}")
    finally:
        running.stop()


def test_an_applier_rejects_older_epochs_and_remembers_the_newest_across_restarts() -> None:
    cfg = config()
    log, store = MemoryRedoLog(), []
    standby = _standby(log)
    _publish(log, 0, _txn(100, 1))
    _publish(log, 0, EpochMarker(1, "late", ""))            # the end of epoch 0
    _publish(log, 0, _txn(200, 2))                          # a stale capture of epoch 0: rejected
    _publish(log, 1, _txn(50, 3))                           # the new primary's positions start lower: applied
    _apply(cfg, standby, log, store, log.next_offset)
    assert sorted(r[0] for r in standby.rows(T)) == [1, 3]
    assert standby.db.state is not None and standby.db.state.epoch == 1  # persisted with the state row
    _publish(log, 0, _txn(300, 4))                          # after a restart, still rejected
    _publish(log, 1, _txn(60, 5))
    _apply(cfg, standby, log, store, log.next_offset)
    assert sorted(r[0] for r in standby.rows(T)) == [1, 3, 5]


def test_an_applier_never_applies_its_own_epoch_and_a_former_primary_rejoins_from_its_marker() -> None:
    cfg = config()
    log, store = MemoryRedoLog(), []
    standby = _standby(log)
    _publish(log, 0, _txn(100, 1))
    _publish(log, 0, EpochMarker(1, "sb", "0/64"))          # the switchover names this standby
    _publish(log, 1, EpochMarker(1, "sb", ""))
    _publish(log, 1, _txn(10, 2))                           # its own write, once primary: never applied here
    _apply(cfg, standby, log, store, 2)
    assert sorted(r[0] for r in standby.rows(T)) == [1]
    assert standby.db.state is not None and standby.db.state.next_offset < 6
    channel = memory_channel(store)
    channel.publish(EpochBegun(1, "sb", "p", "switchover", 2), "sb")
    _publish(log, 1, _txn(20, 3))
    _publish(log, 1, EpochMarker(2, "p", ""))               # switched back: sb is a standby again from here
    marker = log.next_offset - 2
    _publish(log, 2, EpochMarker(2, "p", ""))
    _publish(log, 2, _txn(500, 4))
    channel.publish(EpochBegun(2, "p", "sb", "switchover", marker), "p")
    channel.publish(StandbyFrom(2, marker + 1, "switchover to p"), "sb")
    _apply(cfg, standby, log, store, log.next_offset)
    assert sorted(r[0] for r in standby.rows(T)) == [1, 4]  # 2 and 3 were its own writes: it holds them already
    assert standby.db.state is not None and standby.db.state.epoch == 2


def test_a_delayed_standby_is_not_held_by_the_markers_of_a_switchover() -> None:
    """The new primary takes writes before its capture writes the start marker: a marker stamped at its
    publication must not hold those writes past commit + D on a delayed standby (guarantee 5's upper bound)."""
    cfg = config()
    delayed = cfg.standbys[1].model_copy(update={"delay_seconds": 3.5})
    log, store = MemoryRedoLog(), []
    standby = _standby(log)
    now = time.time()
    _publish(log, 0, _txn_at(100, 1, int((now - 3.1) * 1e6)))
    _publish(log, 0, EpochMarker(1, "sb", "0/64"))            # published now: the end of epoch 0
    _publish(log, 1, EpochMarker(1, "sb", ""))                # published now: the start of epoch 1
    _publish(log, 1, _txn_at(10, 2, int((now - 3.0) * 1e6)))  # committed on sb before its start marker
    running = Running(ApplyRunner(cfg, delayed, lambda: MemoryApplier(standby), log), store)
    try:
        wait_until(lambda: sorted(r[0] for r in standby.rows(T)) == [1, 2], timeout=30, what="both transactions")
        applied = time.time()
    finally:
        running.stop()
    assert applied >= now + 0.5  # never before commit + D
    assert applied < now + 2.0, f"held {applied - now:.2f} s: behind a marker stamped at its publication"


def test_records_round_trip_through_v1_args_for_unknown_kinds() -> None:
    assert record("pause").kind == "pause"


# -- a delayed standby as a recovery point ----------------------------------------------------------------------
def _txn_at(lsn: int, key: int, commit_us: int) -> TxnChunk:
    return TxnChunk(txn_id=str(lsn), commit=pg_lsn(lsn), commit_time_us=commit_us, chunk_index=0, last=True,
                    changes=[ins(T, key)], confirm=pg_lsn(lsn + 1).text)


def test_a_skipped_transaction_is_never_applied() -> None:
    from schemas.control import SkipTransaction

    cfg = config()
    log, store = MemoryRedoLog(), []
    standby = _standby(log)
    _publish(log, 0, _txn(100, 1))
    bad = log.next_offset
    _publish(log, 0, _txn(110, 2))
    _publish(log, 0, _txn(120, 3))
    memory_channel(store).publish(SkipTransaction(bad, "110", "test"), "sb")
    _apply(cfg, standby, log, store, log.next_offset)
    assert sorted(r[0] for r in standby.rows(T)) == [1, 3]


def test_apply_until_holds_and_a_cut_is_skipped_by_every_standby_or_stops_it() -> None:
    from common.errors import ArkError
    from schemas.control import ApplyUntil, EpochCut

    cfg = config()
    log, store = MemoryRedoLog(), []
    target, other = _standby(log), _standby(log)
    _publish(log, 0, _txn_at(100, 1, 1_000))
    cut = log.next_offset
    _publish(log, 0, _txn_at(110, 2, 2_000))             # committed at the recovery point: the bad one
    _publish(log, 0, _txn_at(120, 3, 3_000))
    _apply(cfg, other, log, store, log.next_offset)      # a real-time standby applied everything
    channel = memory_channel(store)
    channel.publish(ApplyUntil(2_000), "sb")
    running = Running(ApplyRunner(cfg, cfg.standbys[0], lambda: MemoryApplier(target), log), store)
    try:
        wait_until(lambda: running.body.state == "held", what="the target held at the recovery point")
        assert sorted(r[0] for r in target.rows(T)) == [1]
        channel.publish(EpochCut(0, cut, 2_000), "sb")
        channel.publish(ApplyUntil(0), "sb")
        _publish(log, 0, EpochMarker(1, "sb", ""))
        wait_until(lambda: target.db.state is not None and target.db.state.epoch == 1, what="the marker")
    finally:
        running.stop()
    assert sorted(r[0] for r in target.rows(T)) == [1]   # nothing of the cut applied
    stopped = Running(ApplyRunner(cfg, cfg.standbys[0], lambda: MemoryApplier(other), log), store)
    error = stopped.wait_exit()
    assert isinstance(error, ArkError) and "ark resync sb" in (error.fix or ""), error


def test_a_skip_that_comes_after_the_transaction_was_applied_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    from common.control import ControlRecord
    from consumers.recovery import Skips
    from schemas.control import SkipTransaction

    def skip(offset: int) -> ControlRecord:
        return ControlRecord(offset=0, body=SkipTransaction(offset, "110", "test"), target="sb", issued_by="t",
                             issued_at_us=0, request_id="r")

    skips = Skips("sb", applied=lambda: 5)
    skips.remember([skip(1)])  # the backlog at start: honored long ago, nothing said
    assert not caplog.records
    skips.on_control([skip(7)])
    assert not caplog.records
    skips.on_control([skip(3)])
    assert any("after it had applied it" in r.getMessage() for r in caplog.records)
    assert set(skips.offsets) == {1, 3, 7}


def test_a_standby_named_by_a_marker_it_could_not_apply_applies_it_in_the_next_session(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """F23: the broker died while the applier read the control topic at the end-of-epoch marker of a failover to it.
    The next session once took the node for the primary already (the marker had been noted before it was applied),
    waited as the primary, and never applied the marker: the failover, waiting for it to, timed out."""
    import sys

    from common.control import ControlChannel
    from common.errors import KafkaUnavailable

    real, failed = ControlChannel.replay, []

    def dies_once_at_the_marker(self: ControlChannel, timeout: float = 10.0) -> list[Any]:
        if not failed and sys._getframe(1).f_code.co_name == "_marker":
            failed.append(True)
            raise KafkaUnavailable("the broker died")
        return real(self, timeout)

    monkeypatch.setattr(ControlChannel, "replay", dies_once_at_the_marker)
    cfg = config()
    log, store = MemoryRedoLog(), []
    standby = _standby(log)
    _publish(log, 0, _txn(100, 1))
    _publish(log, 0, EpochMarker(1, "sb", "0/64"))  # a failover to this standby closes epoch 0
    _apply(cfg, standby, log, store, log.next_offset)
    assert failed, "the control topic was never read at the marker"
    assert standby.db.state is not None and standby.db.state.epoch == 1
