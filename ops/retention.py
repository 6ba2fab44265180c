"""Retention is the archive: is the redo topic kept long enough, and is any standby about to fall off it?

The redo topic's retention is the archive of shipped logs (ARCHITECTURE.md). A standby that is
delayed, stopped or slow needs every entry from its state row's ``next_offset`` on; if Kafka
deletes that entry first, the standby can only be rebuilt. :func:`verdict` is the pure decision
(tested with a table of cases); :func:`retention_warnings` gathers the facts from the broker, the
control topic and the standbys and feeds it. ``ark check`` and ``ark status`` print the result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer

from common.config import ArkConfig
from common.control import ControlChannel, current_delay
from common.errors import ArkError
from common.kafka import last_messages, make_consumer, read_range, topic_config, topic_exists, watermarks
from ops.engines import applier_factory
from schemas.topics import control_topic, redo_topic

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicRetention:
    """What the broker says about the redo topic. ``-1`` means unlimited, ``None`` means unknown."""

    topic: str
    exists: bool
    retention_ms: int = -1
    retention_bytes: int = -1
    cleanup_policy: str = "delete"
    remote_storage: bool = False
    low: int = 0
    high: int = 0
    oldest_ts_ms: int | None = None
    newest_ts_ms: int | None = None


@dataclass(frozen=True)
class StandbyNeed:
    """The first redo offset a standby still needs, and the commit time (ms) of the entry there."""

    name: str
    next_offset: int
    next_ts_ms: int | None = None


@dataclass(frozen=True)
class RetentionWarning:
    """One problem and its fix."""

    what: str
    fix: str

    def sentence(self) -> str:
        """The warning on one line (``ark status``)."""
        return f"{self.what} (fix: {self.fix})"


def hours(ms: float) -> str:
    """``ms`` as hours for messages: '36 h', '1.5 h', '0.02 h'."""
    value = ms / _HOUR_MS
    return f"{value:.3g} h" if value < 10 else f"{value:.0f} h"


def kafka_configs(bootstrap: str, topic: str, change: str) -> str:
    """The kafka-configs.sh command that makes ``change`` on ``topic``."""
    return (f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {topic} {change}")


def hours_left(topic: TopicRetention, need: StandbyNeed, now_ms: int) -> float | None:
    """Hours until the entry at ``need.next_offset`` may be deleted by retention (None: not estimable).

    By time: Kafka deletes a segment once its *newest* timestamp is older than retention.ms, so the
    entry lives at least until its own commit time + retention.ms (the estimate is conservative).
    By size: once the topic is at its size limit (something was already deleted), the start of the
    log advances at the write rate, so the entries ahead of the standby last (ahead / rate).
    """
    estimates: list[float] = []
    if topic.retention_ms >= 0 and need.next_ts_ms is not None:
        estimates.append((need.next_ts_ms + topic.retention_ms - now_ms) / _HOUR_MS)
    if topic.retention_bytes >= 0 and topic.low > 0 and topic.oldest_ts_ms is not None \
            and topic.newest_ts_ms is not None and topic.newest_ts_ms > topic.oldest_ts_ms:
        rate_per_ms = (topic.high - topic.low) / (topic.newest_ts_ms - topic.oldest_ts_ms)
        if rate_per_ms > 0:
            estimates.append((need.next_offset - topic.low) / rate_per_ms / _HOUR_MS)
    return min(estimates) if estimates else None


def verdict(topic: TopicRetention, delays: Mapping[str, float], margin_s: float, needs: Sequence[StandbyNeed],
            now_ms: int, *, bootstrap: str, configured_retention_ms: int) -> list[RetentionWarning]:
    """Every retention problem of the redo topic, each with its fix (pure: no I/O).

    ``delays`` are the delays in force per standby (config, overridden by 'ark delay' intents);
    ``configured_retention_ms`` is kafka.redo_retention_hours, used when the topic does not exist yet.
    """
    out: list[RetentionWarning] = []
    longest_name, longest_s = max(delays.items(), key=lambda kv: kv[1], default=("", 0.0))
    needed_ms = int((longest_s + margin_s) * 1000)
    why = (f"the longest delay in force ({longest_s:g} s, standby {longest_name}) plus the "
           f"{hours(margin_s * 1000)} margin (kafka.retention_margin_hours)" if longest_s > 0
           else f"the {hours(margin_s * 1000)} margin (kafka.retention_margin_hours)")
    needed_h = f"{needed_ms / _HOUR_MS:g}"
    if not topic.exists:
        if configured_retention_ms < needed_ms:
            out.append(RetentionWarning(
                f"kafka.redo_retention_hours is {hours(configured_retention_ms)} but {why} needs "
                f"{hours(needed_ms)}; the redo topic {topic.topic} will be created with it",
                f"set kafka.redo_retention_hours: {needed_h} (or more) in the config before 'ark sync' or "
                f"'ark capture' creates the topic"))
        return out
    if "compact" in topic.cleanup_policy:
        out.append(RetentionWarning(
            f"redo topic {topic.topic} has cleanup.policy={topic.cleanup_policy}: compaction keeps only the "
            f"newest record per key and deletes history, which is wrong for the archive of shipped logs",
            kafka_configs(bootstrap, topic.topic, "--add-config cleanup.policy=delete")))
    if 0 <= topic.retention_ms < needed_ms:
        out.append(RetentionWarning(
            f"redo topic {topic.topic} keeps {hours(topic.retention_ms)} (retention.ms={topic.retention_ms}) "
            f"but {why} needs {hours(needed_ms)}"
            + (" (tiered storage is on: retention.ms is the total, local and remote)" if topic.remote_storage else ""),
            kafka_configs(bootstrap, topic.topic, f"--add-config retention.ms={needed_ms}")
            + f"; and set kafka.redo_retention_hours: {needed_h} in the config for new topics"))
    if topic.retention_bytes >= 0:
        held = ""
        if topic.low > 0 and topic.oldest_ts_ms is not None:
            held = f"; it holds {hours(max(0, now_ms - topic.oldest_ts_ms))} of history now"
        out.append(RetentionWarning(
            f"redo topic {topic.topic} has retention.bytes={topic.retention_bytes}: deletion by size cannot "
            f"guarantee the {hours(needed_ms)} that {why} needs (the time kept depends on the write rate{held})",
            kafka_configs(bootstrap, topic.topic, "--delete-config retention.bytes")
            + " (keep time-based retention; 'ark purge' frees space without removing what a standby needs)"))
    out.extend(_standby_warnings(topic, needs, margin_s, now_ms, bootstrap, needed_ms))
    return out


def _standby_warnings(topic: TopicRetention, needs: Sequence[StandbyNeed], margin_s: float, now_ms: int,
                      bootstrap: str, needed_ms: int) -> list[RetentionWarning]:
    out: list[RetentionWarning] = []
    for need in needs:
        if need.next_offset < topic.low:
            out.append(RetentionWarning(
                f"standby {need.name} needs redo offset {need.next_offset} but {topic.topic} starts at "
                f"{topic.low}: offsets {need.next_offset}..{topic.low - 1} are no longer retained",
                f"rebuild it from the primary: stop 'ark apply {need.name}', then 'ark resync {need.name}'"))
            continue
        if need.next_offset >= topic.high:
            continue  # caught up: nothing retained is needed
        left = hours_left(topic, need, now_ms)
        ahead = need.next_offset - topic.low
        if left is not None and left * _HOUR_MS < margin_s * 1000:
            out.append(RetentionWarning(
                f"standby {need.name} is about to fall off retention: its next entry (offset {need.next_offset}, "
                f"{ahead} offsets above the start of {topic.topic}) may be deleted in about {max(left, 0):.1f} h",
                f"let 'ark apply {need.name}' catch up (is it running? delayed?), or raise retention: "
                + kafka_configs(bootstrap, topic.topic, f"--add-config retention.ms={needed_ms}")))
        elif left is None and topic.retention_bytes >= 0 and topic.low > 0 \
                and ahead < 0.1 * (topic.high - topic.low):
            out.append(RetentionWarning(
                f"standby {need.name} is close to the start of {topic.topic}: its next entry, offset "
                f"{need.next_offset}, is only {ahead} offsets above the low watermark {topic.low} "
                f"(size-based retention deletes from there)",
                f"let 'ark apply {need.name}' catch up, or remove retention.bytes: "
                + kafka_configs(bootstrap, topic.topic, "--delete-config retention.bytes")))
    return out


def delay_verdict(seconds: float, retention_ms: int, margin_s: float, topic: str, *, bootstrap: str,
                  exists: bool = True) -> RetentionWarning | None:
    """Whether the redo topic (``retention_ms``, -1 unlimited) can hold a delay of ``seconds`` plus the margin
    (pure). A delay it cannot hold is applied from entries that retention deletes first: the standby stops
    with exit 13 and must be rebuilt."""
    if retention_ms < 0:
        return None
    needed_ms = int((seconds + margin_s) * 1000)
    if needed_ms <= retention_ms:
        return None
    keeps = (f"{topic} keeps {hours(retention_ms)} (retention.ms={retention_ms})" if exists else
             f"kafka.redo_retention_hours is {hours(retention_ms)} ({topic} does not exist yet)")
    what = (f"a delay of {seconds:g} s needs the redo topic to keep {hours(needed_ms)} (the delay plus the "
            f"{hours(margin_s * 1000)} margin, kafka.retention_margin_hours), but {keeps}: entries would be deleted "
            "before the standby applies them, and it would stop until rebuilt")
    fix = (kafka_configs(bootstrap, topic, f"--add-config retention.ms={needed_ms}") if exists else
           f"set kafka.redo_retention_hours: {needed_ms / _HOUR_MS:g} in the config")
    return RetentionWarning(what, fix + "; then set the delay again (or pass --force to set it anyway)")


def delay_problem(cfg: ArkConfig, seconds: float) -> RetentionWarning | None:
    """:func:`delay_verdict` from the live topic (KafkaUnavailable when the broker does not answer)."""
    topic = redo_topic(cfg.group)
    exists = topic_exists(cfg.kafka, topic)
    retention_ms = int(topic_config(cfg.kafka, topic).get("retention.ms", "-1")) if exists \
        else cfg.kafka.redo_retention_ms
    return delay_verdict(seconds, retention_ms, cfg.kafka.retention_margin_hours * 3600, topic,
                         bootstrap=cfg.kafka.bootstrap, exists=exists)


# -- gathering the facts ---------------------------------------------------------------------------


def delays_in_force(cfg: ArkConfig) -> dict[str, float]:
    """Each standby's delay: the config's, overridden by the last 'ark delay' intent on the control topic."""
    base = {s.name: s.delay_seconds for s in cfg.standbys}
    if not topic_exists(cfg.kafka, control_topic(cfg.group)):
        return base
    channel = ControlChannel.for_config(cfg)
    try:
        records = channel.replay()
    finally:
        channel.close()
    return {name: current_delay(records, name, delay) for name, delay in base.items()}


def _first_ts(consumer: Consumer, topic: str, start: int, stop: int) -> int | None:
    """Timestamp (ms) of the first committed message in [start, stop), or None."""
    for msg in read_range(consumer, topic, start, stop, timeout=5):
        return int(msg.timestamp()[1])
    return None


def describe_redo(cfg: ArkConfig, needed_offsets: Mapping[str, int]) -> tuple[TopicRetention, list[StandbyNeed]]:
    """The redo topic's retention facts, and each standby's need with the commit time of its next entry."""
    topic = redo_topic(cfg.group)
    if not topic_exists(cfg.kafka, topic):
        return TopicRetention(topic, exists=False), []
    conf = topic_config(cfg.kafka, topic)
    consumer = make_consumer(cfg.kafka, group_id="ark-inspect")
    try:
        low, high = watermarks(consumer, topic)
        oldest = _first_ts(consumer, topic, low, high)
        needs = [StandbyNeed(name, offset, _first_ts(consumer, topic, max(offset, low), high))
                 for name, offset in needed_offsets.items()]
    finally:
        consumer.close()
    newest_msgs = last_messages(cfg.kafka, topic, count=1) if high > low else []
    newest = int(newest_msgs[-1].timestamp()[1]) if newest_msgs else None
    facts = TopicRetention(
        topic, exists=True, retention_ms=int(conf.get("retention.ms", "-1")),
        retention_bytes=int(conf.get("retention.bytes", "-1")), cleanup_policy=conf.get("cleanup.policy", "delete"),
        remote_storage=conf.get("remote.storage.enable", "false") == "true",
        low=low, high=high, oldest_ts_ms=oldest, newest_ts_ms=newest)
    return facts, needs


def read_next_offsets(cfg: ArkConfig) -> tuple[dict[str, int], dict[str, ArkError]]:
    """Each standby's state-row ``next_offset`` (read from the standby), and why it could not be read."""
    found: dict[str, int] = {}
    failed: dict[str, ArkError] = {}
    topic = redo_topic(cfg.group)
    for standby in cfg.standbys:
        try:
            with contextlib.closing(applier_factory(standby)()) as applier:
                state = applier.load_state(cfg.group, standby.name)
        except ArkError as exc:
            failed[standby.name] = exc
            continue
        if state is None:
            failed[standby.name] = ArkError(f"standby {standby.name} was never synced (no state row)",
                                            fix=f"ark sync {standby.name}")
        elif state.topic != topic or state.partition != 0:
            failed[standby.name] = ArkError(
                f"standby {standby.name}'s state row follows {state.topic}[{state.partition}], not {topic}[0]",
                fix=f"check the group name in the config, or re-sync it: ark sync {standby.name}")
        else:
            found[standby.name] = state.next_offset
    return found, failed


