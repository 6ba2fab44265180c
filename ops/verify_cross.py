"""``ark verify STANDBY`` when the standby is of another engine than the primary.

The position is found exactly as for one engine (ops/verify.py: the applier holds at the position P of a
primary snapshot, the standby's snapshot is taken there and the applier goes on). The compare differs:
the engines print values differently, so rows are read on both sides, brought to canonical text per
neutral type and compared in hash partitions of their keys (common/verify_cross.py). Progress goes to
stderr; the report has the same shape as one engine's (a differing partition is listed as a "range"
named ``hash partition p/N`` with its exact keys). ``--repair`` is refused for a mixed pair:
``ark resync --table`` rewrites a table across engines.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.config import ArkConfig, StandbySettings
from common.engines.cross_rows import count_rows, prepare, read_rows, shape_problem
from common.errors import ArkError
from common.exit_codes import ExitCode
from common.verify_cross import (
    MAX_ITEMIZED,
    NotComparable,
    TablePlan,
    collect,
    diff_partition,
    differing,
    format_canon_key,
    partition_count,
    summarize,
)
from ops.context import err_console
from schemas.entries import TableMeta

_note = functools.partial(err_console.print, soft_wrap=True)


def _conn(side: Any) -> Any:
    """The connection of an engine verifier's side (inside its snapshot)."""
    conn = getattr(side, "conn", None)
    if conn is None:
        raise ArkError(f"the verify side {type(side).__name__} has no connection to read rows across engines",
                       fix="report this as a bug")
    return conn


def _skip_or_error(meta: TableMeta) -> dict[str, Any] | None:
    if meta.identity == "none":
        return _table(meta.table, skipped="only its INSERTs and TRUNCATEs are replicated (no usable key, "
                                          "primary.keyless: insert-only): not compared")
    return None


def _table(name: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"table": name, "verdict": "equal", "primary_rows": 0, "standby_rows": 0, "chunks": 0,
                           "error": "", "fix": "", "skipped": "", "buckets": [], "ranges": []}
    doc.update(fields)
    if doc["skipped"]:
        doc["verdict"] = "skipped"
    elif doc["error"]:
        doc["verdict"] = "error"
    return doc


class CrossCompare:
    """Both sides of a mixed pair, each inside its snapshot at one position."""

    def __init__(self, primary_engine: str, primary: Any, standby_engine: str, standby: Any,
                 chunk_rows: int) -> None:
        self.pe, self.pconn, self.se, self.sconn = primary_engine, _conn(primary), standby_engine, _conn(standby)
        self.chunk_rows = chunk_rows
        prepare(self.pe, self.pconn)
        prepare(self.se, self.sconn)

    def table(self, meta: TableMeta) -> dict[str, Any]:
        """Compare one table: its report entry (a read that fails makes it ``error``, naming the table)."""
        try:
            return self._table(meta)
        except ArkError:
            raise
        except Exception as exc:  # noqa: BLE001 - one table's failed read (a driver error) is that table's verdict
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return _table(meta.table, error=f"reading {meta.table} failed: {type(exc).__name__}: {first}",
                          fix="check both databases ('ark check') and run verify again")

    def _table(self, meta: TableMeta) -> dict[str, Any]:
        skipped = _skip_or_error(meta)
        if skipped is not None:
            return skipped
        try:
            plan = TablePlan.of(meta)
        except NotComparable as exc:
            return _table(meta.table, error=str(exc), fix=f"leave the table out (ark verify --table ...) and compare "
                                                         f"{meta.table} with your own queries")
        except ValueError as exc:
            return _table(meta.table, error=str(exc), fix=f"give {meta.table} a primary key")
        problem = shape_problem(self.se, self.sconn, meta)
        if problem:
            return _table(meta.table, error=problem, fix=f"resync the table (ark resync --table {meta.table})")
        total = count_rows(self.pe, self.pconn, meta)
        parts = partition_count(total, self.chunk_rows)
        shown = [time.monotonic()]

        def progress(rows: int) -> None:
            if time.monotonic() - shown[0] >= 1.0:
                _note(f"  {meta.table}: {rows}/{total} rows read on the primary")
                shown[0] = time.monotonic()

        with ThreadPoolExecutor(1, thread_name_prefix="verify-primary") as pool:  # both servers read at once
            on_primary = pool.submit(summarize, plan, read_rows(self.pe, self.pconn, meta), parts, progress)
            s_sum = summarize(plan, read_rows(self.se, self.sconn, meta), parts)
            p_sum = on_primary.result()
            found = differing(p_sum, s_sum)
            itemized = set(found[:MAX_ITEMIZED])
            p_rows = s_rows = None
            if itemized:
                got_p = pool.submit(collect, plan, read_rows(self.pe, self.pconn, meta), parts, itemized)
                s_rows = collect(plan, read_rows(self.se, self.sconn, meta), parts, itemized)
                p_rows = got_p.result()
        doc = _table(meta.table, primary_rows=p_sum.rows, standby_rows=s_sum.rows, chunks=parts)
        for part in sorted(itemized):
            assert p_rows is not None and s_rows is not None
            d = diff_partition(plan, part, parts, p_rows[part], s_rows[part])
            if plan.multiset:
                doc["buckets"].append({"bucket": part, "buckets": parts, "primary_rows": d.primary_rows,
                                       "standby_rows": d.standby_rows, "missing_on_standby": d.missing_rows,
                                       "extra_on_standby": d.extra_rows})
            else:
                doc["ranges"].append({"range": f"hash partition {part}/{parts}", "primary_rows": d.primary_rows,
                                      "standby_rows": d.standby_rows,
                                      "missing_on_standby": [format_canon_key(k) for k in d.missing],
                                      "extra_on_standby": [format_canon_key(k) for k in d.extra],
                                      "different": [format_canon_key(k) for k in d.different]})
        if found:
            doc["verdict"] = "different"
            doc["partitions_not_itemized"] = len(found) - len(itemized)
        return doc


def cross_verdict(tables: list[dict[str, Any]]) -> tuple[str, int]:
    """As ops.verify.verdict_of, on report entries."""
    if any(t["verdict"] == "different" for t in tables):
        return "different", int(ExitCode.VERIFY_DIFFERENT)
    if any(t["verdict"] == "error" for t in tables):
        return "incomplete", int(ExitCode.VERIFY_INCOMPLETE)
    return "equal", int(ExitCode.OK)


def compare_point(cfg: ArkConfig, standby: StandbySettings, point: Any, wanted: tuple[str, ...],
                  chunk_rows: int) -> list[dict[str, Any]]:
    """Every wanted table of ``point`` (an ops.verify.Point of a mixed pair), compared."""
    metas = {m.table: m for m in point.tables}
    names = [t if "." in t else f"public.{t}" for t in wanted] or sorted(metas)
    for name in names:
        if name not in metas:
            raise ArkError(f"table {name} is not replicated (primary.tables: {', '.join(cfg.primary.tables)})",
                           fix="give schema.table of a replicated table; 'ark verify STANDBY' checks them all")
    cross = CrossCompare(cfg.primary.engine, point.primary, standby.engine, point.standby, chunk_rows)
    out = []
    for name in names:
        _note(f"verify {name} ({cfg.primary.engine} → {standby.engine}: values compared in canonical form) ...")
        out.append(cross.table(metas[name]))
    return sorted(out, key=lambda t: t["table"])
