"""F11: the primary is restarted the ordinary way (or crashes) while capture, apply and the application run.

Ark must never stand between a DBA and a restart (issue 19): ``pg_ctl stop`` takes no longer with the
capture attached than without it (the same run, the same data: each run stops the primary once with
the capture streaming and once with the capture stopped), the capture resumes by itself once the
primary is back, and the standby ends equal with nothing lost, duplicated or partial.

Every run notes: the stop's seconds with the capture and without it, the application's longest write
outage (a probe committing every 20 ms), how long after the primary took writes again the standby had
everything, and the CPU seconds the walsender burnt during the stop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.config import load_config
from common.control import ControlChannel
from deploy.postgres import PgInstance
from deploy.workload import BankWorkload
from schemas.control import Retransmit
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, ledger_max, wait_ledger
from tests.support.replication import Group, Standby, sql, wait_for
from tests.support.restart import CpuWatch, WriteProbe, walsender_pids

#: The issue's bar for the regression test: a fast stop with the capture streaming returns within this.
STOP_LIMIT_S = 10.0
#: pg_ctl's own wait (-t): long enough to measure a hang, short enough to fail fast.
PG_CTL_WAIT_S = 30
#: What the capture logs when its shutdown watch lets go of a stalled stream.
WATCH_CUT = "is shutting down while capture is busy"
#: What the capture logs when a session resumes in the middle of a transaction Kafka holds in part.
RESUMED_INSIDE = "inside a transaction at row"


@pytest.fixture(scope="module")
def f11_primary(pg_factory) -> PgInstance:
    """A primary of this module's own: the cases stop, kill and restart it."""
    return pg_factory("f11primary")


@pytest.fixture
def own_group(kafka_bootstrap: str, f11_primary: PgInstance, pg_standby: PgInstance, unique_group: str,
              ark_tmp: Path) -> Iterator[Callable[..., Group]]:
    """``own_group(**capture) -> Group`` on a fresh database of :func:`f11_primary` and the session standby."""
    dbname = f"d{uuid.uuid4().hex[:8]}"
    made: list[Group] = []

    def make(**capture: object) -> Group:
        f11_primary.start()
        f11_primary.create_database(dbname)
        pg_standby.create_database(dbname)
        group = Group(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap, f11_primary, dbname,
                      [Standby("standby", pg_standby, dbname)], ("public.*",), dict(capture))
        group.write_config()
        made.append(group)
        return group

    yield make
    for group in made:
        group.stop_all()
    f11_primary.start()  # a failed case may leave it stopped
    for inst in (f11_primary, pg_standby):
        try:
            inst.drop_database(dbname)
        except RuntimeError as exc:
            print(f"f11: could not drop {dbname} on port {inst.port}: {exc}")


def _stop_with_capture(group: Group, capture, mode: str) -> tuple[float, float, str]:
    """Stop the primary with ``pg_ctl stop -m mode`` while the capture runs: (seconds, walsender CPU s, error).

    When pg_ctl gives up (the bug of issue 19), the capture is killed so that the shutdown can finish,
    and the error is returned for the test to fail on, after the primary is back.
    """
    watch = CpuWatch(walsender_pids(group.primary))
    seconds, error = group.primary.timed_stop(mode, PG_CTL_WAIT_S)
    if error:
        capture.kill9()
        group.primary.stop("immediate")
        capture.start()
    return seconds, watch.stop(), error


def _kill9(group: Group) -> float:
    """kill -9 of the postmaster; the seconds until it and its children are gone."""
    started = time.monotonic()
    group.primary.kill9()
    return time.monotonic() - started


def _baseline(group: Group, capture, probe: WriteProbe, mode: str) -> tuple[float, float]:
    """The same stop with the capture stopped (the peer of the same run), then everything back:
    (stop seconds, write outage seconds)."""
    capture.stop()
    probe.reset()
    seconds = _kill9(group) if mode == "kill9" else group.primary.stop(mode, PG_CTL_WAIT_S)
    group.primary.start()
    probe.wait_commit(60)
    outage = probe.longest_gap()
    capture.start()
    converge(group)
    return seconds, outage


