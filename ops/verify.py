"""``ark verify STANDBY``: compare primary and standby at one consistent source position, while replication runs.

1. **One position.** The applier is asked to stop between transactions (``verify-hold``); once it has
   answered, a temporary logical slot exports a primary snapshot at P; the applier is told P
   (``verify-at``), applies everything below P and holds before the first entry at or after it
   (``verify-held``). The CLI opens a REPEATABLE READ transaction on the standby, checks that the
   state row is the held one, and releases the applier at once (consumers/hold.py has the protocol).
   Both transactions now see exactly the transactions before P, while apply goes on.
2. **Compare** (ops/verify_compare.py): per table, chunks of ``--chunk-rows`` primary-key rows are
   counted and hashed on each side in SQL; a differing chunk is bisected down to ``--leaf-rows`` and
   then compared row by row to name the exact keys.
3. **Repair** (``--repair``): a second hold at a new position P2, kept while the differing ranges are
   compared again at P2 and only their differing rows are rewritten on the standby, in one transaction,
   through the applier's own way past the read-only guard; then the hold is released.

Exit codes: 0 equal (or every difference repaired), 11 differences found, 12 some table could not be
compared (no primary key, missing or different columns on the standby).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql as psql
from rich.markup import escape

from common.config import ArkConfig, StandbySettings
from common.control import (
    VERIFY_ARMED,
    VERIFY_AT,
    VERIFY_HELD,
    VERIFY_HOLD,
    VERIFY_RELEASE,
    ControlReader,
    ControlRecord,
)
from common.errors import ArkError, SourceError, TargetError
from consumers.base import ApplyState
from consumers.hold import ControlSender, floor_of
from consumers.postgresql.catalog import describe_source_tables
from consumers.postgresql.exported_snapshot import ExportedSnapshot
from consumers.postgresql.state import LOAD_STATE_SQL, state_from_row
from ops.context import console, err_console
from ops.status import STALE_AFTER_S, latest_heartbeats
from ops.verify_compare import (
    SESSION_OPTIONS,
    Conn,
    Digest,
    KeyRange,
    RangeDiff,
    TableSpec,
    bisect_ranges,
    boundaries,
    chunk_ranges,
    describe_range,
    digest,
    format_key,
    middle_key,
    repair_range,
    standby_shape_problem,
)
from schemas.entries import Position

log = logging.getLogger(__name__)

_out = functools.partial(console.print, soft_wrap=True)   # reports: one line per fact, never wrapped
_note = functools.partial(err_console.print, soft_wrap=True)  # progress, on stderr

EXIT_EQUAL = 0
EXIT_DIFFERENT = 11
EXIT_INCOMPLETE = 12

#: How long the applier has to answer the first request (it answers at its next transaction boundary).
ARM_TIMEOUT_S = 30.0
#: The repair commits only if at least this much of the hold is left.
REPAIR_MARGIN_S = 3.0


@dataclass
class Options:
    """The command's options."""

    tables: tuple[str, ...] = ()
    chunk_rows: int = 10_000
    leaf_rows: int = 100
    repair: bool = False
    timeout: float | None = None
    max_hold_s: float = 30.0
    as_json: bool = False


@dataclass
class TableResult:
    """What the compare found in one table."""

    table: str
    primary_rows: int = 0
    standby_rows: int = 0
    chunks: int = 0
    ranges: list[RangeDiff] = field(default_factory=list)
    error: str = ""
    fix: str = ""
    spec: TableSpec | None = None

    @property
    def verdict(self) -> str:
        """``equal``, ``different`` or ``error``."""
        return "error" if self.error else "different" if self.ranges else "equal"


@dataclass
class Point:
    """Both sides open at one source position (the standby's hold may still be on: see ``write``)."""

    primary: Conn
    standby: Conn
    position: Position
    state: ApplyState
    stopped_s: float          # the applier's first stop (it waited for P), as it reported
    held_at: float            # monotonic time the CLI saw the hold at P
    held_s: float = 0.0       # until the CLI released it


