"""The fault suite's checker: the bank/ledger workload observed on a standby while faults are injected.

Four things are checked (tests/faults/README.md):

* **gap-free prefix**: every observation of the standby holds exactly the ledger seqs ``1..k``
  (``deploy.workload`` numbers transfers in commit order), and ``k`` never goes backwards;
* **nothing applied twice**: no duplicate history id or seq, no row the primary does not have;
* **the total balance** equals the invariant at every observation;
* **every table is equal** at the end, row by row.

One observation is ONE repeatable-read transaction on the standby, so the seqs and the total come
from the same snapshot. :class:`LedgerSampler` takes one every ~0.15 s and tolerates a standby that is
briefly unreachable (paused, cut off). :class:`FaultRun` is the result row of one case; :func:`record`
writes it as JSON for ``tests/faults/report.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

#: Default number of injections per case (CI); ``deploy/test.sh --faults-full`` sets 20.
DEFAULT_RUNS = 2
#: Default length of a pause or a network cut in CI; the full run uses 30 s.
DEFAULT_OUTAGE_S = 8.0

BANK_TABLES = ["public.accounts", "public.history", "public.ark_ledger_seq"]

_LEDGER_SQL = ("SELECT count(*), count(DISTINCT id), count(seq), count(DISTINCT seq), "
               "coalesce(min(seq), 0), coalesce(max(seq), 0) FROM history")


def fault_runs(fault: str = "", default: int = DEFAULT_RUNS, slow: bool = False) -> int:
    """Injections for case ``fault``: ``$ARK_FAULT_RUNS_<fault>`` (e.g. ``ARK_FAULT_RUNS_F3``), else
    ``$ARK_FAULT_RUNS``, else ``default``.

    ``slow`` cases (each injection lasts an outage, ~30 s in the full run) read ``$ARK_FAULT_SLOW_RUNS``
    instead of ``$ARK_FAULT_RUNS``, default 1.
    """
    own = os.environ.get(f"ARK_FAULT_RUNS_{fault.upper()}") if fault else None
    if own:
        return max(1, int(own))
    if slow:
        return max(1, int(os.environ.get("ARK_FAULT_SLOW_RUNS", 1)))
    return max(1, int(os.environ.get("ARK_FAULT_RUNS", default)))


def outage_seconds(default: float = DEFAULT_OUTAGE_S) -> float:
    """Length of a pause or network cut: ``$ARK_FAULT_OUTAGE_S`` or ``default`` (30 in the full run)."""
    return float(os.environ.get("ARK_FAULT_OUTAGE_S", default))


@dataclass
class FaultRun:
    """The result row of one fault case (summed over its runs)."""

    fault: str
    title: str
    runs: int = 0
    lost: int = 0
    duplicated: int = 0
    partial_visible: int = 0
    samples: int = 0
    unequal_tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    tables_compared: bool = True  # False where the case leaves the standby behind on purpose (F6)

    def add(self, other: FaultRun) -> None:
        """Fold another run of the same case into this row."""
        self.runs += other.runs
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.partial_visible += other.partial_visible
        self.samples += other.samples
        self.unequal_tables += [t for t in other.unequal_tables if t not in self.unequal_tables]
        self.notes += other.notes
        self.error = self.error or other.error

    def assert_clean(self, min_samples: int = 1) -> None:
        """Fail with every finding unless lost, duplicated and partial-visible are all zero."""
        problems = []
        if self.error:
            problems.append(f"the case did not finish: {self.error}")
        if self.runs < 1:
            problems.append("no run completed")
        if self.samples < min_samples:
            problems.append(f"only {self.samples} observations of the standby (need {min_samples})")
        for name in ("lost", "duplicated", "partial_visible"):
            if getattr(self, name):
                problems.append(f"{name} = {getattr(self, name)}")
        if self.unequal_tables:
            problems.append(f"tables differ at the end: {', '.join(self.unequal_tables)}")
        assert not problems, f"{self.fault} {self.title}: " + "; ".join(problems) + "\n" + "\n".join(self.notes[:20])


def results_dir(default: Path | None = None) -> Path:
    """Where result rows go: ``$ARK_FAULT_RESULTS``, else ``default`` (the pytest tmp dir, see conftest)."""
    env = os.environ.get("ARK_FAULT_RESULTS")
    path = Path(env) if env else (default or Path("/tmp/ark-fault-results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(result: FaultRun, directory: Path | None = None) -> Path:
    """Write ``result`` as ``<dir>/<fault>-<title>.json`` (one file per case; a rerun replaces it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{result.fault} {result.title}".lower()).strip("-")
    path = results_dir(directory) / f"{slug}.json"
    path.write_text(json.dumps(asdict(result), indent=1, sort_keys=True) + "\n")
    return path


@contextmanager
def recorded(result: FaultRun, directory: Path | None = None) -> Iterator[contextlib.ExitStack]:
    """The frame of a fault case: yields an ``ExitStack`` for what the case starts (stopped last-in first-out
    when the case ends, passed or failed), keeps the first line of a failure in ``result.error``, and writes the
    result row last, so a failed run leaves its row and notes behind."""
    try:
        with contextlib.ExitStack() as stack:
            yield stack
    except BaseException as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        result.error = f"{type(exc).__name__}: {first}"[:300]
        raise
    finally:
        record(result, directory)


def summary_note(result: FaultRun, label: str, values: list[float], what: str = "") -> None:
    """Append ``label p50 X s, max Y s over N`` to the notes, when there is anything to summarise."""
    if values:
        result.notes.append(f"{label} p50 {statistics.median(values):.2f} s, max {max(values):.2f} s over "
                            f"{len(values)}{what}")


# -- observations --------------------------------------------------------------------------------------
Extra = tuple[str, str, Callable[[int], bool]]  # (name, SQL returning one integer, valid(value))


@dataclass
class Observation:
    """One snapshot of the standby."""

    rows: int
    distinct_ids: int
    seqs: int
    distinct_seqs: int
    min_seq: int
    max_seq: int
    total: Decimal
    extras: dict[str, int]

    def problems(self, invariant: Decimal, previous_max: int, extra: list[Extra]) -> list[str]:
        """What is wrong with this observation (empty when it is clean)."""
        out = []
        if self.total != invariant:
            out.append(f"total balance {self.total} != {invariant} (a partial transaction is visible)")
        if self.rows != self.distinct_ids or self.seqs != self.distinct_seqs:
            out.append(f"duplicates: {self.rows} rows/{self.distinct_ids} ids, {self.seqs} seqs/{self.distinct_seqs}")
        if self.seqs != self.rows or self.max_seq != self.seqs or (self.seqs and self.min_seq != 1):
            out.append(f"ledger not a gap-free prefix: {self.seqs} seqs in {self.min_seq}..{self.max_seq}")
        if self.max_seq < previous_max:
            out.append(f"ledger went backwards: max seq {self.max_seq} after {previous_max}")
        for name, _sql, valid in extra:
            if not valid(self.extras[name]):
                out.append(f"{name} = {self.extras[name]} (a partial transaction is visible)")
        return out


def observe(conn: psycopg.Connection[Any], extra: list[Extra] = ()) -> Observation:  # type: ignore[assignment]
    """Read the ledger, the total and the extras in ONE repeatable-read, read-only transaction."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        row = conn.execute(_LEDGER_SQL).fetchone()
        total = conn.execute("SELECT coalesce(sum(balance), 0) FROM accounts").fetchone()
        extras = {}
        for name, sql, _valid in extra:
            value = conn.execute(sql).fetchone()
            extras[name] = int(value[0]) if value else 0
    finally:
        conn.execute("ROLLBACK")
    assert row is not None and total is not None
    rows, ids, seqs, dseqs, lo, hi = (int(v) for v in row)
    return Observation(rows, ids, seqs, dseqs, lo, hi, total=Decimal(total[0]), extras=extras)


class LedgerSampler:
    """A thread observing the standby every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, dsn: str, invariant: Decimal, extra: list[Extra] | None = None, interval: float = 0.15) -> None:
        """Nothing runs until :meth:`start`."""
        self.dsn = dsn
        self.invariant = invariant
        self.extra = list(extra or [])
        self.interval = interval
        self.samples = 0
        self.bad = 0
        self.unreachable = 0
        self.findings: list[str] = []
        self.max_seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-sampler", daemon=True)

    def start(self) -> LedgerSampler:
        """Start observing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and join (a sample stuck on a paused standby finishes first)."""
        self._stop.set()
        self._thread.join(timeout=120)

    def _connect(self) -> psycopg.Connection[Any]:
        # autocommit: observe() writes its own BEGIN; connect_timeout: a paused server accepts the TCP
        # connection (kernel backlog) but never answers the start-up packet.
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                obs = observe(conn, self.extra)
            except psycopg.Error:
                self.unreachable += 1  # paused, restarted or cut off: the next sample will tell
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.5)
                continue
            problems = obs.problems(self.invariant, self.max_seq, self.extra)
            self.samples += 1
            self.max_seq = max(self.max_seq, obs.max_seq)
            if problems:
                self.bad += 1
                if len(self.findings) < 20:
                    self.findings.append(f"sample {self.samples}: " + "; ".join(problems))
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()