def _back(group: Group, probe: WriteProbe) -> tuple[float, float]:
    """Start the primary; (write outage s, s from the primary taking writes to the standby holding them)."""
    group.primary.start()
    probe.wait_commit(60)
    back = time.monotonic()
    target = ledger_max(group.primary_dsn)
    wait_ledger(group.standby("standby").dsn, target, 120, alive=group.assert_agents_alive)
    return probe.longest_gap(), time.monotonic() - back


Hook = Callable[[Group, BankWorkload | None], None]


def _run_case(group: Group, fault_results_dir: Path, title: str, mode: str, before_stop: Hook | None = None,
              workload_during_stop: bool = True, after_back: Callable[[], None] | None = None,
              hook_in_baseline: bool = True, slow: bool = False) -> None:
    """Inject ``runs`` stops of the primary in ``mode`` (``kill9`` for a postmaster crash), each with a
    baseline stop without the capture; one result row for the case.

    ``before_stop`` brings the capture into the state of the case; ``after_back`` undoes it once the
    primary is back (``hook_in_baseline``: run ``before_stop`` before the baseline stop too). ``slow``
    cases (a 200,000-row transaction, a growing re-read, a 5 s broker pause per run) take
    ``$ARK_FAULT_SLOW_RUNS`` injections instead of ``$ARK_FAULT_RUNS`` (``$ARK_FAULT_RUNS_F11`` sets both).
    """
    runs = fault_runs("F11", default=1, slow=slow)
    invariant = bank_setup(group)
    capture = group.start("capture")
    group.start("apply", "standby")
    probe = WriteProbe(group.primary_dsn, reconnect=not workload_during_stop).start()
    workload: BankWorkload | None = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    errors: list[str] = []
    with fault_case("F11", title, group.standby("standby").dsn, invariant, fault_results_dir) as case:
        case.result.notes.append(f"initial catch-up {converge(group, at_least=20):.1f} s")
        for n in range(1, runs + 1):
            if workload is None:
                workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
            time.sleep(1.0)
            if not workload_during_stop:  # smart: the application ends its sessions, as it must for smart
                workload.stop()
                workload = None
                converge(group)
            if before_stop is not None:
                before_stop(group, workload)
            probe.reset()
            text = capture.log_file.read_text(errors="replace")
            cuts_before, inside_before = text.count(WATCH_CUT), text.count(RESUMED_INSIDE)
            if mode == "kill9":
                watch = CpuWatch(walsender_pids(group.primary))
                seconds = _kill9(group)
                cpu, error = watch.stop(), ""
            else:
                seconds, cpu, error = _stop_with_capture(group, capture, mode)
            if after_back is not None:
                group.primary.start()
                after_back()
            outage, caught_up = _back(group, probe)
            if error:
                errors.append(f"run {n}: {error}")
            # The peer, same run and same data: the same stop with the capture stopped.
            if before_stop is not None and hook_in_baseline:
                before_stop(group, workload)
            base, base_outage = _baseline(group, capture, probe, mode)
            text = capture.log_file.read_text(errors="replace")
            cuts, inside = text.count(WATCH_CUT) - cuts_before, text.count(RESUMED_INSIDE) - inside_before
            case.result.notes.append(
                f"run {n}: shutdown watch cut {cuts}, resumed inside a transaction {inside}; "
                f"stop {seconds:.2f} s with capture, {base:.2f} s without; write outage {outage:.2f} s with, "
                f"{base_outage:.2f} s without; "
                f"standby had everything {caught_up:.2f} s after the primary took writes; walsender CPU {cpu:.2f} s")
            case.result.runs += 1
            assert error or seconds <= base + STOP_LIMIT_S, case.result.notes[-1]
        if workload is None:
            workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
            time.sleep(1.0)
        assert workload.stop() > 0
        probe.stop()
        case.finish(group)
    group.assert_agents_alive()
    assert not errors, "\n".join(errors)
    case.result.assert_clean()


@pytest.mark.timeout(1800)
def test_f11_fast_stop_with_capture_streaming_returns_quickly(own_group, fault_results_dir) -> None:
    """The regression test of issue 19: before the fix ``pg_ctl stop -m fast`` never returned."""
    _run_case(own_group(chunk_rows=50), fault_results_dir, "fast stop, capture streaming", "fast")


