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

A standby of another engine is compared at P the same way, but row values are read and compared in
canonical form (ops/verify_cross.py, common/verify_cross.py); ``--repair`` is refused for it.

Exit codes: 0 equal (or every difference repaired), 11 differences found, 12 some table could not be
compared (no primary key, missing or different columns on the standby).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape

from common.config import ArkConfig, StandbySettings
from common.control import ControlChannel, ControlRecord
from common.errors import ArkError
from common.exit_codes import ExitCode
from common.snapshot import Snapshot
from common.verify import (
    BucketDiff,
    Digest,
    KeyRange,
    RangeDiff,
    SourceSide,
    StandbySide,
    TableSpec,
    bisect_ranges,
    bucket_count,
    chunk_ranges,
    describe_range,
    differing_buckets,
    format_key,
    repair_range,
)
from consumers.hold import floor_of
from ops.context import console, err_console
from ops.engines import applier_factory, snapshot_source, verifier
from ops.guard import refuse_if_harmful
from ops.status import STALE_AFTER_S, latest_beats
from schemas.control import PublishSequences, VerifyArmed, VerifyAt, VerifyHeld, VerifyHold, VerifyRelease
from schemas.entries import Position, TableMeta

log = logging.getLogger(__name__)

_out = functools.partial(console.print, soft_wrap=True)   # reports: one line per fact, never wrapped
_note = functools.partial(err_console.print, soft_wrap=True)  # progress, on stderr

EXIT_EQUAL = ExitCode.OK
EXIT_DIFFERENT = ExitCode.VERIFY_DIFFERENT
EXIT_INCOMPLETE = ExitCode.VERIFY_INCOMPLETE

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
    #: Tables without a unique key: the hash buckets whose multisets of rows differ.
    buckets: list[BucketDiff] = field(default_factory=list)
    error: str = ""
    fix: str = ""
    spec: TableSpec | None = None
    #: Why the table is not compared although it is replicated in part (only its inserts travel).
    skipped: str = ""

    @property
    def verdict(self) -> str:
        """``equal``, ``different``, ``error`` or ``skipped`` (not compared, by design)."""
        if self.skipped:
            return "skipped"
        return "error" if self.error else "different" if self.ranges or self.buckets else "equal"