def verdict_of(results: list[TableResult]) -> tuple[str, int]:
    """The overall verdict and exit code: differences outrank tables that could not be compared."""
    if any(r.verdict == "different" for r in results):
        return "different", EXIT_DIFFERENT
    if any(r.verdict == "error" for r in results):
        return "incomplete", EXIT_INCOMPLETE
    return "equal", EXIT_EQUAL


# -- the hold ----------------------------------------------------------------------------------------
class HoldClient:
    """The CLI's side of the hold protocol for one standby."""

    def __init__(self, cfg: ArkConfig, standby: StandbySettings, max_hold_s: float) -> None:
        self.cfg, self.standby, self.max_hold_s = cfg, standby, max_hold_s
        # Old records are read too, and ignored: only answers naming our own request ids count.
        self._reader = ControlReader(cfg.kafka, cfg.group)
        self._sender = ControlSender(cfg.kafka, cfg.group)

    def close(self) -> None:
        """Release the Kafka clients."""
        self._sender.close()
        self._reader.close()

    def _await(self, kind: str, request: str, timeout: float, what: str, fix: str,
               progress: Callable[[], None] | None = None) -> ControlRecord:
        deadline = time.monotonic() + timeout
        next_progress = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            for rec in self._reader.poll():
                if rec.kind == kind and rec.target == self.standby.name and rec.args.get("request") == request:
                    return rec
            if progress is not None and time.monotonic() >= next_progress:
                progress()
                next_progress += 5.0
            time.sleep(0.002)
        raise ArkError(f"the applier of {self.standby.name} did not {what} within {timeout:.0f} s", fix=fix)

    @contextmanager
    def point(self, *, write: bool, timeout: float) -> Iterator[Point]:
        """Hold the applier at a new position P and open both sides there.

        Read mode releases the applier as soon as the standby's snapshot is taken. Write mode keeps the
        hold until the block ends: commit the standby inside it; anything left open is rolled back
        before the release.
        """
        name = self.standby.name
        request = self._sender.send(VERIFY_HOLD, name, max_hold_s=self.max_hold_s)
        conns: list[Conn] = []
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._sender.send(VERIFY_RELEASE, name, request=request)

        try:
            self._await(VERIFY_ARMED, request, ARM_TIMEOUT_S, "answer the verify request",
                        f"check that 'ark apply {name}' runs and is not stuck (ark status)")
            armed = time.monotonic()
            with ExportedSnapshot(self.cfg.primary) as snap:
                assert snap.position is not None
                position = snap.position
                conns.append(_open_primary(self.cfg, snap.name))
            self._sender.send(VERIFY_AT, name, request=request, position=position.text, key=position.key.hex())
            log.info("verify: primary snapshot at %s, %.3f s after the applier stopped", position.text,
                     time.monotonic() - armed)
            held = self._await(VERIFY_HELD, request, timeout, f"reach {position.text}",
                               f"check 'ark status' (is {name} paused, far behind, or the capture down?); a "
                               "longer --timeout helps a standby that is far behind",
                               progress=lambda: self._progress(position))
            held_at = time.monotonic()
            conns.append(_open_standby(self.standby, write=write))
            st = _held_state(conns[1], self.cfg.group, name, write)
            floor = floor_of(position.key.hex())
            if st.next_offset != int(held.args["next_offset"]) or st.position_key > floor:
                raise ArkError(f"{name} moved past its verify hold (state at {st.position}, offset "
                               f"{st.next_offset}; held at offset {held.args['next_offset']})",
                               fix="run verify again; raise --max-hold if the machine is very slow")
            point = Point(conns[0], conns[1], position, st, float(held.args.get("armed_s", "0")), held_at)
            if not write:
                release()
                point.held_s = time.monotonic() - held_at
            yield point
            if write:
                point.held_s = time.monotonic() - held_at
        finally:
            for conn in reversed(conns):
                conn.close()  # rolls back whatever is open before the applier goes on
            release()

    def _progress(self, position: Position) -> None:
        try:
            with psycopg.connect(autocommit=True, **self.standby.connect_kwargs()) as conn:
                row = conn.execute(LOAD_STATE_SQL, [self.cfg.group, self.standby.name]).fetchone()
            st = state_from_row(row) if row else None
            where = f"at {st.position} (offset {st.next_offset})" if st else "not synced"
        except psycopg.Error as exc:
            where = f"unreachable ({str(exc).strip().splitlines()[0]})"
        _note(f"waiting for {self.standby.name} to reach {position.text}: it is {where}")


