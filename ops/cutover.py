"""``ark cutover TARGET``: move the service for good to a standby, of another engine or the same one.

``ark switchover`` hands the service over and keeps the old primary as the new one's standby (the way back);
it needs both nodes of one engine. A migration (MariaDB → PostgreSQL) has no way back through the stream, so
the cutover ends replication instead:

1. **Checks** (refused, exit 41, nothing changed): TARGET's applier runs and is current (lag within
   ``--max-lag``), the capture runs, both nodes answer, the source is writable.
2. **Fence** the source (its engine's :meth:`~common.node_ops.NodeOps.fence`: read-only, transactions in flight
   get ``--grace``, then their sessions end). The write downtime starts here.
3. **Drain and verify** in one step: ``ark verify TARGET``'s hold protocol takes a source snapshot at P, after
   the fence, so every write the source accepted is before P; the applier applies everything below P, stops
   there, and the compare runs at P (across engines: common/verify_cross.py).
4. **Stop the applier** (a ``pause`` intent, waited for in its heartbeat): nothing writes to TARGET any more.
5. **Sequences**: each sequence and AUTO_INCREMENT / identity column of the source is set on TARGET past its
   highest value (an AUTO_INCREMENT column lands on PostgreSQL as an identity column).
6. **TARGET writable** (its read-only guard removed). The write downtime ends here and is printed.

Anything that fails before step 6 is undone: the source is unfenced (writable again), the applier resumed,
and the command exits 41 saying so; sequences set forward on TARGET stay (a standby's sequences ahead of its
primary harm nothing). Step 6 failing leaves the source fenced and exits 42 with the way to finish.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.config import ArkConfig
from common.control import ControlChannel
from common.errors import ArkError, HandoverFailed, HandoverRefused
from common.node_ops import NodeOps, Sequence, SequenceReport, node_ops
from ops import intents
from ops.context import console, err_console
from ops.engines import snapshot_source
from ops.handover import current_roles
from ops.status import STALE_AFTER_S, latest_beats
from ops.verify import Options, verify_standby
from schemas.control import NodeFenced
from schemas.entries import TableMeta

log = logging.getLogger(__name__)
_out = functools.partial(console.print, soft_wrap=True)
_note = functools.partial(err_console.print, soft_wrap=True)


@dataclass
class CutoverReport:
    """What the cutover did, with the times of its steps (seconds since the fence)."""

    source: str
    target: str
    fenced_position: str = ""
    sessions_ended: int = 0
    steps: list[tuple[str, float]] = field(default_factory=list)
    verify: dict[str, Any] = field(default_factory=dict)
    sequences: SequenceReport | None = None
    downtime_s: float = 0.0


def _beat(cfg: ArkConfig, kind: str, name: str) -> dict[str, Any] | None:
    beat = latest_beats(cfg, window_s=STALE_AFTER_S).get((kind, name))
    if beat is None or time.time() - beat["sent_at_us"] / 1e6 > STALE_AFTER_S:
        return None
    return beat


def check_ready(cfg: ArkConfig, target: str, max_lag_s: float) -> dict[str, Any]:
    """HandoverRefused unless TARGET's applier runs and is current, and the capture runs; the applier's beat."""
    apply = _beat(cfg, "apply", target)
    if apply is None or apply["state"] in ("stopped", "error"):
        state = "not running" if apply is None else f"{apply['state']} ({apply.get('message', '')})"
        raise HandoverRefused(f"the applier of {target} is {state}: the cutover drains the stream into it; nothing "
                              "was changed", fix=f"start 'ark apply {target}', wait until 'ark status' shows it "
                                                 "current, then run the cutover again")
    if apply["state"] == "paused":
        raise HandoverRefused(f"{target} is paused: nothing was changed", fix=f"'ark resume {target}', wait until "
                              "'ark status' shows it current, then run the cutover again")
    lag = float(apply.get("lag_seconds") or 0.0)
    if lag > max_lag_s or float(apply.get("delay_seconds") or 0.0) > 0:
        raise HandoverRefused(f"{target} is {lag:.1f} s behind the source (--max-lag {max_lag_s:g} s; delay "
                              f"{float(apply.get('delay_seconds') or 0):g} s): writes would stop until it caught up; "
                              "nothing was changed",
                              fix=f"wait until 'ark status' shows {target} current (set its delay to 0 first), or "
                                  "raise --max-lag")
    capture = _beat(cfg, "capture", cfg.primary.name) or _any_capture(cfg)
    if capture is None or capture["state"] in ("stopped", "error"):
        raise HandoverRefused("the capture is not running: the writes made before the fence would not reach "
                              f"{target}; nothing was changed", fix="start 'ark capture' and run the cutover again")
    return apply


def _any_capture(cfg: ArkConfig) -> dict[str, Any] | None:
    beats = [b for (kind, _), b in latest_beats(cfg, window_s=STALE_AFTER_S).items() if kind == "capture"]
    return max(beats, key=lambda b: b["sent_at_us"]) if beats else None


def column_sequences(source: dict[str, Sequence], metas: list[TableMeta]) -> dict[str, Sequence]:
    """The source's sequences, plus a column counter for every key column fed by one (a PostgreSQL serial or
    identity column: ``nextval('s')``), so that the target gives that column its own counter (MariaDB:
    AUTO_INCREMENT). MariaDB's AUTO_INCREMENT columns already come as column counters."""
    out = dict(source)
    for meta in metas:
        if meta.table in out:
            continue
        for col in meta.key_columns:
            default = col.default_expr or ""
            if col.type not in ("int16", "int32", "int64") or "nextval('" not in default.lower():
                continue
            start = default.lower().index("nextval('") + len("nextval('")
            seq_name = default[start:].split("'", 1)[0].replace('"', "")
            if "." not in seq_name:
                seq_name = f"{meta.table.split('.', 1)[0]}.{seq_name}"
            last = source.get(seq_name)
            out[meta.table] = Sequence(last_value=last.last_value if last else None, column=col.name)
            break
    return out