@dataclass
class Point:
    """Both sides open at one source position (the standby's hold may still be on: see ``write``)."""

    primary: SourceSide
    standby: StandbySide
    position: Position
    #: The standby's state row at the hold: next offset and position.
    next_offset: int
    standby_position: str
    stopped_s: float          # the applier's first stop (it waited for P), as it reported
    held_at: float            # monotonic time the CLI saw the hold at P
    #: The replicated tables as the snapshot describes them (the stream's own descriptions).
    tables: list[TableMeta] = field(default_factory=list)
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
        # Only answers naming our own request ids count: older records are not read at all.
        self._channel = ControlChannel.for_config(cfg, start=None)

    def close(self) -> None:
        """Release the Kafka clients."""
        self._channel.close()

    def _await(self, kind: type[VerifyArmed | VerifyHeld], request: str, timeout: float, what: str, fix: str,
               progress: Callable[[], None] | None = None) -> ControlRecord:
        deadline = time.monotonic() + timeout
        next_progress = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            for rec in self._channel.poll():
                if isinstance(rec.body, kind) and rec.target == self.standby.name and rec.body.request == request:
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
        check = verifier(self.standby.engine)
        request = self._channel.publish(VerifyHold(self.max_hold_s), name)
        sides: list[SourceSide | StandbySide] = []
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._channel.publish(VerifyRelease(request), name)

        try:
            self._await(VerifyArmed, request, ARM_TIMEOUT_S, "answer the verify request",
                        f"check that 'ark apply {name}' runs and is not stuck (ark status)")
            armed = time.monotonic()
            snap: Snapshot
            with snapshot_source(self.cfg.primary).open() as snap:
                position = snap.position
                tables = snap.tables(self.cfg.primary.tables)
                # The primary's engine opens its own snapshot (a mixed pair: not the standby's engine).
                source = verifier(self.cfg.primary.engine).open_source(self.cfg.primary, snap)
            sides.append(source)
            self._channel.publish(VerifyAt(request, position.text, position.key), name)
            # An idle source (a quiet primary, one fenced for a cutover) gives the applier its boundary at P only by
            # a checkpoint: asking the capture for the sequences brings one at once, not up to 10 s later.
            self._channel.publish(PublishSequences(f"verify {name}: a checkpoint at {position.text}"), "")
            log.info("verify: primary snapshot at %s, %.3f s after the applier stopped", position.text,
                     time.monotonic() - armed)
            held = self._await(VerifyHeld, request, timeout, f"reach {position.text}",
                               f"check 'ark status' (is {name} paused, far behind, or the capture down?); a "
                               "longer --timeout helps a standby that is far behind",
                               progress=lambda: self._progress(position))
            held_at = time.monotonic()
            standby = check.open_standby(self.standby, write=write)
            sides.append(standby)
            next_offset, at, at_key = standby.held_state(self.cfg.group, name)
            floor = floor_of(position.key)
            answer = held.body
            assert isinstance(answer, VerifyHeld)
            if next_offset != answer.next_offset or at_key > floor:
                raise ArkError(f"{name} moved past its verify hold (state at {at}, offset {next_offset}; held at "
                               f"offset {answer.next_offset})",
                               fix="run verify again; raise --max-hold if the machine is very slow")
            point = Point(source, standby, position, next_offset, at, answer.armed_s, held_at, tables)
            if not write:
                release()
                point.held_s = time.monotonic() - held_at
            yield point
            if write:
                point.held_s = time.monotonic() - held_at
        finally:
            for side in reversed(sides):
                side.close()  # rolls back whatever is open before the applier goes on
            release()

    def _progress(self, position: Position) -> None:
        try:
            with contextlib.closing(applier_factory(self.standby)()) as applier:
                st = applier.load_state(self.cfg.group, self.standby.name)
            where = f"at {st.position} (offset {st.next_offset})" if st else "not synced"
        except ArkError as exc:
            where = f"unreachable ({exc.message})"
        _note(f"waiting for {self.standby.name} to reach {position.text}: it is {where}")


# -- compare and repair ------------------------------------------------------------------------------
def compare_table(primary: SourceSide, standby: StandbySide, spec: TableSpec, opts: Options) -> TableResult:
    """Chunked compare of one table, with the exact keys of every differing small range."""
    res = TableResult(spec.table, spec=spec)
    problem = standby.shape_problem(spec)
    if problem:
        res.error, res.fix = problem, f"resync the table (ark resync --table {spec.table})"
        return res
    if spec.multiset:
        # No unique key: compare multisets of rows, in hash buckets of about --leaf-rows rows each.
        total = primary.bucket_digests(spec, 1).get(0, Digest(0, "")).rows
        res.chunks = bucket_count(total, opts.leaf_rows)
        res.primary_rows, res.standby_rows, res.buckets = differing_buckets(primary, standby, spec, res.chunks)
        return res
    ranges = chunk_ranges(primary.boundaries(spec, opts.chunk_rows))
    res.chunks = len(ranges)
    with ThreadPoolExecutor(1, thread_name_prefix="verify-primary") as pool:

        def both(rng: KeyRange) -> tuple[Digest, Digest]:
            on_primary = pool.submit(primary.digest, spec, rng)  # both servers work at once
            on_standby = standby.digest(spec, rng)
            return on_primary.result(), on_standby

        def split(rng: KeyRange, on_primary: bool, rows: int) -> tuple[str, ...]:
            return (primary if on_primary else standby).middle_key(spec, rng, rows)

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
        for bucket in res.buckets:
            rows = point.primary.bucket_values(spec, bucket.bucket, bucket.buckets)
            point.standby.rewrite_bucket(spec, bucket.bucket, bucket.buckets, rows)
            _p, _s, still = differing_buckets(point.primary, point.standby, spec, bucket.buckets)
            if any(b.bucket == bucket.bucket for b in still):
                raise ArkError(f"{spec.table} {bucket.describe()} still differs after the repair; nothing was changed",
                               fix="report this as a bug; 'ark resync --table' is the way out")
            done.append({"table": spec.table, "range": f"hash bucket {bucket.bucket}/{bucket.buckets}",
                         "deleted": bucket.standby_rows, "inserted": len(rows), "rewritten": 0, "keys": []})
        for found in res.ranges:
            diff = repair_range(point.primary, point.standby, spec, found.range)
            after_p, after_s = point.primary.digest(spec, found.range), point.standby.digest(spec, found.range)
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
    """The applier's newest heartbeat, once it says the applier runs. An applier started a moment ago, or a
    heartbeat topic read slowly on a busy broker, gets a few heartbeats' time before verify gives up."""
    deadline = time.monotonic() + STALE_AFTER_S
    while True:
        beat = latest_beats(cfg, window_s=STALE_AFTER_S).get(("apply", standby.name))
        running = (beat is not None and beat["state"] not in ("stopped", "error")
                   and time.time() - beat["sent_at_us"] / 1e6 <= STALE_AFTER_S)
        if running:
            assert beat is not None
            return beat
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    raise ArkError(f"the applier of {standby.name} is not running: verify compares while replication runs, "
                   "with the applier's help to stop at one position for a moment",
                   fix=f"start 'ark apply {standby.name}' and run verify again")