def _open_primary(cfg: ArkConfig, snapshot: str) -> Conn:
    kwargs = {**cfg.primary.connect_kwargs(), "application_name": "ark-verify", "options": SESSION_OPTIONS}
    try:
        conn: Conn = psycopg.connect(autocommit=True, **kwargs)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(psql.SQL("SET TRANSACTION SNAPSHOT {}").format(psql.Literal(snapshot)))
    except psycopg.Error as exc:
        raise SourceError(f"cannot open the primary snapshot for verify: {str(exc).strip().splitlines()[0]}",
                          fix="check the primary's connection settings ('ark check')") from None
    return conn


def _open_standby(settings: StandbySettings, *, write: bool) -> Conn:
    # The applier's own way past the read-only guard: a session default of read-write, set only here.
    options = SESSION_OPTIONS + (" -c default_transaction_read_only=off -c lock_timeout=5s" if write else "")
    kwargs = {**settings.connect_kwargs(), "application_name": "ark-verify", "options": options}
    try:
        conn: Conn = psycopg.connect(autocommit=True, **kwargs)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ " + ("READ WRITE" if write else "READ ONLY"))
    except psycopg.Error as exc:
        raise TargetError(f"cannot open standby {settings.name} for verify: {str(exc).strip().splitlines()[0]}",
                          fix="check the standby's connection settings ('ark check')") from None
    return conn


def _held_state(conn: Conn, group: str, standby: str, write: bool) -> ApplyState:
    """The state row, read as the first statement: the standby's snapshot is taken here."""
    row = conn.execute(LOAD_STATE_SQL + (" FOR UPDATE NOWAIT" if write else ""), [group, standby]).fetchone()
    if row is None:
        raise ArkError(f"standby {standby} has no state row", fix=f"run 'ark sync {standby}' first")
    return state_from_row(row)


# -- compare and repair ------------------------------------------------------------------------------
def compare_table(primary: Conn, standby: Conn, spec: TableSpec, opts: Options) -> TableResult:
    """Chunked compare of one table, with the exact keys of every differing small range."""
    res = TableResult(spec.table, spec=spec)
    problem = standby_shape_problem(standby, spec)
    if problem:
        res.error, res.fix = problem, f"resync the table (ark resync --table {spec.table})"
        return res
    ranges = chunk_ranges(boundaries(primary, spec, opts.chunk_rows))
    res.chunks = len(ranges)
    with ThreadPoolExecutor(1, thread_name_prefix="verify-primary") as pool:

        def both(rng: KeyRange) -> tuple[Digest, Digest]:
            on_primary = pool.submit(digest, primary, spec, rng)  # both servers work at once
            on_standby = digest(standby, spec, rng)
            return on_primary.result(), on_standby

        def split(rng: KeyRange, on_primary: bool, rows: int) -> tuple[str, ...]:
            return middle_key(primary if on_primary else standby, spec, rng, rows)

        shown = time.monotonic()
        for i, rng in enumerate(ranges, 1):
            p, s = both(rng)
            res.primary_rows += p.rows
            res.standby_rows += s.rows
            for leaf, _lp, _ls in bisect_ranges(rng, p, s, both, split, opts.leaf_rows):
                res.ranges.append(describe_range(primary, standby, spec, leaf))
            if time.monotonic() - shown >= 1.0 and i < len(ranges):
                _note(f"  {spec.table}: {i}/{len(ranges)} chunks")
                shown = time.monotonic()
    return res


