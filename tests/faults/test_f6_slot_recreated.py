"""F6: the replication slot dropped and recreated. Capture must detect the gap and refuse to go on.

Transactions that commit while no slot exists are gone from the slot's view for good; a capture that
resumed from a new slot would lose them silently (Debezium DBZ-5739). Capture compares the slot's
start with the last position the redo topic holds and exits with SlotGapError (exit code 8), naming
both positions and the fix. Two variants, each on a fresh group (a refused group stays stopped):

* **stopped**: the workload pauses until the standby has everything (ledger seq S0), capture is
  stopped, the workload resumes, the slot is dropped, transactions commit, the slot is recreated;
  capture is started again and must refuse. The standby must hold exactly 1..S0: nothing lost of
  what was published, nothing from past the gap.
* **running**: the slot is dropped (its walsender terminated) and recreated under a running capture,
  which must refuse at its reconnect. The standby must still be a gap-free prefix.
"""

from __future__ import annotations

import re
import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import (
    BANK_TABLES,
    Case,
    FaultRun,
    LedgerSampler,
    bank_setup,
    converge,
    fault_runs,
    ledger_counts,
    ledger_max,
    record,
)
from tests.support.replication import Group, Standby, sql

_LSN = r"[0-9A-F]+/[0-9A-F]+"


def _group(base: str, run: int, variant: str, fresh_db, kafka: str, ark_tmp) -> Group:
    name = f"{base}{variant[0]}{run}"
    group = Group(name, ark_tmp / "groups" / name, kafka, fresh_db.primary, fresh_db.name,
                  [Standby("standby", fresh_db.standby, fresh_db.name)], capture_extra={"chunk_rows": 50})
    group.write_config()
    return group


def _drop_and_recreate(dsn: str, slot: str, gap_s: float) -> None:
    """Terminate the slot's walsender (if any), drop the slot, let ``gap_s`` of commits pass, recreate it."""
    deadline = time.monotonic() + 30
    while True:
        sql(dsn, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                 "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
        try:
            sql(dsn, "SELECT pg_drop_replication_slot(%s)", (slot,))
            break
        except Exception as exc:  # the walsender is still exiting, or capture reconnected: try again
            if time.monotonic() > deadline:
                raise AssertionError(f"could not drop slot {slot}: {exc}") from None
            time.sleep(0.01)
    time.sleep(gap_s)
    sql(dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


def _assert_refused(capture, slot: str) -> str:
    """Capture exited with SlotGapError, and its message names the slot, both positions and the fix."""
    code = capture.wait_exit(90)
    log = capture.tail(40)
    assert code == 8, f"capture did not refuse the gap (exit {code}):\n{log}"
    error = next((line for line in log.splitlines() if line.startswith("error:")), "")
    fix = next((line for line in log.splitlines() if line.startswith("fix:")), "")
    assert slot in error and "Kafka" in error, log
    assert len(re.findall(_LSN, error)) >= (2 if "starts at" in error else 1), error
    assert fix, log
    return f"{error} / {fix}"


def _drop_slot(dsn: str, slot: str) -> None:
    sql(dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s "
             "AND NOT active", (slot,))


@pytest.mark.timeout(3600)
def test_f6_slot_dropped_and_recreated(fresh_db, kafka_bootstrap, unique_group, ark_tmp, fault_results_dir) -> None:
    runs = fault_runs("F6", default=1)
    total = FaultRun("F6", "slot dropped and recreated: capture refuses; accept-gap + resync heal")
    started = time.monotonic()
    groups: list[Group] = []
    try:
        for run in range(runs):
            for variant in ("stopped", "running"):
                group = _group(unique_group, run, variant, fresh_db, kafka_bootstrap, ark_tmp)
                groups.append(group)
                total.add(_one_run(group, variant))
                group.stop_all()
                _drop_slot(group.primary_dsn, f"ark_{group.name}")
    except BaseException as exc:
        total.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        raise
    finally:
        for group in groups:
            group.stop_all()
            _drop_slot(fresh_db.primary_dsn, f"ark_{group.name}")
        total.seconds = round(time.monotonic() - started, 1)
        record(total, fault_results_dir)
    total.assert_clean()


def _one_run(group: Group, variant: str) -> FaultRun:
    slot, primary = f"ark_{group.name}", group.primary_dsn
    standby = group.standby("standby").dsn
    invariant = bank_setup(group, overwrite=True)  # each run is a new group on the same standby database
    capture = group.start("capture")
    apply = group.start("apply", "standby")
    workload = BankWorkload(primary, accounts=100, clients=2, ledger=True).start()
    case = Case(FaultRun("F6", variant), LedgerSampler(standby, invariant).start())
    try:
        converge(group, at_least=ledger_max(primary) + 20)
        if variant == "stopped":
            workload.stop()
            converge(group)
            s0 = ledger_max(primary)
            assert capture.stop() == 0, capture.tail()
            workload = BankWorkload(primary, accounts=100, clients=2, ledger=True).start()
            time.sleep(0.5)
            _drop_and_recreate(primary, slot, gap_s=1.0)
            time.sleep(0.5)
            capture.start()
        else:
            time.sleep(1.0)
            _drop_and_recreate(primary, slot, gap_s=0.5)
        group.agents.remove(capture)  # its exit is the expected outcome, not an agent failure
        message = _assert_refused(capture, slot)
        time.sleep(3)  # the applier drains what Kafka holds
        workload.stop()
        if variant == "stopped":
            lost, duplicated = ledger_counts(primary, standby, upto=s0)
            beyond = ledger_max(standby) - s0
            assert beyond == 0, f"the standby applied {beyond} transactions from past the gap"
            case.result.notes.append(f"{variant}: standby stays at seq {s0} of {ledger_max(primary)}; {message}")
        else:
            lost, duplicated = ledger_counts(primary, standby, upto=ledger_max(standby))
            case.result.notes.append(f"{variant}: standby stays at seq {ledger_max(standby)} of "
                                     f"{ledger_max(primary)}; {message}")
        case.result.duplicated += duplicated
        _heal(group, apply, case)
        case.result.lost += lost
        case.result.runs += 1
    finally:
        workload.stop()
        case.absorb()
    return case.result


def _heal(group: Group, apply, case: Case) -> None:
    """The way out, with the workload running: the operator accepts the gap, capture resumes past it,
    the standby stops at the gap by itself (it must not apply across it), ``ark resync`` rebuilds it,
    and it converges with the primary row by row."""
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    workload = BankWorkload(primary, accounts=100, clients=2, ledger=True).start()
    try:
        before = ledger_max(standby)
        group.start("capture", "--accept-gap")
        code = apply.wait_exit(120)
        group.agents.remove(apply)  # stopping at the gap is the expected outcome
        log = apply.tail(40)
        assert code == 15, f"the standby did not stop at the accepted gap (exit {code}):\n{log}"
        assert "gap" in log and "ark resync standby" in log, log
        assert ledger_max(standby) == before, "the standby applied entries from past the gap"
        group.ark_ok("resync", "standby")
        group.start("apply", "standby")
        converge(group)
    finally:
        workload.stop()
    diffs = group.wait_equal("standby", BANK_TABLES, timeout=120)
    assert all(d.equal for d in diffs), diffs
    case.result.notes.append(f"healed: accept-gap, standby stopped at the gap (exit 15), resync, equal; "
                             f"primary seq {ledger_max(primary)}")