def _specs(cfg: ArkConfig, metas_found: list[TableMeta], wanted: tuple[str, ...]
           ) -> tuple[list[TableSpec], list[TableResult]]:
    metas = {m.table: m for m in metas_found}
    names = [t if "." in t else f"public.{t}" for t in wanted] or sorted(metas)
    specs, errors = [], []
    for name in names:
        meta = metas.get(name)
        if meta is None:
            raise ArkError(f"table {name} is not replicated (primary.tables: {', '.join(cfg.primary.tables)})",
                           fix="give schema.table of a replicated table; 'ark verify STANDBY' checks them all")
        if meta.identity == "none":
            # primary.keyless: insert-only: its updates and deletes never reach the standby, by the operator's choice
            errors.append(TableResult(name, skipped="only its INSERTs and TRUNCATEs are replicated (no usable key, "
                                                    "primary.keyless: insert-only): not compared"))
            continue
        try:
            specs.append(TableSpec.of(meta))
        except ValueError as exc:
            errors.append(TableResult(name, error=str(exc), fix=f"ALTER TABLE {name} ADD PRIMARY KEY (...)"))
    return specs, errors


def run_verify(cfg: ArkConfig, standby_name: str, opts: Options) -> int:
    """Compare (and with ``opts.repair`` repair) one standby; prints the report; returns the exit code."""
    doc, code = verify_standby(cfg, standby_name, opts)
    if opts.as_json:
        print(json.dumps(doc, indent=2))
    else:
        _print(doc)
    return code