def repair(point: Point, results: list[TableResult], deadline: float) -> list[dict[str, Any]]:
    """Rewrite the differing rows of the differing ranges at ``point`` (standby transaction left open)."""
    done: list[dict[str, Any]] = []
    for res in results:
        spec = res.spec
        if spec is None:
            continue
        for found in res.ranges:
            diff = repair_range(point.primary, point.standby, spec, found.range)
            after_p, after_s = digest(point.primary, spec, found.range), digest(point.standby, spec, found.range)
            if after_p != after_s:
                raise ArkError(f"{spec.table} range {found.range.describe()} still differs after the repair; "
                               "nothing was changed", fix="report this as a bug; 'ark resync --table' is the way out")
            done.append({"table": spec.table, "range": found.range.describe(), "deleted": len(diff.extra),
                         "inserted": len(diff.missing), "rewritten": len(diff.different),
                         "keys": [format_key(k) for k in (*diff.missing, *diff.extra, *diff.different)]})
            if time.monotonic() > deadline:
                raise ArkError("the repair would outlast the applier's hold; nothing was changed",
                               fix="repair one table at a time (--table), or raise --max-hold")
    return done


# -- the command -------------------------------------------------------------------------------------
def _applier_beat(cfg: ArkConfig, standby: StandbySettings) -> dict[str, Any]:
    beat = latest_heartbeats(cfg, window_s=STALE_AFTER_S).get(("apply", standby.name))
    if beat is None or beat["state"] in ("stopped", "error") or time.time() - beat["sent_at_us"] / 1e6 > STALE_AFTER_S:
        raise ArkError(f"the applier of {standby.name} is not running: verify compares while replication runs, "
                       "with the applier's help to stop at one position for a moment",
                       fix=f"start 'ark apply {standby.name}' and run verify again")
    return beat


def _specs(cfg: ArkConfig, primary: Conn, wanted: tuple[str, ...]) -> tuple[list[TableSpec], list[TableResult]]:
    metas = {m.table: m for m in describe_source_tables(primary, cfg.primary.tables)}
    names = [t if "." in t else f"public.{t}" for t in wanted] or sorted(metas)
    specs, errors = [], []
    for name in names:
        meta = metas.get(name)
        if meta is None:
            raise ArkError(f"table {name} is not replicated (primary.tables: {', '.join(cfg.primary.tables)})",
                           fix="give schema.table of a replicated table; 'ark verify STANDBY' checks them all")
        try:
            specs.append(TableSpec.of(meta))
        except ValueError as exc:
            errors.append(TableResult(name, error=str(exc), fix=f"ALTER TABLE {name} ADD PRIMARY KEY (...)"))
    return specs, errors


def run_verify(cfg: ArkConfig, standby_name: str, opts: Options) -> int:
    """Compare (and with ``opts.repair`` repair) one standby; prints the report; returns the exit code."""
    standby = cfg.standby(standby_name)
    if cfg.primary.engine != "postgresql" or standby.engine != "postgresql":
        raise ArkError("verify compares PostgreSQL primaries and standbys only, for now", fix="use engine: postgresql")
    beat = _applier_beat(cfg, standby)
    delay = float(beat.get("delay_seconds") or 0.0)
    timeout = opts.timeout if opts.timeout is not None else delay + 120.0
    if delay > 0:
        _note(f"{standby.name} applies with a delay of {delay:g} s: reaching the compare position "
                          f"takes about that long (waiting up to {timeout:g} s)")
    started = time.monotonic()
    client = HoldClient(cfg, standby, opts.max_hold_s)
    try:
        with client.point(write=False, timeout=timeout) as pt:
            specs, results = _specs(cfg, pt.primary, opts.tables)
            for spec in specs:
                _note(f"verify {spec.table} ...")
                results.append(compare_table(pt.primary, pt.standby, spec, opts))
        results.sort(key=lambda r: r.table)
        doc = _document(standby.name, pt, results, time.monotonic() - started)
        verdict, code = verdict_of(results)
        if opts.repair and verdict == "different":
            with client.point(write=True, timeout=timeout) as pt2:
                repaired = repair(pt2, results, pt2.held_at + opts.max_hold_s - REPAIR_MARGIN_S)
                pt2.standby.execute("COMMIT")
            doc["repair"] = {"position": pt2.position.text, "held_s": round(pt2.held_s, 3), "ranges": repaired}
            code = EXIT_INCOMPLETE if any(r.verdict == "error" for r in results) else EXIT_EQUAL
    finally:
        client.close()
    if opts.as_json:
        print(json.dumps(doc, indent=2))
    else:
        _print(doc)
    return code


