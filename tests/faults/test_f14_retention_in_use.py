"""F14: retention deletes the redo range a running applier needs (issue 9, item 6).

A delayed standby (delay D) holds back what it read: its reader is paused on the first entry that is not
due, and everything after it is only in Kafka. Each run deletes, with the applier running, the records
from the standby's next offset to halfway to the end of the topic (Kafka's DeleteRecords: exactly what
time- or size-based retention does to a segment). Before issue 9 the Kafka consumer fell back to the
oldest retained offset (``auto.offset.reset: earliest``) and the standby went on past the hole without a
word. Now the applier must stop (exit 13) naming the lost range, having applied nothing past it: the
ledger sampler sees a gap-free prefix throughout, and a skip shows up as a gap (partial-visible). The way
out, ``ark resync standby``, then brings it back equal, with the workload running.
"""

from __future__ import annotations

import random
import time

import pytest

from common.kafka import delete_records_below, end_offset
from common.settings import KafkaSettings
from deploy.workload import BankWorkload
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, seed
from tests.support.replication import sql

DELAY_S = 5.0


def _next_offset(standby_dsn: str, group: str) -> int:
    return int(sql(standby_dsn, 'SELECT next_offset FROM ark.apply_state WHERE "group" = %s', (group,))[0][0])


@pytest.mark.timeout(3600)
def test_f14_retention_deletes_the_range_a_delayed_applier_holds(make_group, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs("F14"), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(standbys=[("standby", DELAY_S)])
    invariant = bank_setup(group)
    group.start("capture")
    apply = group.start("apply", "standby")
    standby = group.standby("standby").dsn
    topic = f"ark.{group.name}.redo"
    kafka = KafkaSettings(bootstrap=group.kafka)
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    stopped = 0
    with fault_case("F14", "retention deletes the range a running applier holds back", standby, invariant,
                    fault_results_dir) as case:
        case.result.notes.append(f"seed {rnd_seed}; delay {DELAY_S:g} s; first catch-up "
                                 f"{converge(group, timeout=180, at_least=20):.1f} s")
        for run in range(runs):
            time.sleep(rnd.uniform(1.0, 3.0))  # the applier holds a delay's worth of entries back
            needed = _next_offset(standby, group.name)
            high = end_offset(kafka, topic)
            # Everything up to the end goes: the reader holds back the first entry not yet due (it refetches
            # from the broker after it), but an open batch may already have read past the committed state
            # ``needed``; only a cut at the end is sure to lie ahead of what the applier has read.
            low = delete_records_below(kafka, topic, high)
            code = apply.wait_exit(DELAY_S + 60)
            log = apply.tail(30)
            assert code == 13, f"run {run}: the applier did not stop at the hole (exit {code}):\n{log}"
            assert f"..{low - 1} (" in log and "deleted by retention" in log and "ark resync standby" in log, log
            stopped += 1
            applied = _next_offset(standby, group.name)
            assert applied <= low, f"run {run}: the standby applied past the hole (next offset {applied} >= {low})"
            case.result.notes.append(f"run {run + 1}: needed {needed}, deleted below {low} (end {high}); stopped "
                                     f"with exit 13 at next offset {applied}")
            started = time.monotonic()
            group.ark_ok("resync", "standby", timeout=600)
            apply.start()
            converge(group, timeout=300)
            case.result.notes.append(f"run {run + 1}: resynced and caught up in {time.monotonic() - started:.1f} s")
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group, timeout=300)
    case.result.assert_clean()
    assert stopped == runs
