"""The sender of a file set: scan, compare with what each target acknowledged, ship the differences.

One pass: walk the source; hash the files whose stat changed (or that were *racy*: modified within
``horizon_s`` of the last scan, so their stat cannot be trusted); plan per target against its
acknowledged state; ship each change once for all targets that need it; end with a PassEnd and wait
for every target's PassAck. A file that changes while it is read is re-read (up to 3 times), or left
for the next pass. Refusals (nacks) update the acknowledged state, so the next pass repairs them;
:meth:`Sender.sync` runs passes until one comes back clean.

Each target is planned against what it *will* hold: what it acknowledged, overlaid with what was
shipped to it since and is still in flight (cleared by its PassAck). A delayed target acknowledges
a pass only after its delay, so without the overlay every pass would ship the same changes again.
The sender waits for the PassAcks of the targets that apply at once; delayed (or paused) targets
acknowledge later, and their refusals are repaired by a later pass.

Consistency points (``consistency_points: true``): a pass reads the end offset of the group's redo
topic before its scan and after its last change, and records both in its PassEnd; each target echoes
them in its PassAck. A target that acknowledged pass P holds the files as scanned between those
two redo offsets, so a database standby stopped at an offset in [start, end] is at the same point.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.config import ArkConfig
from common.config_files import FileSetConfig
from common.errors import ArkError
from common.kafka import end_offset, topic_exists
from filesync.channel import CHANGES, FEEDBACK, Item, SetChannel
from filesync.chunks import Signature, chunk_hash, signature_of_file
from filesync.delay import DelayFollower
from filesync.delta import Op, plan_delta
from filesync.errors import NotConverged, SourcePermission
from filesync.plan import Acked, Change, Current, merge_targets, plan_changes
from filesync.scanner import Scan, scan
from filesync.state import StateDB
from schemas.topics import redo_topic

log = logging.getLogger(__name__)

#: progress(path, done_bytes, total_bytes)
Progress = Callable[[str, int, int], None]
_KEEP_TOTAL = 64 << 20


@dataclass
class PassReport:
    """What one pass did."""

    pass_id: str
    changes: int = 0
    literal_bytes: int = 0
    busy: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    nacks: list[tuple[str, str, str]] = field(default_factory=list)
    #: Targets not waited for (delayed or paused): (name, seconds) — they apply the pass later.
    delayed: list[tuple[str, float]] = field(default_factory=list)
    seq: int = 0
    published_us: int = 0
    redo_start: int | None = None
    redo_end: int | None = None


class Sender:
    """Ships one file set to its targets through the set's topic."""

    def __init__(self, cfg: ArkConfig, name: str, config: FileSetConfig, state_dir: Path,
                 *, progress: Progress | None = None) -> None:
        settings, group = cfg.kafka, cfg.group
        self.config = config
        self.settings = settings
        self.group = group
        self.name = name
        self.targets = [t.name for t in config.targets]
        self.channel = SetChannel(settings, group, name, f"sender-{uuid.uuid4().hex[:12]}", config.retention_ms)
        self.channel.ensure()
        self.delays = DelayFollower(cfg, name, config)
        self.state = StateDB(state_dir / "sender.db")
        self.progress = progress
        start = int(self.state.get("feedback_offset", "-2"))
        self.feedback = self.channel.reader(FEEDBACK, start)
        self.pass_acks: dict[str, set[str]] = {}
        self.nacks: list[tuple[str, str, str]] = []
        self._redo_seen = False

    # ---- feedback
    def drain_feedback(self, timeout: float = 0.05) -> int:
        """Apply every acknowledgement available now; returns how many records were read."""
        n = 0
        with self.state.batch():
            while (item := self.feedback.poll(timeout if n == 0 else 0.0)) is not None:
                self._feedback(item)
                n += 1
            if n:
                self.state.put("feedback_offset", str(self.feedback.position))
        return n

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read the feedback partition up to its current end."""
        end = self.feedback.end()
        deadline = time.monotonic() + timeout
        while self.feedback.position < end and time.monotonic() < deadline:
            self.drain_feedback(0.2)

    def _feedback(self, item: Item) -> None:
        body = item.body
        if item.kind == "Ack":
            if body["signature"]:
                self.state.put_signature(Signature.unpack(body["signature"]))
            acked = Acked(body["entry_kind"], body["content_hash"], body["meta_digest"]) if body["present"] else None
            self.state.set_acked(body["target"], body["path"], acked)
            if not body["ok"]:
                log.warning("target %s refused %s: %s", body["target"], body["path"], body["reason"])
                self.nacks.append((body["target"], body["path"], body["reason"]))
        elif item.kind == "PassAck":
            self.pass_acks.setdefault(body["pass_id"], set()).add(body["target"])
            seq = self.state.pass_seq(body["pass_id"])
            if seq is not None:  # everything shipped up to this pass is applied (or refused) there now
                self.state.clear_pending(body["target"], seq)
            self.state.put(f"applied_pass:{body['target']}", json.dumps({
                "pass_id": body["pass_id"], "seq": seq, "errors": body["errors"], "started_us": body["started_us"],
                "redo_start": body["redo_start"], "redo_end": body["redo_end"], "applied_us": body["applied_us"]}))

    # ---- one pass
    def _hash_files(self, result: Scan, report: PassReport,
                    kept: dict[str, tuple[Signature, bytes | None]]) -> dict[str, Current]:
        current: dict[str, Current] = {}
        horizon_ns = time.time_ns() - int(self.config.horizon_s * 1e9)
        kept_total = 0
        for path, entry in result.entries.items():
            if entry.meta.kind != "FILE":
                continue
            key = entry.stat_key()
            digest = self.state.cached_hash(path, key)
            if digest is None:
                abs_path = os.path.join(result.root, path)
                for _attempt in range(3):
                    try:
                        sig, data = signature_of_file(abs_path, self.config.chunk_avg_bytes)
                        after = os.lstat(abs_path)
                    except OSError as exc:
                        report.errors.append((path, exc.strerror or str(exc)))
                        break
                    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino) == key:
                        digest = sig.content_hash
                        racy = entry.meta.mtime_ns >= horizon_ns
                        self.state.put_cached_hash(path, key, digest, racy)
                        if data is not None and kept_total + len(data) > _KEEP_TOTAL:
                            data = None
                        kept_total += len(data) if data is not None else 0
                        kept[path] = (sig, data)
                        break
                    key = (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino)
                else:
                    report.busy.append(path)
                if digest is None:
                    continue
            current[path] = Current(entry.meta, digest)
        for path, entry in result.entries.items():
            if entry.meta.kind == "HARDLINK":
                primary = current.get(entry.meta.link)
                if primary is not None:
                    current[path] = Current(entry.meta, primary.content_hash)
            elif entry.meta.kind != "FILE":
                current[path] = Current(entry.meta)
        return current

    def plan(self) -> tuple[Scan, dict[str, Current], list[tuple[Change, tuple[str, ...]]], PassReport,
                            dict[str, tuple[Signature, bytes | None]]]:
        """Scan and plan without shipping: (scan, current, changes with their targets, report, kept)."""
        report = PassReport(pass_id=uuid.uuid4().hex)
        result = scan(self.config)
        report.errors.extend(result.errors)
        kept: dict[str, tuple[Signature, bytes | None]] = {}
        current = self._hash_files(result, report, kept)
        per_target = {t: plan_changes(self.state.expected(t), current, delete=self.config.delete)
                      for t in self.targets}
        # Paths busy or unreadable this pass are left as they are, not deleted on the targets.
        skip = set(report.busy) | {p for p, _ in report.errors}
        per_target = {t: [c for c in cs if c.path not in skip] for t, cs in per_target.items()}
        return result, current, merge_targets(per_target), report, kept

    def run_pass(self) -> PassReport:
        """One scan and everything it finds to ship, ended by a PassEnd. Does not wait for acks."""
        self.drain_feedback(0.0)
        started_us = time.time_ns() // 1000
        redo_start = self._redo_offset()
        result, _current, changes, report, kept = self.plan()
        with self.state.batch():
            report.seq = self.state.begin_pass(report.pass_id, started_us)
        with self.state.batch():  # in-flight rows commit only once their records are in Kafka (flush below)
            for change, targets in changes:
                if self._ship(result.root, change, list(targets), report, kept):
                    self._in_flight(change, list(targets) or self.targets, report.seq)
                report.changes += 1
            # The source was last read just now: the consistency point ends here.
            report.redo_start, report.redo_end = redo_start, self._redo_offset()
            report.published_us = time.time_ns() // 1000
            self.channel.publish(CHANGES, "PassEnd", {
                "pass_id": report.pass_id, "targets": [], "entries": report.changes, "started_us": started_us,
                "redo_start": report.redo_start, "redo_end": report.redo_end})
            self.channel.flush()
            self.state.end_pass(report.pass_id, report.published_us, report.redo_start, report.redo_end,
                                report.changes)
        log.info("pass %s of set %s: %d changes, %d literal bytes, %d busy, %d unreadable", report.pass_id[:8],
                 self.name, report.changes, report.literal_bytes, len(report.busy), len(report.errors))
        return report

    def _in_flight(self, change: Change, targets: list[str], seq: int) -> None:
        """Remember what ``targets`` will hold once they apply ``change`` (until their PassAck)."""
        if change.action == "delete":
            expected: Acked | None = None
        else:
            assert change.meta is not None
            expected = Acked(change.meta.kind, change.content_hash, change.meta.digest())
        for target in targets:
            self.state.set_pending(target, change.path, seq, expected)
            if change.action == "rename":
                self.state.set_pending(target, change.from_path, seq, None)

    def _redo_offset(self) -> int | None:
        """The redo topic's end offset, when this set records consistency points (None otherwise)."""
        if not self.config.consistency_points:
            return None
        topic = redo_topic(self.group)
        try:
            if not self._redo_seen:
                if not topic_exists(self.settings, topic):
                    log.warning("file set %s records consistency points but %s does not exist yet", self.name,
                                topic)
                    return None
                self._redo_seen = True
            return end_offset(self.settings, topic)
        except ArkError as exc:
            log.warning("file set %s: no consistency point this pass: %s", self.name, exc.message)
            return None

    def _ship(self, root: str, change: Change, targets: list[str], report: PassReport,
              kept: dict[str, tuple[Signature, bytes | None]]) -> bool:
        """Publish one change; False when it was not shipped (the file was busy)."""
        pub = self.channel.publish
        if change.action == "delete":
            pub(CHANGES, "Delete", {"pass_id": report.pass_id, "path": change.path, "targets": targets})
        elif change.action == "meta":
            assert change.meta is not None
            pub(CHANGES, "EntryMeta", {"pass_id": report.pass_id, "path": change.path, "targets": targets,
                                       "meta": change.meta.to_record(), "content_hash": change.content_hash})
        elif change.action == "rename":
            assert change.meta is not None
            pub(CHANGES, "Rename", {"pass_id": report.pass_id, "from_path": change.from_path, "to_path": change.path,
                                    "targets": targets, "meta": change.meta.to_record(),
                                    "content_hash": change.content_hash})
        else:
            return self._ship_content(root, change, targets, report, kept)
        return True

    def _ship_content(self, root: str, change: Change, targets: list[str], report: PassReport,
                      kept: dict[str, tuple[Signature, bytes | None]]) -> bool:
        assert change.meta is not None
        abs_path = os.path.join(root, change.path)
        sig, data = kept.get(change.path) or signature_of_file(abs_path, self.config.chunk_avg_bytes)
        if sig.content_hash != change.content_hash:
            report.busy.append(change.path)
            return False
        basis = self.state.signature(change.basis_hash) if change.basis_hash else None
        if basis is not None and basis.avg != sig.avg:
            # Chunks only match when cut with the same average: re-cut the new content like the basis.
            sig, data = signature_of_file(abs_path, avg=basis.avg)
            if sig.content_hash != change.content_hash:
                report.busy.append(change.path)
                return False
        ops = plan_delta(basis, sig)
        transfer_id = uuid.uuid4().hex
        self.channel.publish(CHANGES, "FileBegin", {
            "transfer_id": transfer_id, "pass_id": report.pass_id, "path": change.path, "targets": targets,
            "meta": change.meta.to_record(), "content_hash": sig.content_hash,
            "basis_hash": change.basis_hash if basis is not None else None})
        try:
            messages = self._ship_ops(abs_path, change.path, transfer_id, ops, data, sig.size, report)
        except (OSError, _Changed) as exc:
            self.channel.publish(CHANGES, "FileAbort", {"transfer_id": transfer_id, "reason": str(exc)})
            report.busy.append(change.path)
            return False
        self.channel.publish(CHANGES, "FileEnd", {"transfer_id": transfer_id, "messages": messages})
        self.state.put_signature(sig)
        return True

    def _ship_ops(self, abs_path: str, path: str, transfer_id: str, ops: list[Op], data: bytes | None,
                  size: int, report: PassReport) -> int:
        limit = self.config.message_bytes
        batch: list[dict[str, object]] = []
        batch_bytes = seq = done = 0
        fd = os.open(abs_path, os.O_RDONLY) if data is None and any(op.literal for op in ops) else -1
        try:
            for op in ops:
                if op.literal:
                    chunk = (data[op.new_offset:op.new_offset + op.length] if data is not None
                             else os.pread(fd, op.length, op.new_offset))
                    if chunk_hash(chunk) != op.chunk_hash:
                        raise _Changed(f"{path} changed while it was sent")
                    batch.append({"copy_offset": -1, "length": op.length, "data": chunk, "chunk_hash": op.chunk_hash})
                    batch_bytes += op.length
                    report.literal_bytes += op.length
                else:
                    batch.append({"copy_offset": op.copy_offset, "length": op.length, "data": b"", "chunk_hash": b""})
                    batch_bytes += 24
                done += op.length
                if batch_bytes >= limit or len(batch) >= 4096:
                    self.channel.publish(CHANGES, "FileData", {"transfer_id": transfer_id, "seq": seq, "ops": batch})
                    seq += 1
                    batch, batch_bytes = [], 0
                    if self.progress is not None:
                        self.progress(path, done, size)
            if batch:
                self.channel.publish(CHANGES, "FileData", {"transfer_id": transfer_id, "seq": seq, "ops": batch})
                seq += 1
        finally:
            if fd >= 0:
                os.close(fd)
        if self.progress is not None:
            self.progress(path, size, size)
        return seq

    # ---- waiting and converging
    def held_back(self) -> list[tuple[str, float]]:
        """Targets that do not apply at once (delayed or paused), with their delay in force."""
        self.delays.refresh()
        return [(t, self.delays.of(t).seconds) for t in self.targets if self.delays.of(t).holds]

    def wait(self, pass_id: str, timeout: float, check: Callable[[], None] | None = None) -> set[str]:
        """Wait until every target that applies at once acknowledged ``pass_id``; returns those still missing.

        Delayed and paused targets are not waited for: they acknowledge after their delay.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.drain_feedback(0.02)
            waited = set(self.targets) - {t for t, _s in self.held_back()}
            missing = waited - self.pass_acks.get(pass_id, set())
            if not missing or time.monotonic() >= deadline:
                return missing
            fatal = [n for n in self.nacks if n[2].startswith("fatal:")]
            if fatal:
                return missing
            if check is not None:
                check()

    def sync(self, *, rounds: int = 5, timeout: float | None = None,
             check: Callable[[], None] | None = None) -> PassReport:
        """Run passes until one ships nothing that a target refuses; raise when it cannot converge."""
        timeout = timeout if timeout is not None else self.config.ack_timeout_s
        self.catch_up()
        report = PassReport(pass_id="")
        for round_no in range(rounds):
            self.nacks = []
            report = self.run_pass()
            missing = self.wait(report.pass_id, timeout, check)
            report.delayed = self.held_back()
            report.nacks = list(self.nacks)
            fatal = [n for n in report.nacks if n[2].startswith("fatal:")]
            if fatal:
                if check is not None:
                    time.sleep(0.2)
                    check()  # a local receiver's own error is the most precise
                target, _path, reason = fatal[0]
                message, _, fix = reason[6:].strip().partition("\nfix: ")
                raise NotConverged(message, fix=fix or "fix the target, then run 'ark files sync' again")
            if missing:
                raise NotConverged(f"targets {', '.join(sorted(missing))} did not acknowledge pass "
                                   f"{report.pass_id[:8]} within {timeout:g} s",
                                   fix="start their receivers ('ark files receive <set> --target NAME')")
            if not report.nacks and not report.busy:
                break
            log.info("round %d left %d refusals and %d busy files; running another pass",
                     round_no + 1, len(report.nacks), len(report.busy))
            if report.busy:
                time.sleep(min(1.0, self.config.horizon_s))
        with self.state.batch():
            self.state.prune_signatures()
        if report.errors:
            listed = "; ".join(f"{p}: {r}" for p, r in report.errors[:10])
            raise SourcePermission(f"{len(report.errors)} source entries could not be read ({listed}); "
                                   "everything else was shipped",
                                   fix="give the sender read access to them (rename names that are not UTF-8), "
                                       "or exclude them in files.<set>.exclude")
        return report

    def close(self) -> None:
        """Flush and release Kafka clients and the state file."""
        self.channel.close()
        self.feedback.close()
        self.delays.close()
        self.state.close()


class _Changed(Exception):
    """The source file changed while its literals were read."""
