"""``ark skip`` and ``ark failover --until``: a delayed standby as a recovery point (consumers/recovery.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click

from common.config import ArkConfig
from common.control import ControlChannel
from common.errors import ArkError, ConfigError
from common.redo_kafka import KafkaRedoLog
from common.roles import node
from failover.view import HeartbeatView
from ops.context import console
from schemas import envelope
from schemas.control import SkipTransaction
from schemas.entries import REDO_SCHEMA, TableMeta, TxnChunk, from_record

#: A transaction's chunks are consecutive in the redo topic; look this far for its last one.
MAX_SCAN = 100_000


def parse_time(text: str) -> int:
    """``--until``: ISO-8601 (``2026-11-30T14:03:00Z``, a naive time is UTC) or ``@<unix seconds>``; microseconds."""
    try:
        if text.startswith("@"):
            return int(float(text[1:]) * 1_000_000)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--until {text!r} is not a time",
                          fix="give 2026-11-30T14:03:00Z (UTC) or @1796050000.5") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


@dataclass
class TxnSummary:
    """What one redo transaction would change, by table: operations and keys (never other values)."""

    offset: int
    txn_id: str
    position: str
    commit_time_us: int
    tables: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def read_transaction(cfg: ArkConfig, offset: int) -> TxnSummary:
    """The transaction that starts at redo ``offset`` (ArkError when none starts there)."""
    redo = KafkaRedoLog(cfg.kafka, cfg.group)
    metas: dict[str, TableMeta] = {}
    summary: TxnSummary | None = None
    summary_key = b""
    _low, high = redo.watermarks()
    for rec in redo.read_range(offset, min(high, offset + MAX_SCAN)):
        body = from_record(envelope.decode(rec.value, rec.headers, expect=REDO_SCHEMA).record).body
        if isinstance(body, TableMeta):
            metas[body.table] = body
            continue
        if not isinstance(body, TxnChunk):
            if summary is None:
                raise ArkError(f"redo offset {offset} holds no transaction (an epoch marker)",
                               fix="give the offset of the transaction's first entry ('ark status' shows offsets)")
            continue
        if summary is None:
            if rec.offset != offset or body.chunk_index != 0 or not body.txn_id:
                raise ArkError(f"no transaction starts at redo offset {offset}",
                               fix="give the offset of the transaction's first entry")
            summary = TxnSummary(offset, body.txn_id, body.commit.text, body.commit_time_us)
        elif body.commit.key != summary_key:
            break
        summary_key = body.commit.key
        for change in body.changes:
            meta = metas.get(change.table)
            keys = summary.tables.setdefault(change.table, {})
            names = [c.name for c in meta.key_columns] if meta else []
            values = change.old_key if change.old_key is not None else (
                [change.values[i] for i in meta.key_indexes] if meta and change.values else [])
            key = ", ".join(f"{n}={v!s}" for n, v in zip(names, values, strict=False)) or "(no key)"
            keys.setdefault(str(change.op), []).append(key)
        if body.last:
            break
    if summary is None:
        raise ArkError(f"redo offset {offset} is not in the redo topic (it ends at {high})",
                       fix="give an offset the topic still holds")
    return summary


def run_skip(cfg: ArkConfig, standby: str, offset: int, *, yes: bool) -> None:
    """Show what the transaction at ``offset`` changes, then record that ``standby`` must not apply it."""
    node(cfg, standby)
    txn = read_transaction(cfg, offset)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(txn.commit_time_us / 1e6))
    console.print(f"transaction {txn.txn_id} at redo offset {offset}, committed {when} UTC at {txn.position}:")
    for table, ops in txn.tables.items():
        for op, keys in ops.items():
            shown = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
            console.print(f"  {op} {len(keys)} rows of {table}: {shown}")
    view = HeartbeatView(cfg)
    try:
        view.catch_up()
        beat = view.applier(standby)
    finally:
        view.close()
    if beat is not None and beat.applied_offset >= offset:
        raise ArkError(f"{standby} already applied redo offset {offset} (it is at {beat.applied_offset})",
                       fix="too late to skip it there; 'ark failover STANDBY --until TIME' on a more delayed standby "
                           "brings back the state before it")
    if not yes and not click.confirm(f"{standby} will never apply this transaction; go on?", default=False):
        raise ArkError("nothing recorded", fix="run again and answer yes, or pass --yes")
    channel = ControlChannel.for_config(cfg, start=None)
    try:
        channel.publish(SkipTransaction(offset, txn.txn_id, "ark skip"), standby)
    finally:
        channel.close()
    console.print(f"recorded on the control topic: {standby} leaves transaction {txn.txn_id} out when it reaches "
                  f"redo offset {offset}" + ("" if beat is not None else " (its applier is not running now)"))