class Cutover:
    """One cutover (see the module docstring)."""

    def __init__(self, cfg: ArkConfig, target: str, *, grace_s: float, timeout_s: float, chunk_rows: int,
                 max_lag_s: float, say: Callable[[str], None] = _note) -> None:
        self.cfg, self.target, self.say, self.max_lag_s = cfg, target, say, max_lag_s
        self.grace_s, self.timeout_s, self.chunk_rows = grace_s, timeout_s, chunk_rows
        self.report = CutoverReport(cfg.primary.name, target)
        self._fenced_at = 0.0

    def _step(self, what: str) -> None:
        at = time.monotonic() - self._fenced_at if self._fenced_at else 0.0
        self.report.steps.append((what, at))
        self.say(f"[{at:7.3f} s] {what}")

    def run(self) -> CutoverReport:
        """Do it; HandoverRefused (undone) or HandoverFailed (part-way) when it cannot."""
        cfg, target = self.cfg, self.target
        standby = cfg.standby(target)
        beat = check_ready(cfg, target, max_lag_s=self.max_lag_s)
        with contextlib.ExitStack() as stack:
            source_ops = _ops(cfg, cfg.primary.name, stack)
            target_ops = _ops(cfg, target, stack)
            if not source_ops.writable():
                raise HandoverRefused(f"the source {cfg.primary.name} is not writable (fenced or read-only already): "
                                      "nothing was changed", fix="make it writable, or finish the cutover that "
                                                                  "fenced it by hand")
            epoch = current_roles(cfg).epoch
            self._fenced_at = time.monotonic()
            fence = source_ops.fence(self.grace_s)
            self.report.fenced_position, self.report.sessions_ended = fence.position, fence.sessions_ended
            self._step(f"{cfg.primary.name} fenced (read-only; {fence.sessions_ended} sessions ended after "
                       f"{self.grace_s:g} s grace); its log at {fence.position}")
            channel = ControlChannel.for_config(cfg, start=None)
            stack.callback(channel.close)
            paused = False
            try:
                doc, code = verify_standby(cfg, target, Options(chunk_rows=self.chunk_rows, timeout=self.timeout_s),
                                           beat=beat)
                self.report.verify = doc
                if code != 0:
                    raise HandoverRefused(_verify_failure(doc), fix=f"run 'ark verify {target}' to see the keys; "
                                          f"'ark resync {target} --table T' the tables that differ, then cut over "
                                          "again")
                self._step(f"{target} applied everything {cfg.primary.name} committed and equals it "
                           f"({len(doc['tables'])} tables compared at {doc['position']}; the applier stopped "
                           f"{doc['applier_stopped_s']:.3f} s after the request, verify took {doc['seconds']:.3f} s)")
                intents.pause(channel, cfg, target)
                paused = True
                self._await_paused(target)
                self._step(f"the applier of {target} stopped (paused)")
                self.report.sequences = target_ops.set_sequences(column_sequences(source_ops.sequences(),
                                                                                  _metas(cfg)))
                seq = self.report.sequences
                self._step(f"sequences on {target}: {seq.moved} moved past the source's values, {seq.unchanged} "
                           "already past" + (f", created: {', '.join(seq.created)}" if seq.created else ""))
            except BaseException as exc:  # noqa: BLE001 - after the fence, whatever stops the cutover (Ctrl-C too) undoes it
                self._undo(source_ops, channel if paused else None, standby.name)
                if not isinstance(exc, Exception):
                    raise
                # Not an ArkError: a driver's message may quote a value, so only its kind is shown.
                message = exc.message if isinstance(exc, ArkError) else f"unexpected {type(exc).__name__} (see the log)"
                if not isinstance(exc, ArkError):
                    log.error("cutover to %s stopped by %s", target, type(exc).__name__)
                fix = exc.fix if isinstance(exc, ArkError) and exc.fix else "fix the cause and run the cutover again"
                raise HandoverRefused(f"cutover to {target} refused: {message}; undone: {cfg.primary.name} is writable "
                                      "again" + (f" and {target}'s applier resumed" if paused else ""),
                                      fix=fix) from None
            try:
                target_ops.unfence()
            except ArkError as exc:
                raise HandoverFailed(f"{target} could not be made writable: {exc.message}; {cfg.primary.name} stays "
                                     f"read-only and {target} holds every row", fix=f"make {target} writable by hand "
                                     "(PostgreSQL: ALTER DATABASE ... RESET default_transaction_read_only; MariaDB: "
                                     "SET GLOBAL read_only = OFF), then point the application at it") from None
            self.report.downtime_s = time.monotonic() - self._fenced_at
            self._step(f"{target} is writable")
            # Recorded once the source stays fenced for good (an undone cutover leaves no record: it is writable).
            channel.publish(NodeFenced(epoch, f"read-only (cutover to {target})", fence.sessions_ended),
                            cfg.primary.name)
        return self.report

    def _await_paused(self, target: str) -> None:
        deadline = time.monotonic() + max(30.0, STALE_AFTER_S)
        while time.monotonic() < deadline:
            beat = _beat(self.cfg, "apply", target)
            if beat is not None and beat["state"] == "paused":
                return
            time.sleep(0.2)
        raise ArkError(f"the applier of {target} did not stop within {max(30.0, STALE_AFTER_S):g} s",
                       fix=f"check 'ark status' and the applier's log; stop 'ark apply {target}' by hand")

    def _undo(self, source_ops: NodeOps, channel: ControlChannel | None, target: str) -> None:
        try:
            source_ops.unfence()
        except ArkError as exc:
            self.say(f"[bold red]could not make {self.cfg.primary.name} writable again: {exc.message}[/]; do it by "
                     "hand (MariaDB: SET GLOBAL read_only = OFF; PostgreSQL: ALTER DATABASE ... RESET "
                     "default_transaction_read_only)")
        else:
            self.say(f"{self.cfg.primary.name} is writable again")
        if channel is not None:
            intents.resume(channel, self.cfg, target)


