"""Guarantees 2, 3 and 7 under real faults: kill -9 of capture and apply, and a broker restart.

The bank workload runs throughout; at the end every table is equal row by row, no history id is
applied twice (a duplicate would stop the applier with a data error), and the total balance seen on
the standby is the invariant at every sample.
"""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

from ops.workload import BankWorkload, create_bank, total_balance

BANK = ["public.accounts", "public.history"]


def _sampler(dsn: str, stop: threading.Event, seen: list[Decimal]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            try:
                seen.append(total_balance(dsn))
            except Exception:  # noqa: BLE001 - standby briefly unavailable is fine; totals matter
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _finish(group, workload: BankWorkload, stop: threading.Event, sampler: threading.Thread,
            seen: list[Decimal], invariant: Decimal) -> None:
    committed = workload.stop()
    diffs = group.wait_equal("standby", BANK, timeout=120)
    stop.set()
    sampler.join()
    assert committed > 0
    assert all(d.equal for d in diffs), diffs
    assert seen and set(seen) == {invariant}, f"partial transaction visible: {sorted(set(seen))[:5]}"
    ids = group.primary_dsn
    from tests.support.replication import sql

    dup = sql(group.standby("standby").dsn, "SELECT count(*) - count(DISTINCT id) FROM history")
    assert dup[0][0] == 0
    assert sql(ids, "SELECT count(*) FROM history") == sql(group.standby("standby").dsn, "SELECT count(*) FROM history")


def test_kill9_capture_and_apply_repeatedly(make_group) -> None:
    rnd = random.Random(20261124)
    group = make_group(chunk_rows=50)
    invariant = create_bank(group.primary_dsn, accounts=100)
    group.ark_ok("sync", "standby")
    capture = group.start("capture")
    apply = group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=4).start()
    stop, seen = threading.Event(), []
    sampler = _sampler(group.standby("standby").dsn, stop, seen)
    for _ in range(3):
        time.sleep(rnd.uniform(0.5, 2.5))
        capture.kill9()
        time.sleep(rnd.uniform(0.0, 1.0))
        capture.start()
        time.sleep(rnd.uniform(0.5, 2.5))
        apply.kill9()
        apply.start()
    time.sleep(2)
    _finish(group, workload, stop, sampler, seen, invariant)


def test_broker_restart_mid_run(make_group, kafka_broker) -> None:
    group = make_group()
    invariant = create_bank(group.primary_dsn, accounts=100)
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2).start()
    stop, seen = threading.Event(), []
    sampler = _sampler(group.standby("standby").dsn, stop, seen)
    time.sleep(3)
    kafka_broker.stop()
    time.sleep(3)
    kafka_broker.start(timeout=120)
    time.sleep(5)
    _finish(group, workload, stop, sampler, seen, invariant)
    group.assert_agents_alive()


def test_kill9_inside_a_large_transaction(make_group) -> None:
    """Capture commits a large transaction to Kafka in parts; killed mid-way, it resumes at the exact row,
    and the applier, killed too, never shows the transaction partially."""
    from tests.support.replication import sql, wait_for

    rows = 400_000
    group = make_group(chunk_rows=2000)
    sql(group.primary_dsn, "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, t text)")
    group.ark_ok("sync", "standby")
    capture = group.start("capture")
    apply = group.start("apply", "standby")
    standby = group.standby("standby")
    sql(group.primary_dsn, f"INSERT INTO big SELECT g, g, 'row ' || g FROM generate_series(1, {rows}) g")
    seen: set[int] = set()
    time.sleep(4)  # inside the transaction's publication (it commits to Kafka every ~2 s)
    capture.kill9()
    seen.add(sql(standby.dsn, "SELECT count(*) FROM big")[0][0])
    capture.start()
    time.sleep(3)
    apply.kill9()
    seen.add(sql(standby.dsn, "SELECT count(*) FROM big")[0][0])
    apply.start()

    def done() -> bool:
        count = sql(standby.dsn, "SELECT count(*) FROM big")[0][0]
        seen.add(count)
        return count == rows

    wait_for(done, 300, "the large transaction on the standby", interval=0.5)
    assert seen <= {0, rows}, f"partial transaction visible: {sorted(seen)}"
    diffs = group.wait_equal("standby", ["public.big"], timeout=60)
    assert all(d.equal for d in diffs), diffs
