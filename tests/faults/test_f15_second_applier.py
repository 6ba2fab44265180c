"""F15: a second applier on one standby (issue 9, item 7).

Before issue 9 two appliers could run against one standby: both applied the same transactions, and a
stale one could write older rows over newer ones and move the state row backwards. A double apply
then turned into a key error, so the fault table's duplicate count could not even fail. Here the
standby's ``history`` table has no unique key (its primary key is dropped on the standby after the
sync; rows are still found by the stream's key): a transaction applied twice leaves duplicate rows,
which the sampler and the final count report as ``duplicated``. The case proves first that the counter
works (one duplicate row put there by hand is counted, then removed).

The runs alternate between two injections, with the bank workload running throughout:

* **second start**: ``ark apply standby`` is started while one runs; it must exit at once (exit 31)
  naming the holder (host, pid, since), and the running one goes on.
* **stale applier**: the running applier is frozen (SIGSTOP, in whatever state it is: mid-batch or not)
  and its standby session is terminated, so it loses its lock; a new applier takes the standby over and
  applies; then the frozen one is thawed (SIGCONT). It must exit 31 without writing: its open
  transaction died with its session, and a new session cannot take the lock.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, ledger_counts, observe, seed
from tests.support.replication import sql

APPLIER_RUNNING = 31


def _standby_sql(dsn: str, statement: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=off") as conn:
        cur = conn.execute(statement)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _prove_the_duplicate_counter_counts(group, standby: str) -> str:  # noqa: ANN001 - Group
    """Put one duplicate history row on the standby, check both counters see it, take it out again."""
    import psycopg

    before = ledger_counts(group.primary_dsn, standby)[1]
    _standby_sql(standby, "SET session_replication_role = replica; "
                          "INSERT INTO history SELECT * FROM history WHERE id = (SELECT min(id) FROM history)")
    with psycopg.connect(standby, autocommit=True) as conn:
        obs = observe(conn)
    dup = ledger_counts(group.primary_dsn, standby)[1]
    _standby_sql(standby, "SET session_replication_role = replica; DELETE FROM history WHERE ctid = "
                          "(SELECT max(ctid) FROM history WHERE id = (SELECT min(id) FROM history))")
    assert dup == before + 2, f"a duplicated ledger row was counted {dup - before} times (one id, one seq)"
    assert obs.rows != obs.distinct_ids, "the sampler did not see the duplicated row"
    return f"duplicate counter proven: one duplicated row counted as {dup - before} (its id and its seq)"


@pytest.mark.timeout(3600)
def test_f15_a_second_applier_on_one_standby(make_group, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs("F15", default=2), seed()
    rnd = random.Random(rnd_seed)
    group = make_group()
    invariant = bank_setup(group)
    standby = group.standby("standby").dsn
    # A double apply must duplicate rows, not fail on a key: the standby's history loses every unique
    # constraint it got from the primary's schema (its primary key, and the ledger's UNIQUE (seq)).
    _standby_sql(standby, "DO $$ DECLARE c text; BEGIN FOR c IN SELECT conname FROM pg_constraint "
                          "WHERE conrelid = 'history'::regclass AND contype IN ('p', 'u') LOOP "
                          "EXECUTE format('ALTER TABLE history DROP CONSTRAINT %I', c); END LOOP; END $$")
    group.start("capture")
    current = group.start("apply", "standby", name="apply-0")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=4, ledger=True).start()
    first = converge(group, at_least=20)
    proof = _prove_the_duplicate_counter_counts(group, standby)  # before the sampler starts: it would count it
    with fault_case("F15", "a second applier on one standby", standby, invariant, fault_results_dir) as case:
        case.result.notes += [f"seed {rnd_seed}; first catch-up {first:.1f} s", proof]
        for run in range(runs):
            time.sleep(rnd.uniform(0.5, 2.0))
            second = group.start("apply", "standby", name=f"apply-{run + 1}")
            if run % 2 == 0:
                code = second.wait_exit(60)
                log = second.tail(20)
                group.agents.remove(second)
                assert code == APPLIER_RUNNING, f"run {run}: the second applier exited {code}:\n{log}"
                assert f"pid {current.pid}" in log and "since" in log, log
                case.result.notes.append(f"run {run + 1}: second start refused at once (exit 31, holder named)")
            else:
                # The second one has started and been refused, or is being refused: wait for that, then freeze the
                # holder and cut its session so the next one takes over.
                assert second.wait_exit(60) == APPLIER_RUNNING
                group.agents.remove(second)
                assert current.pid is not None
                os.kill(current.pid, signal.SIGSTOP)
                cut = sql(standby, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                   "application_name LIKE %s", (f"ark apply standby % pid {current.pid}",))[0][0]
                taker = group.start("apply", "standby", name=f"apply-{run + 1}-taker")
                converge(group, timeout=120)  # the new holder applies while the old one is frozen
                os.kill(current.pid, signal.SIGCONT)
                code = current.wait_exit(120)
                log = current.tail(20)
                group.agents.remove(current)
                assert code == APPLIER_RUNNING, f"run {run}: the thawed stale applier exited {code}:\n{log}"
                case.result.notes.append(f"run {run + 1}: stale applier frozen, {cut} session(s) cut; the new one "
                                         "took over; thawed, the stale one exited 31 without writing")
                current = taker
            converge(group, timeout=120)
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group)
    case.result.assert_clean()