# -- the end of a case -----------------------------------------------------------------------------------
def _scalar(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def ledger_max(dsn: str) -> int:
    """The highest ledger seq in ``dsn`` (0 when empty)."""
    return _scalar(dsn, "SELECT coalesce(max(seq), 0) FROM history")


def wait_ledger(dsn: str, at_least: int, timeout: float, alive: Callable[[], None] | None = None) -> float:
    """Wait until ``dsn`` holds ledger seq ``at_least``; returns the seconds it took (AssertionError on timeout)."""
    start = time.monotonic()
    while True:
        try:
            if ledger_max(dsn) >= at_least:
                return time.monotonic() - start
        except psycopg.Error:
            pass
        if alive is not None:
            alive()
        if time.monotonic() - start > timeout:
            raise AssertionError(f"the standby did not reach ledger seq {at_least} within {timeout:g} s")
        time.sleep(0.3)


def history_keys(dsn: str, upto: int | None = None) -> tuple[list[int], list[int]]:
    """All history ids and (non-NULL) seqs of ``dsn``; with ``upto`` only the rows with seq <= it."""
    where = "" if upto is None else f" WHERE seq <= {int(upto)}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT id, seq FROM history" + where).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows if r[1] is not None]


def ledger_counts(primary_dsn: str, standby_dsn: str, upto: int | None = None) -> tuple[int, int]:
    """(lost, duplicated) of the history ledger.

    lost: primary rows missing on the standby. duplicated: duplicate ids or seqs on the standby, plus
    standby rows the primary does not have. ``upto`` limits both sides to seqs <= it.
    """
    p_ids, _ = history_keys(primary_dsn, upto)
    s_ids, s_seqs = history_keys(standby_dsn, upto)
    lost = len(set(p_ids) - set(s_ids))
    duplicated = (len(s_ids) - len(set(s_ids))) + (len(s_seqs) - len(set(s_seqs))) + len(set(s_ids) - set(p_ids))
    return lost, duplicated