def _ops(cfg: ArkConfig, name: str, stack: contextlib.ExitStack) -> NodeOps:
    try:
        ops = node_ops(cfg, name)
    except ArkError as exc:
        raise HandoverRefused(f"{exc.message}; nothing was changed", fix=exc.fix) from None
    stack.callback(ops.close)
    return ops


def _metas(cfg: ArkConfig) -> list[TableMeta]:
    """The replicated tables as the (fenced) source describes them: their key columns' defaults."""
    with snapshot_source(cfg.primary).open() as snap:
        return snap.tables(cfg.primary.tables)


def _verify_failure(doc: dict[str, Any]) -> str:
    bad = [t for t in doc["tables"] if t["verdict"] in ("different", "error")]
    named = ", ".join(f"{t['table']} ({t['verdict']}{': ' + t['error'] if t['error'] else ''})" for t in bad[:5])
    return f"verify found {doc['verdict']} tables at {doc['position']}: {named}"


def print_report(cfg: ArkConfig, report: CutoverReport) -> None:
    """The operator's summary: the write downtime and what to do next."""
    target = cfg.standby(report.target)
    source_engine = cfg.primary.engine
    _out(f"[green]cutover done[/]: {report.target} ({target.engine}) holds every row {report.source} "
         f"({source_engine}) committed and is writable")
    _out(f"write downtime: {report.downtime_s:.3f} s (from the fence of {report.source} to {report.target} "
         f"writable); steps: " + ", ".join(f"{what.split(' (')[0]} at {at:.3f} s" for what, at in report.steps))
    _out(f"next: point the application at {report.target} ({target.describe()}); {report.source} stays read-only "
         "(fenced), so a client left on it gets errors, not lost writes")
    _out(f"then stop 'ark capture' and 'ark apply {report.target}' (paused now; do not restart it: it would make "
         f"{report.target} read-only again) and take the group out of service")
    _out(f"undo (before the application writes to {report.target}): make {report.target} read-only again, make "
         f"{report.source} writable (MariaDB: SET GLOBAL read_only = OFF; PostgreSQL: ALTER DATABASE ... RESET "
         f"default_transaction_read_only), then 'ark resume {report.target}'")