@pytest.mark.timeout(1800)
def test_f11_smart_stop_capture_idle(own_group, fault_results_dir) -> None:
    _run_case(own_group(chunk_rows=50), fault_results_dir, "smart stop, capture idle", "smart",
              workload_during_stop=False)


@pytest.mark.timeout(1800)
def test_f11_immediate_stop_capture_streaming(own_group, fault_results_dir) -> None:
    _run_case(own_group(chunk_rows=50), fault_results_dir, "immediate stop, capture streaming", "immediate")


@pytest.mark.timeout(1800)
def test_f11_postmaster_kill9_crash_recovery(own_group, fault_results_dir) -> None:
    _run_case(own_group(chunk_rows=50), fault_results_dir, "kill -9 of the postmaster, crash recovery", "kill9")


#: Rows of the large transaction: sending them to the capture takes several seconds (it publishes them to
#: Kafka as it reads), so the stop, right after the COMMIT, lands while the walsender is still sending.
LARGE_ROWS = 200_000


def _large_txn(group: Group, _workload: BankWorkload | None) -> None:
    """Commit a LARGE_ROWS-row transaction and return at once: the walsender is decoding and sending it."""
    sql(group.primary_dsn, "CREATE TABLE IF NOT EXISTS f11_bulk (id bigserial PRIMARY KEY, batch int, pad text)")
    sql(group.primary_dsn, "TRUNCATE f11_bulk")  # the table stays small over many runs
    sql(group.primary_dsn, "INSERT INTO f11_bulk (batch, pad) "
                           f"SELECT 1, repeat('x', 50) FROM generate_series(1, {LARGE_ROWS})")


@pytest.mark.timeout(1800)
def test_f11_fast_stop_during_large_transaction(own_group, fault_results_dir) -> None:
    _run_case(own_group(chunk_rows=500), fault_results_dir, "fast stop while a large transaction is decoded",
              "fast", before_stop=_large_txn, slow=True)


@pytest.mark.timeout(1800)
def test_f11_fast_stop_while_capture_waits_for_the_broker(own_group, kafka_broker, fault_results_dir) -> None:
    """The broker is paused: the capture's main thread hangs in a Kafka commit and cannot answer the
    walsender; the shutdown watch must notice the stall, see the server going down, and let go."""

    def pause(_group: Group, _workload: BankWorkload | None) -> None:
        kafka_broker.pause()
        time.sleep(5.0)  # the workload keeps committing: capture is now blocked on Kafka, not reading

    _run_case(own_group(chunk_rows=50), fault_results_dir, "fast stop while capture waits for the broker", "fast",
              before_stop=pause, after_back=kafka_broker.resume, hook_in_baseline=False, slow=True)


@pytest.mark.timeout(1800)
def test_f11_fast_stop_while_retransmitting(own_group, fault_results_dir) -> None:
    """A retransmit request (as an applier makes for a corrupt entry) re-reads the slot from a position
    of the case's start; the primary is stopped as soon as the capture says it is retransmitting."""
    group = own_group(chunk_rows=50)
    start: list[tuple[str, bytes, int]] = []

    def retransmit(grp: Group, _workload: BankWorkload | None) -> None:
        if not start:  # the first run: remember where the standby stands; later runs re-read from there too
            row = sql(grp.standby("standby").dsn, 'SELECT position, position_key, next_offset FROM ark.apply_state '
                      'WHERE "group" = %s', (grp.name,))[0]
            start.append((str(row[0]), bytes(row[1]), int(row[2])))
            time.sleep(3.0)  # some transactions to re-read
        position, key, offset = start[0]
        log = grp.agents[0].log_file
        before = log.read_text(errors="replace").count("retransmitting from")
        channel = ControlChannel.for_config(load_config(grp.config), start=None)
        try:  # what an applier publishes for a corrupt entry (consumers/quarantine.py)
            channel.publish(Retransmit(position, key, max(offset - 1, 0), "F11: a restart while retransmitting"),
                            "f11")
        finally:
            channel.close()
        wait_for(lambda: log.read_text(errors="replace").count("retransmitting from") > before, 60,
                 "the capture to start retransmitting")

    _run_case(group, fault_results_dir, "fast stop while the capture retransmits", "fast", before_stop=retransmit,
              hook_in_baseline=False, slow=True)