@dataclass
class Case:
    """One fault case in progress: its sampler and its result row."""

    result: FaultRun
    sampler: LedgerSampler
    started: float = field(default_factory=time.monotonic)
    _absorbed: bool = False

    def finish(self, group: Any, standby: str = "standby", tables: list[str] | None = None,
               timeout: float = 180) -> FaultRun:
        """Wait until every table is equal (or ``timeout``), stop sampling, and fill in the result row."""
        tables = tables or BANK_TABLES
        diffs = group.wait_equal(standby, tables, timeout=timeout)
        time.sleep(0.5)  # a few observations of the final state
        self.sampler.stop()
        lost, duplicated = ledger_counts(group.primary_dsn, group.standby(standby).dsn)
        r = self.result
        r.lost += lost
        r.duplicated += duplicated
        r.unequal_tables += [d.table for d in diffs if not d.equal]
        r.notes += [f"{d.table}: {d.primary_rows} rows on the primary, {d.standby_rows} on the standby; "
                    f"missing {d.missing_on_standby[:3]}, extra {d.extra_on_standby[:3]}, "
                    f"different {d.different[:3]}" for d in diffs if not d.equal]
        self.absorb()
        return r

    def absorb(self) -> None:
        """Stop the sampler (if still running) and copy its counts into the result row (once)."""
        if self._absorbed:
            return
        self._absorbed = True
        self.sampler.stop()
        r = self.result
        r.samples += self.sampler.samples
        r.partial_visible += self.sampler.bad
        r.notes += self.sampler.findings
        if self.sampler.unreachable:
            r.notes.append(f"standby unreachable for {self.sampler.unreachable} observation attempts")
        r.seconds = round(time.monotonic() - self.started, 1)


