"""``ark check``: config, Kafka, primary prerequisites and standbys — each finding with its fix."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from rich.table import Table

from common.config import ArkConfig
from common.errors import ArkError
from common.guard import refusals, source_refusal
from common.kafka import check_reachable
from ops.context import console
from ops.engines import applier_factory, capture_factory
from ops.errors import CheckFailed
from ops.guard import recorded, situation
from ops.retention import retention_warnings
from schemas.topics import redo_topic


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    subject: str
    ok: bool
    what: str
    fix: str = ""
    fatal: bool = True


def collect(cfg: ArkConfig) -> list[Finding]:
    """Run every check; never raises for a failed check (it becomes a finding)."""
    summary = f"{cfg.source_path} is valid (group {cfg.group}, {len(cfg.standbys)} standbys)"
    findings = [Finding("config", True, summary)]
    from ops.alerts_cmd import check_findings

    findings += [Finding("alerts", ok, what, fix, fatal=False) for ok, what, fix in check_findings(cfg)]
    try:
        topics = check_reachable(cfg.kafka)
        findings.append(Finding("kafka", True, f"{cfg.kafka.bootstrap} answers ({len(topics)} topics)"))
        findings.extend(_retention(cfg))
        findings.append(_message_size(cfg))
        findings.extend(_files_retention(cfg))
    except ArkError as exc:
        findings.append(Finding("kafka", False, exc.message, exc.fix))
    try:
        with contextlib.closing(capture_factory(cfg)()) as capture:
            problems = capture.check_prerequisites()
        if not problems:
            findings.append(Finding(f"primary {cfg.primary.name}", True, "reachable; capture prerequisites met"))
        for p in problems:
            findings.append(Finding(f"primary {cfg.primary.name}", False, p.what, p.fix, p.fatal))
        findings.extend(_protection(cfg))
    except ArkError as exc:
        findings.append(Finding(f"primary {cfg.primary.name}", False, exc.message, exc.fix))
    findings.extend(_source_log(cfg))
    findings.extend(_identities(cfg))
    for standby in cfg.standbys:
        try:
            with contextlib.closing(applier_factory(standby)()) as applier:
                standby_problems = applier.check_prerequisites()
            if not standby_problems:
                delay = f", delay {standby.delay_seconds:g} s" if standby.delay_seconds else ""
                findings.append(Finding(f"standby {standby.name}", True, f"reachable; apply prerequisites met{delay}"))
            for sp in standby_problems:
                findings.append(Finding(f"standby {standby.name}", False, sp.what, sp.fix, sp.fatal))
        except ArkError as exc:
            findings.append(Finding(f"standby {standby.name}", False, exc.message, exc.fix))
    return findings


def _protection(cfg: ArkConfig) -> list[Finding]:
    """Every table that is not fully protected (keyless policy, UNLOGGED, not published yet) and what the capture
    does not follow exactly without its DDL hook: warnings, each with what would protect it."""
    with contextlib.closing(capture_factory(cfg)()) as capture:
        found = capture.protection()
    if not found:
        return [Finding("protection", True, "every table of primary.tables is fully protected; DDL is followed")]
    return [Finding("protection", False, p.what, p.fix, fatal=False) for p in found]


def _source_log(cfg: ArkConfig) -> list[Finding]:
    """The log the primary holds back for Ark (the slot's WAL, its bound, the free disk under it)."""
    try:
        with contextlib.closing(capture_factory(cfg)()) as capture:
            text, problems = capture.log_report()
    except ArkError:
        return []  # unreachable: the prerequisite check reports it
    subject = f"primary {cfg.primary.name} log"
    out = [Finding(subject, True, text)] if text else []
    return out + [Finding(subject, False, p.what, p.fix, p.fatal) for p in problems]


def _identities(cfg: ArkConfig) -> list[Finding]:
    """Which database each node really is: a standby that is the primary, another standby or a capture's
    source, or that was replaced behind its address, is refused before anything writes to it."""
    out: list[Finding] = []
    rec = recorded(cfg)
    try:
        with contextlib.closing(capture_factory(cfg)()) as capture:
            live = capture.identity()
        refusal = source_refusal(cfg.group, cfg.primary.name, live, rec, str(cfg.source_path or "the config"))
        if refusal is not None:
            out.append(Finding(f"primary {cfg.primary.name}", False, refusal.message, refusal.fix))
    except ArkError:
        pass  # unreachable: the prerequisite check reports it
    for standby in cfg.standbys:
        try:
            with contextlib.closing(applier_factory(standby)()) as applier:
                found = refusals(situation(cfg, standby, applier, "check", rec=rec))
        except ArkError:
            continue  # unreachable: the standby check reports it
        out += [Finding(f"standby {standby.name}", False, r.message, r.fix) for r in found]
        if not found:
            out.append(Finding(f"standby {standby.name}", True, "its own database: not the primary, not another "
                                                                 "standby, not a capture's source"))
    return out


def _retention(cfg: ArkConfig) -> list[Finding]:
    """The redo topic as the archive: long enough for the longest delay in force plus the margin."""
    try:
        warnings = retention_warnings(cfg)
    except ArkError as exc:
        return [Finding("retention", False, f"cannot check the redo topic's retention: {exc.message}", exc.fix,
                        fatal=False)]
    if not warnings:
        margin = cfg.kafka.retention_margin_hours
        what = f"{redo_topic(cfg.group)}: retention covers the longest delay + {margin:g} h"
        return [Finding("retention", True, what)]
    return [Finding("retention", False, w.what, w.fix, fatal=False) for w in warnings]


def _message_size(cfg: ArkConfig) -> Finding:
    """What one Kafka message may hold, and so how large values travel (never a limit on the data)."""
    from common.redo_kafka import limits_of
    from producers.publisher import HEADROOM_BYTES

    topic = redo_topic(cfg.group)
    try:
        limits = limits_of(cfg.kafka, topic)
    except ArkError:
        return Finding("messages", True, f"{topic} does not exist yet: the capture creates it; values of any size "
                                         "travel in parts of at most half a message", fatal=False)
    room = max(4096, limits.effective - HEADROOM_BYTES)
    broker = f", brokers {limits.broker:,} (message.max.bytes)" if limits.broker else ""
    what = (f"{topic} takes messages up to {limits.topic or limits.broker:,} bytes (max.message.bytes){broker}, "
            f"Ark's producer up to {limits.producer:,}; Ark sends at most {limits.effective - HEADROOM_BYTES:,}: a "
            f"value over {room // 2:,} bytes travels in parts of that size")
    if limits.effective < 65536:
        return Finding("messages", False, what + "; so small a limit makes every large value many messages",
                       f"raise it: kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
                       "--add-config max.message.bytes=1048576", fatal=False)
    return Finding("messages", True, what)


def _files_retention(cfg: ArkConfig) -> list[Finding]:
    """Each file set's topic keeps records long enough for its delayed targets (plus the margin)."""
    from filesync.service import retention_check

    out = []
    for name in sorted(cfg.files):
        try:
            problems = retention_check(cfg, name)
        except ArkError as exc:
            out.append(Finding(f"files {name}", False, f"cannot check retention: {exc.message}", exc.fix, fatal=False))
            continue
        out.extend(Finding(f"files {name}", False, p.what, p.fix, fatal=False) for p in problems)
    return out


def run_check(cfg: ArkConfig) -> None:
    """Print the report; raise CheckFailed (exit 6) when any fatal finding remains."""
    findings = collect(cfg)
    table = Table(show_header=True, header_style="bold", expand=False)
    table.add_column("")
    table.add_column("subject")
    table.add_column("finding")
    table.add_column("fix")
    for f in findings:
        mark = "[green]ok[/]" if f.ok else ("[red]FAIL[/]" if f.fatal else "[yellow]warn[/]")
        table.add_row(mark, f.subject, f.what, f.fix)
    console.print(table)
    fatal = [f for f in findings if not f.ok and f.fatal]
    if fatal:
        first = fatal[0]
        raise CheckFailed(f"{len(fatal)} problem(s); first: {first.subject}: {first.what}", fix=first.fix)
    console.print("[green]all checks passed[/]")
