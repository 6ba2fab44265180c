"""The divergence ledger: what a failed-over primary committed that never reached Kafka (``ark reinstate``).

When the old primary returns, its own log still holds everything it committed: its replication slot was
confirmed only up to what Kafka held (guarantee 3). Decoding the slot from the last position its epoch
published in Kafka to the end of its log yields exactly the transactions the group never saw. Each one is
recorded before anything is thrown away:

* on the topic ``ark.<group>.divergence`` (one record per transaction: its position, commit time, and per row
  the table, the operation, the key, the row as the old primary wrote it and the row as the group holds it
  now), and
* in a readable report file (mode 0600: it holds row values, which Ark never logs).

Then the tables those transactions touched are resynced from the new primary when the old one rejoins as a
standby (``standby-from`` with ``resync``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.config import ArkConfig
from common.engines import engine, load
from common.kafka import ensure_topic, make_producer, unavailable
from common.node_ops import NodeOps
from common.roles import config_under
from schemas import envelope
from schemas.entries import Op, Position, RowChange, TableMeta
from schemas.topics import divergence_topic

log = logging.getLogger(__name__)

DIVERGENCE_SCHEMA = "divergence"
#: The ledger is evidence: keep it as long as the control topic (for ever, unless the operator says otherwise).
RETENTION_MS = -1
#: Longest wait for the old primary's log to be decoded to its end.
DECODE_TIMEOUT_S = 120.0


@dataclass
class DivergedRow:
    """One row change the group never saw."""

    table: str
    op: str
    key: dict[str, Any]
    #: The row as the old primary wrote it (None for a delete).
    written: dict[str, Any] | None
    #: The row as the group holds it now, on the new primary (None: no row with that key).
    group_now: dict[str, Any] | None = None


@dataclass
class DivergedTxn:
    """One transaction of the old primary that never reached Kafka."""

    txn_id: str
    position: str
    commit_time_us: int
    rows: list[DivergedRow] = field(default_factory=list)

    @property
    def tables(self) -> list[str]:
        """The tables it touched, in first-touch order."""
        return list(dict.fromkeys(r.table for r in self.rows))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _row(meta: TableMeta | None, change: RowChange) -> DivergedRow:
    names = [c.name for c in meta.columns] if meta is not None else [f"column{i}" for i in range(len(change.values))]
    written = {n: _plain(v) for n, v in zip(names, change.values, strict=False)} if change.op != Op.DELETE else None
    key_names = [c.name for c in meta.key_columns] if meta is not None else []
    if change.old_key is not None:
        key = {n: _plain(v) for n, v in zip(key_names, change.old_key, strict=False)}
    else:
        key = {n: written.get(n) for n in key_names} if written else {}
    if change.op == Op.DELETE and not key and change.values:
        key = {n: _plain(v) for n, v in zip(key_names or names, change.values, strict=False)}
    return DivergedRow(change.table, str(change.op), key, written)


def read_divergence(cfg: ArkConfig, old: str, after: Position | None, end: str) -> list[DivergedTxn]:
    """The transactions ``old`` committed after ``after`` (its last one in Kafka), up to its log ``end``."""
    cfg_old = config_under(cfg, old)
    capture = load(engine(cfg_old.primary.engine).capture)(cfg_old)
    try:
        return list(_decode(capture, after, capture.parse_position(end)))
    finally:
        capture.close()


def _decode(capture: Any, after: Position | None, end: Position) -> Iterator[DivergedTxn]:
    """Walk the capture's events (TxnBegin, RowChange, TxnEnd, Idle: producers/base.py, named here by type name,
    as failover/ does not import the capture's package) until the log is drained past ``end``."""
    metas: dict[str, TableMeta] = {}
    current: DivergedTxn | None = None
    deadline = time.monotonic() + DECODE_TIMEOUT_S
    for event in capture.stream(after):
        if time.monotonic() >= deadline:  # on every event: a log decoded from an old checkpoint may send no Idle
            raise TimeoutError(f"the old primary's log was not decoded up to {end.text} in {DECODE_TIMEOUT_S:g} s")
        kind = type(event).__name__
        if isinstance(event, TableMeta):
            metas[event.table] = event
        elif isinstance(event, RowChange):
            if current is not None:
                current.rows.append(_row(metas.get(event.table), event))
        elif kind == "TxnBegin":
            newer = after is None or event.commit.key > after.key
            current = DivergedTxn(event.txn_id, event.commit.text, event.commit_time_us) if newer else None
        elif kind == "TxnEnd":
            if current is not None:
                yield current
            current = None
        elif kind == "Idle":
            if current is None and event.drained and event.position is not None and event.position.key >= end.key:
                return
            capture.nudge()


def fill_group_rows(txns: list[DivergedTxn], primary: NodeOps) -> None:
    """The row as the group holds it now, at each key (from the new primary)."""
    for txn in txns:
        for row in txn.rows:
            if row.key:
                row.group_now = primary.row(row.table, row.key)


def publish(cfg: ArkConfig, node: str, epoch: int, txns: list[DivergedTxn]) -> str:
    """Append the transactions to ``ark.<group>.divergence``; returns the topic."""
    topic = divergence_topic(cfg.group)
    ensure_topic(cfg.kafka, topic, retention_ms=RETENTION_MS)
    extra: dict[str, Any] = {"linger.ms": 0}
    producer = make_producer(cfg.kafka, **extra)
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for txn in txns:
        doc = {"group": cfg.group, "node": node, "epoch": epoch, **asdict(txn)}
        env = envelope.encode(DIVERGENCE_SCHEMA, {"group": cfg.group, "node": node, "epoch": epoch,
                                                  "txn_id": txn.txn_id, "position": txn.position,
                                                  "commit_time_us": txn.commit_time_us,
                                                  "document": json.dumps(doc, sort_keys=True)})
        producer.produce(topic, env.value, headers=env.headers, timestamp=env.timestamp_ms, on_delivery=delivered)
        producer.poll(0)
    if producer.flush(30) or errors:
        raise unavailable(cfg.kafka, errors[0] if errors else "divergence records not delivered in 30 s")
    return topic


def write_report(path: Path, group: str, node: str, epoch: int, txns: list[DivergedTxn]) -> None:
    """The readable report (mode 0600: it holds row values)."""
    lines = [f"Ark divergence ledger: group {group}, node {node}, primary until epoch {epoch}",
             f"{len(txns)} transactions committed on {node} never reached Kafka; the group does not have them.",
             "Each row: the operation, the key, the row as the old primary wrote it, and the row as the group holds "
             "it now (on the new primary).", ""]
    for txn in txns:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(txn.commit_time_us / 1e6))
        lines.append(f"transaction {txn.txn_id} committed {when}.{txn.commit_time_us % 1_000_000:06d} UTC at "
                     f"{txn.position}: {', '.join(txn.tables)}")
        for row in txn.rows:
            lines.append(f"  {row.op} {row.table} key {json.dumps(row.key, sort_keys=True)}")
            lines.append(f"    written by {node}: {json.dumps(row.written, sort_keys=True)}")
            lines.append(f"    group now:        {json.dumps(row.group_now, sort_keys=True)}")
        lines.append("")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