def retention_warnings(cfg: ArkConfig, needed_offsets: Mapping[str, int] | None = None) -> list[RetentionWarning]:
    """Everything :func:`verdict` finds, from live facts. ``needed_offsets`` default: read the standbys.

    Raises KafkaUnavailable when the broker does not answer (callers report it their way).
    """
    if needed_offsets is None:
        needed_offsets = read_next_offsets(cfg)[0]
    facts, needs = describe_redo(cfg, needed_offsets)
    return verdict(facts, delays_in_force(cfg), cfg.kafka.retention_margin_hours * 3600, needs,
                   int(time.time() * 1000), bootstrap=cfg.kafka.bootstrap,
                   configured_retention_ms=cfg.kafka.redo_retention_ms)


def status_warnings(cfg: ArkConfig, rows: Sequence[Mapping[str, object]]) -> list[str]:
    """Retention warnings for ``ark status``, from its standby rows (``name``, ``applied_offset``)."""
    needed = {str(r["name"]): int(str(r["applied_offset"])) + 1 for r in rows
              if isinstance(r.get("applied_offset"), int) and int(str(r["applied_offset"])) >= 0}
    try:
        return [w.sentence() for w in retention_warnings(cfg, needed)]
    except ArkError as exc:
        return [f"cannot check the redo topic's retention: {exc.message}"]