def verify_standby(cfg: ArkConfig, standby_name: str, opts: Options, *, beat: dict[str, Any] | None = None
                   ) -> tuple[dict[str, Any], int]:
    """Compare (and with ``opts.repair`` repair) one standby: the report document and the exit code
    (``ark verify`` and the console's verify action). ``beat``: the applier's heartbeat when the caller has
    just read it (``ark cutover``: the heartbeat topic is not read again while writes are stopped)."""
    standby = cfg.standby(standby_name)
    mixed = standby.engine != cfg.primary.engine
    if mixed and opts.repair:
        raise ArkError(f"--repair rewrites rows within one engine only; {standby.name} is {standby.engine} and the "
                       f"primary {cfg.primary.engine}",
                       fix="run 'ark verify' without --repair to name the differing keys, then 'ark resync --table "
                           "SCHEMA.TABLE' for each table that differs (it copies a table across engines)")
    beat = beat if beat is not None else _applier_beat(cfg, standby)
    delay = float(beat.get("delay_seconds") or 0.0)
    timeout = opts.timeout if opts.timeout is not None else delay + 120.0
    if delay > 0:
        _note(f"{standby.name} applies with a delay of {delay:g} s: reaching the compare position "
                          f"takes about that long (waiting up to {timeout:g} s)")
    started = time.monotonic()
    client = HoldClient(cfg, standby, opts.max_hold_s)
    try:
        if mixed:
            from ops.verify_cross import compare_point, cross_verdict

            with client.point(write=False, timeout=timeout) as pt:
                tables = compare_point(cfg, standby, pt, opts.tables, opts.chunk_rows)
            doc = _document(standby.name, pt, [], time.monotonic() - started)
            doc["verdict"], doc["exit_code"] = cross_verdict(tables)
            doc["tables"], doc["engines"] = tables, f"{cfg.primary.engine} -> {standby.engine}"
            return doc, doc["exit_code"]
        with client.point(write=False, timeout=timeout) as pt:
            specs, results = _specs(cfg, pt.tables, opts.tables)
            for spec in specs:
                _note(f"verify {spec.table} ...")
                results.append(compare_table(pt.primary, pt.standby, spec, opts))
        results.sort(key=lambda r: r.table)
        doc = _document(standby.name, pt, results, time.monotonic() - started)
        verdict, code = verdict_of(results)
        if opts.repair and verdict == "different":
            with contextlib.closing(applier_factory(standby)()) as applier:
                refuse_if_harmful(cfg, standby, applier, "repair")  # the repair writes: never to the wrong database
            with client.point(write=True, timeout=timeout) as pt2:
                repaired = repair(pt2, results, pt2.held_at + opts.max_hold_s - REPAIR_MARGIN_S)
                pt2.standby.commit()
            doc["repair"] = {"position": pt2.position.text, "held_s": round(pt2.held_s, 3), "ranges": repaired}
            code = EXIT_INCOMPLETE if any(r.verdict == "error" for r in results) else EXIT_EQUAL
    finally:
        client.close()
    return doc, code


def _document(standby: str, pt: Point, results: list[TableResult], seconds: float) -> dict[str, Any]:
    verdict, code = verdict_of(results)
    return {
        "standby": standby, "position": pt.position.text, "standby_position": pt.standby_position,
        "standby_next_offset": pt.next_offset,
        "applier_stopped_s": round(pt.stopped_s, 3), "applier_held_s": round(pt.held_s, 3),
        "seconds": round(seconds, 3), "verdict": verdict, "exit_code": code,
        "tables": [{"table": r.table, "verdict": r.verdict, "primary_rows": r.primary_rows,
                    "standby_rows": r.standby_rows, "chunks": r.chunks, "error": r.error, "fix": r.fix,
                    "skipped": r.skipped,
                    "buckets": [{"bucket": b.bucket, "buckets": b.buckets, "primary_rows": b.primary_rows,
                                 "standby_rows": b.standby_rows, "missing_on_standby": b.missing,
                                 "extra_on_standby": b.extra} for b in r.buckets],
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
        if t["verdict"] == "skipped":
            _out(f"  {escape(t['table'])}: [yellow]not compared[/]: {escape(t['skipped'])}")
            continue
        if t["buckets"]:
            _out(head + f"[bold red]different[/] in {len(t['buckets'])} hash buckets (a table without a unique key, "
                 "compared as a multiset of rows)")
            for b in t["buckets"]:
                _out(f"    bucket {b['bucket']}/{b['buckets']}: {b['primary_rows']} rows on the primary, "
                     f"{b['standby_rows']} on the standby; {b['missing_on_standby']} missing, "
                     f"{b['extra_on_standby']} extra on the standby")
            continue
        _out(head + f"[bold red]different[/] in {len(t['ranges'])} key ranges")
        for r in t["ranges"]:
            parts = [p for p in (_keys("missing on standby:", r["missing_on_standby"]),
                                 _keys("extra on standby:", r["extra_on_standby"]),
                                 _keys("different:", r["different"])) if p]
            _out(f"    keys {escape(r['range'])}: {r['primary_rows']} rows on the primary, {r['standby_rows']} on "
                 "the standby; " + "; ".join(parts))
        if t.get("partitions_not_itemized"):
            _out(f"    and {t['partitions_not_itemized']} more differing hash partitions, not itemized")
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