def _document(standby: str, pt: Point, results: list[TableResult], seconds: float) -> dict[str, Any]:
    verdict, code = verdict_of(results)
    return {
        "standby": standby, "position": pt.position.text, "standby_position": pt.state.position,
        "standby_next_offset": pt.state.next_offset,
        "applier_stopped_s": round(pt.stopped_s, 3), "applier_held_s": round(pt.held_s, 3),
        "seconds": round(seconds, 3), "verdict": verdict, "exit_code": code,
        "tables": [{"table": r.table, "verdict": r.verdict, "primary_rows": r.primary_rows,
                    "standby_rows": r.standby_rows, "chunks": r.chunks, "error": r.error, "fix": r.fix,
                    "ranges": [{"range": d.range.describe(), "primary_rows": d.primary_rows,
                                "standby_rows": d.standby_rows,
                                "missing_on_standby": [format_key(k) for k in d.missing],
                                "extra_on_standby": [format_key(k) for k in d.extra],
                                "different": [format_key(k) for k in d.different]} for d in r.ranges]}
                   for r in results],
    }


def _keys(label: str, keys: list[str], limit: int = 20) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{label} {', '.join(escape(k) for k in keys[:limit])}{more}" if keys else ""


def _print(doc: dict[str, Any]) -> None:
    """The human report (data is escaped: keys and names may contain rich markup characters)."""
    _out(f"verify {doc['standby']} at {doc['position']} (standby state {doc['standby_position']}, offset "
         f"{doc['standby_next_offset']}); applier stopped {doc['applier_stopped_s']:.3f} s before the position "
         f"and held {doc['applier_held_s']:.3f} s at it; verify took {doc['seconds']:.1f} s")
    for t in doc["tables"]:
        head = f"  {escape(t['table'])}: {t['primary_rows']} rows on the primary, {t['standby_rows']} on the " \
               f"standby, {t['chunks']} chunks: "
        if t["verdict"] == "error":
            fix = f" (fix: {escape(t['fix'])})" if t["fix"] else ""
            _out(head + f"[bold red]error:[/] {escape(t['error'])}{fix}")
            continue
        if t["verdict"] == "equal":
            _out(head + "[green]equal[/]")
            continue
        _out(head + f"[bold red]different[/] in {len(t['ranges'])} key ranges")
        for r in t["ranges"]:
            parts = [p for p in (_keys("missing on standby:", r["missing_on_standby"]),
                                 _keys("extra on standby:", r["extra_on_standby"]),
                                 _keys("different:", r["different"])) if p]
            _out(f"    keys {escape(r['range'])}: {r['primary_rows']} rows on the primary, {r['standby_rows']} on "
                 "the standby; " + "; ".join(parts))
    verdict = doc["verdict"]
    if "repair" in doc:
        rep = doc["repair"]
        for r in rep["ranges"]:
            _out(f"  repaired {escape(r['table'])} keys {escape(r['range'])}: inserted {r['inserted']}, deleted "
                 f"{r['deleted']}, rewrote {r['rewritten']}")
        _out(f"[green]repaired[/] {len(rep['ranges'])} ranges at {rep['position']} (applier held "
             f"{rep['held_s']:.3f} s); run 'ark verify {doc['standby']}' again to confirm")
    elif verdict == "equal":
        _out("[green]verdict: equal[/]")
    elif verdict == "different":
        _out(f"[bold red]verdict: different[/] (exit {EXIT_DIFFERENT}); 'ark verify {doc['standby']} --repair' "
             "rewrites the differing rows")
    else:
        _out(f"[bold yellow]verdict: incomplete[/] (exit {EXIT_INCOMPLETE}): some tables could not be compared")