@contextmanager
def fault_case(fault: str, title: str, standby_dsn: str, invariant: Decimal, directory: Path | None = None,
               extra: list[Extra] | None = None) -> Iterator[Case]:
    """Observe ``standby_dsn`` during the block; on exit record the row, failed or not.

    Inside, count the injections in ``case.result.runs`` and call ``case.finish(group)`` at the end;
    after the block, ``case.result.assert_clean()``.
    """
    case = Case(FaultRun(fault, title), LedgerSampler(standby_dsn, invariant, extra).start())
    try:
        yield case
    except BaseException as exc:
        case.result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        raise
    finally:
        case.absorb()
        record(case.result, directory)


# -- set-up shared by the cases ----------------------------------------------------------------------------
def bank_setup(group: Any, accounts: int = 100, standby: str = "standby", overwrite: bool = False) -> Decimal:
    """Create the ledger bank on the primary and sync ``standby``; returns the invariant total.

    ``overwrite``: the standby database holds another group's copy (a case that runs several groups on
    the same databases), which ``ark sync`` refuses to replace without ``--overwrite``.
    """
    from deploy.workload import create_bank

    invariant = create_bank(group.primary_dsn, accounts=accounts, ledger=True)
    group.ark_ok("sync", standby, *(["--overwrite"] if overwrite else []))
    return invariant


def converge(group: Any, timeout: float = 120, standby: str = "standby", at_least: int = 0) -> float:
    """Wait until the standby holds every ledger seq the primary has committed now (and at least
    ``at_least``: before the first fault, proof that both agents are up and streaming); returns the seconds."""
    target = max(ledger_max(group.primary_dsn), at_least)
    return wait_ledger(group.standby(standby).dsn, target, timeout, alive=group.assert_agents_alive)


def seed() -> int:
    """The random seed of a case: ``$ARK_FAULT_SEED`` (to replay a run) or a fresh one (noted in the row)."""
    return int(os.environ.get("ARK_FAULT_SEED") or time.time_ns() % 1_000_000_007)


# application_name of the applier's sessions: 'ark apply <standby> on <host> pid <pid>' (consumers/postgresql/
# replica.py).
_OPEN_APPLY_TXN = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND application_name LIKE 'ark apply %' AND backend_xid IS NOT NULL")


def wait_open_apply_txn(standby_dsn: str, timeout: float) -> bool:
    """True as soon as the applier holds an open, written-to transaction on the standby (mid-batch)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(_OPEN_APPLY_TXN).fetchone()
            if row and row[0]:
                return True
            time.sleep(0.005)
    return False


def batches_partial(table: str, size: int) -> Extra:
    """An observation extra: the number of ``batch`` groups of ``table`` that do not hold ``size`` rows
    (each batch is one source transaction, so a standby must show each whole or not at all)."""
    return (f"{table} batches not of {size} rows",
            f"SELECT count(*) FROM (SELECT batch FROM {table} GROUP BY batch HAVING count(*) <> {size}) x",
            lambda n: n == 0)
