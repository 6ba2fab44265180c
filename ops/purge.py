"""``ark purge``: free redo-topic space without removing anything a standby or the capture still needs.

The redo topic is the archive (ARCHITECTURE.md); purging moves its start forward with Kafka's
DeleteRecords. The new start is the lowest of:

* every standby's state-row ``next_offset`` (read from the standby itself: the exactly-once truth);
* the capture's resume tail: the last complete transaction, which a restarted capture reads back
  to learn what is already published (producers/resume.py);
* the first entry newer than ``--keep-hours`` (default: the longest delay in force + the margin),
  so a delay can still be raised, or turned back, within that window.

A standby whose state cannot be read blocks the purge unless the operator names it with ``--ignore``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Message

from common.config import ArkConfig
from common.errors import ArkError
from common.kafka import (
    delete_records_below,
    last_messages,
    make_consumer,
    offset_for_time,
    read_range,
    topic_exists,
    watermarks,
)
from ops.context import console, report_error
from ops.errors import OpsError
from ops.retention import delays_in_force, read_next_offsets
from schemas import envelope
from schemas.entries import REDO_SCHEMA, TxnChunk, from_record
from schemas.errors import CorruptEntry
from schemas.topics import redo_topic

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000


class PurgeRefused(OpsError):
    """A purge would not be safe (a standby's needs are unknown)."""


@dataclass(frozen=True)
class PurgePlan:
    """What a purge deletes: offsets ``low`` .. ``bound - 1`` of ``topic``."""

    topic: str
    low: int
    high: int
    bound: int
    limited_by: str
    limits: dict[str, int] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """How many offsets (records and transaction markers) go."""
        return max(0, self.bound - self.low)


def plan_bound(needs: Mapping[str, int], unknown: Mapping[str, str], ignore: set[str], *, keep_offset: int,
               tail_offset: int, low: int, high: int) -> tuple[int, str, dict[str, int]]:
    """The purge bound (delete below it), what limits it, and every limit considered (pure).

    Raises PurgeRefused when a standby's need is unknown and it is not in ``ignore``. The bound never
    exceeds any limit, so nothing at or above a standby's ``next_offset`` or the capture's resume tail
    is deleted; it is never below ``low`` (nothing to delete is 'bound == low').
    """
    blocking = {name: why for name, why in unknown.items() if name not in ignore}
    if blocking:
        names = ", ".join(sorted(blocking))
        details = "; ".join(f"{name}: {why}" for name, why in sorted(blocking.items()))
        raise PurgeRefused(
            f"cannot purge: the offset still needed by standby {names} is unknown ({details})",
            fix=f"bring {names} up so its state row can be read, or purge anyway with "
                + " ".join(f"--ignore {n}" for n in sorted(blocking))
                + " if you will rebuild it with 'ark resync'")
    limits: dict[str, int] = {f"standby {name}": offset for name, offset in needs.items() if name not in ignore}
    limits["capture resume tail"] = tail_offset
    limits["--keep-hours"] = keep_offset
    limits["end of topic"] = high
    limited_by, bound = min(limits.items(), key=lambda kv: kv[1])
    return max(bound, low), limited_by, limits


def _is_complete_txn(msg: Message) -> bool:
    """Whether ``msg`` is the last chunk of a source transaction (what capture resume looks for)."""
    try:
        dec = envelope.decode(msg.value(), msg.headers(), topic=msg.topic(), partition=msg.partition(),
                              offset=msg.offset(), expect=REDO_SCHEMA)
    except CorruptEntry:
        return False
    body = from_record(dec.record).body
    return isinstance(body, TxnChunk) and body.last


def capture_tail_offset(cfg: ArkConfig, topic: str, low: int) -> int:
    """Offset of the last complete transaction; ``low`` (keep everything) when there is none."""
    found = last_messages(cfg.kafka, topic, count=1, accept=_is_complete_txn)
    return int(found[-1].offset() or 0) if found else low


def plan(cfg: ArkConfig, *, keep_hours: float | None, ignore: set[str]) -> PurgePlan:
    """Read every limit and compute the plan (no deletion)."""
    for name in ignore:
        cfg.standby(name)  # ConfigError listing the known names
    topic = redo_topic(cfg.group)
    if not topic_exists(cfg.kafka, topic):
        raise OpsError(f"the redo topic {topic} does not exist: nothing to purge",
                       fix="check the group name; 'ark sync' or 'ark capture' creates it")
    needs, failed = read_next_offsets(cfg)
    unknown = {name: exc.message for name, exc in failed.items()}
    if keep_hours is None:
        keep_hours = (max(delays_in_force(cfg).values(), default=0.0) / 3600) + cfg.kafka.retention_margin_hours
    consumer = make_consumer(cfg.kafka, group_id="ark-inspect")
    try:
        low, high = watermarks(consumer, topic)
    finally:
        consumer.close()
    keep_offset = offset_for_time(cfg.kafka, topic, int(time.time() * 1000 - keep_hours * _HOUR_MS))
    tail = capture_tail_offset(cfg, topic, low)
    bound, limited_by, limits = plan_bound(needs, unknown, ignore, keep_offset=keep_offset, tail_offset=tail,
                                           low=low, high=high)
    return PurgePlan(topic, low, high, bound, limited_by, limits, tuple(sorted(ignore)))


def _iso(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}Z"


def time_range(cfg: ArkConfig, p: PurgePlan) -> tuple[int | None, int | None]:
    """Commit times (ms) of the first and the last entry below the bound."""
    if p.count == 0:
        return None, None
    consumer = make_consumer(cfg.kafka, group_id="ark-inspect")
    try:
        first = next(iter(read_range(consumer, p.topic, p.low, p.bound, timeout=10)), None)
        tail = list(read_range(consumer, p.topic, max(p.low, p.bound - 64), p.bound, timeout=10))
    finally:
        consumer.close()
    return (int(first.timestamp()[1]) if first is not None else None,
            int(tail[-1].timestamp()[1]) if tail else None)


def describe(cfg: ArkConfig, p: PurgePlan, *, done: bool) -> str:
    """The report: what goes (offsets, count, commit times) and why it stops there."""
    limits = ", ".join(f"{k} {v}" for k, v in sorted(p.limits.items(), key=lambda kv: kv[1]))
    ignored = f"; ignored: {', '.join(p.ignored)}" if p.ignored else ""
    if p.count == 0:
        return (f"purge {p.topic}: nothing to delete (starts at {p.low}, kept from {p.bound}: limited by "
                f"{p.limited_by}; limits: {limits}{ignored})")
    first, last = time_range(cfg, p)
    verb = "deleted" if done else "would delete"
    return (f"purge {p.topic}: {verb} offsets {p.low}..{p.bound - 1} ({p.count} offsets), commit times "
            f"{_iso(first)} .. {_iso(last)}; kept from offset {p.bound}: limited by {p.limited_by} "
            f"(limits: {limits}{ignored})")


def purge_once(cfg: ArkConfig, *, dry_run: bool, keep_hours: float | None, ignore: set[str]) -> PurgePlan:
    """Plan, print, and (unless ``dry_run``) delete below the bound."""
    p = plan(cfg, keep_hours=keep_hours, ignore=ignore)
    if dry_run or p.count == 0:
        console.print(describe(cfg, p, done=False), soft_wrap=True)
        return p
    tail = p.limits["capture resume tail"]
    # The capture reads the last complete transaction back on restart; deleting it would make it
    # republish what is already in Kafka. plan_bound() guarantees this; check before an irreversible step.
    if p.bound > tail or any(p.bound > off for name, off in p.limits.items() if name.startswith("standby ")):
        raise ArkError(f"internal: purge bound {p.bound} is above a limit {p.limits}", fix="report this as a bug")
    text = describe(cfg, p, done=True)  # read the time range before the entries are gone
    new_low = delete_records_below(cfg.kafka, p.topic, p.bound)
    log.info("purged %s below offset %s (low watermark now %s)", p.topic, p.bound, new_low)
    console.print(text + f"; low watermark now {new_low}", soft_wrap=True)
    return p


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h', '1.5d', or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise OpsError(f"cannot read the duration {text!r}", fix="give e.g. 30m, 1h, 1d (or seconds)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def run_purge(cfg: ArkConfig, *, dry_run: bool, keep_hours: float | None, ignore: set[str],
              every: str | None) -> None:
    """Purge once, or every ``every`` until interrupted (the scheduled job).

    The schedule is apscheduler's (one job, never two rounds at once, a late round runs once, not
    several). A refused or failed round is reported and retried at the next round: a standby that is
    down for a while blocks purging, it does not stop the job.
    """
    if every is None:
        purge_once(cfg, dry_run=dry_run, keep_hours=keep_hours, ignore=ignore)
        return
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    interval = parse_duration(every)

    def round_() -> None:
        try:
            purge_once(cfg, dry_run=dry_run, keep_hours=keep_hours, ignore=ignore)
        except ArkError as exc:
            report_error(exc)
        console.print(f"next purge in {every}", soft_wrap=True)

    scheduler = BlockingScheduler()
    scheduler.add_job(round_, IntervalTrigger(seconds=interval), next_run_time=datetime.now(UTC), max_instances=1,
                      coalesce=True, misfire_grace_time=int(interval))
    scheduler.start()
