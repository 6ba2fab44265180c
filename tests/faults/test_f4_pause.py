"""F4: SIGSTOP for an outage (30 s in the full run, ``$ARK_FAULT_OUTAGE_S``) of the broker, or of the
standby database (the postmaster and all its children), then SIGCONT.

A paused process keeps its sockets open and answers nothing: clients see hanging requests rather
than refused connections. Both agents must ride it out and resume without an operator step.
"""

from __future__ import annotations

import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, outage_seconds


def _run(group, fault_results_dir, title: str, pause, resume) -> None:
    runs, outage = fault_runs("F4", slow=True), outage_seconds()
    invariant = bank_setup(group)
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    with fault_case("F4", title, group.standby("standby").dsn, invariant, fault_results_dir) as case:
        case.result.notes.append(f"outage {outage:g} s; initial catch-up {converge(group, at_least=20):.1f} s")
        for _ in range(runs):
            time.sleep(1.0)
            pause()
            try:
                time.sleep(outage)
            finally:
                resume()
            case.result.notes.append(f"run {case.result.runs + 1}: caught up {converge(group, timeout=240):.1f} s "
                                     "after SIGCONT")
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group)
    group.assert_agents_alive()
    case.result.assert_clean()


@pytest.mark.timeout(3600)
def test_f4_sigstop_broker(make_group, kafka_broker, fault_results_dir) -> None:
    _run(make_group(chunk_rows=50), fault_results_dir, "SIGSTOP of the broker", kafka_broker.pause,
         kafka_broker.resume)


@pytest.mark.timeout(3600)
def test_f4_sigstop_standby_database(make_group, fault_results_dir) -> None:
    group = make_group(chunk_rows=50)
    instance = group.standby("standby").instance
    _run(group, fault_results_dir, "SIGSTOP of the standby database", instance.pause, instance.resume)
