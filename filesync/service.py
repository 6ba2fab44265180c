"""Running a file set: one-shot sync, long-running sender/receiver, watch mode, status and verify.

Roles: the **sender** runs on the source host; each target's **receiver** runs on its host. For a
one-shot ``sync`` (and in ``watch``), receivers of targets whose host is this machine run in the same
process, in threads, so a single command converges a local set; remote targets need their
``ark files receive`` running. A delayed (or paused) target applies each change only after its
delay, so a one-shot ``sync`` neither runs nor waits for its receiver: it needs a long-running
``ark files receive`` (or ``ark files watch``, which runs local receivers of every kind).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ArkConfig
from common.config_files import FileSetConfig
from common.errors import ArkError
from common.kafka import topic_config, topic_exists
from filesync.chunks import hash_file
from filesync.delay import DelayInForce, RetentionProblem, delays_in_force, retention_problems
from filesync.errors import UnknownFileSet
from filesync.plan import Acked, Current, plan_changes
from filesync.receiver import Receiver
from filesync.scanner import Scan, scan
from filesync.sender import PassReport, Progress, Sender
from filesync.state import PassRow
from schemas.topics import files_topic

log = logging.getLogger(__name__)
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", ""}


def file_set(config: ArkConfig, name: str) -> FileSetConfig:
    """The set called ``name`` (UnknownFileSet listing the known ones otherwise)."""
    if name not in config.files:
        known = ", ".join(sorted(config.files)) or "(none)"
        raise UnknownFileSet(f"no file set {name!r} in group {config.group}", fix=f"use one of: {known}")
    return config.files[name]


def state_dir(config: ArkConfig, name: str) -> Path:
    """The local state directory of set ``name``."""
    fs = file_set(config, name)
    return Path(fs.state_dir) if fs.state_dir else Path("/var/lib/ark/files") / config.group / name


def is_local(host: str) -> bool:
    """True when ``host`` names this machine."""
    return host in _LOCAL_NAMES or host in (socket.gethostname(), socket.getfqdn())


class LocalReceivers:
    """Receivers of the set's local targets, each in a thread; :meth:`check` re-raises their failures."""

    def __init__(self, config: ArkConfig, name: str, targets: list[str] | None = None) -> None:
        fs = file_set(config, name)
        wanted = targets if targets is not None else [t.name for t in fs.targets if is_local(t.host)]
        self.receivers = [Receiver(config, name, fs, t, state_dir(config, name)) for t in wanted]
        self.stop = threading.Event()
        self.failures: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(r,), daemon=True, name=f"recv-{r.target}")
                        for r in self.receivers]

    def _run(self, receiver: Receiver) -> None:
        try:
            receiver.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by check()
            self.failures.append(exc)

    def __enter__(self) -> LocalReceivers:
        for thread in self.threads:
            thread.start()
        return self

    def check(self) -> None:
        """Raise the first failure of a receiver thread, if any."""
        if self.failures:
            raise self.failures[0]

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        for receiver in self.receivers:
            receiver.close()


def sync(config: ArkConfig, name: str, *, progress: Progress | None = None, timeout: float | None = None) -> PassReport:
    """One-shot: ship the set once and wait until every target that applies at once acknowledged
    (local ones applied here). Delayed targets get the pass too and apply it after their delay."""
    fs = file_set(config, name)
    sender = Sender(config, name, fs, state_dir(config, name), progress=progress)
    try:
        held = {t for t, _s in sender.held_back()}
        local_now = [t.name for t in fs.targets if is_local(t.host) and t.name not in held]
        with LocalReceivers(config, name, local_now) as local:
            return sender.sync(timeout=timeout, check=local.check)
    finally:
        sender.close()


def receive(config: ArkConfig, name: str, target: str, stop: threading.Event) -> None:
    """Run the receiver of ``target`` until ``stop`` is set."""
    fs = file_set(config, name)
    try:
        fs.target(target)
    except ValueError as exc:
        raise UnknownFileSet(str(exc), fix="pass --target with one of the set's target names") from None
    receiver = Receiver(config, name, fs, target, state_dir(config, name))
    try:
        _warn_retention(config, name, receiver.delays.settings)
        receiver.run(stop)
    finally:
        receiver.close()


def _warn_retention(config: ArkConfig, name: str, delays: dict[str, DelayInForce]) -> None:
    for problem in retention_check(config, name, dict(delays)):
        log.warning("%s (fix: %s)", problem.what, problem.fix)


def serve(config: ArkConfig, name: str, stop: threading.Event, *, watch: bool | None = None,
          local_targets: bool = True, progress: Progress | None = None) -> None:
    """Long-running sender: a pass now, then on file events (``watch``) and on the set's schedule.

    With ``local_targets`` the receivers of targets on this host run here too. ``watch`` None takes
    the set's ``watch:`` setting.
    """
    from filesync.watch import run_sender_loop

    fs = file_set(config, name)
    sender = Sender(config, name, fs, state_dir(config, name), progress=progress)
    local = LocalReceivers(config, name, None if local_targets else [])
    try:
        _warn_retention(config, name, sender.delays.settings)
        with local:
            sender.catch_up()

            def one_pass() -> None:
                local.check()
                sender.sync(timeout=fs.ack_timeout_s, check=local.check)

            run_sender_loop(one_pass, fs, stop, watch=fs.watch if watch is None else watch)
    finally:
        sender.close()


@dataclass
class Difference:
    """One path where a target differs from the source (``warning``: worth knowing, not a failure)."""

    target: str
    path: str
    what: str
    warning: bool = False


@dataclass
class TargetStatus:
    """One target's view: entries it acknowledged, changes in flight and still to ship, its delay,
    and the last pass it applied with that pass's consistency point."""

    target: str
    host: str
    acked: int
    pending: int
    in_flight: int = 0
    delay: DelayInForce = field(default_factory=DelayInForce)
    applied: dict[str, Any] | None = None


@dataclass
class SetStatus:
    """The set: its targets, the sender's last pass, and retention problems of delayed targets."""

    targets: list[TargetStatus]
    last_pass: PassRow | None
    problems: list[RetentionProblem]


def topic_retention_ms(config: ArkConfig, name: str) -> int:
    """The retention.ms of the set's topic: the broker's value when it exists, else the config's."""
    topic = files_topic(config.group, name)
    fs = file_set(config, name)
    try:
        if topic_exists(config.kafka, topic):
            return int(topic_config(config.kafka, topic).get("retention.ms", fs.retention_ms))
    except (ArkError, ValueError) as exc:
        log.warning("cannot read the retention of %s: %s", topic, exc)
    return fs.retention_ms


def retention_check(config: ArkConfig, name: str,
                    delays: dict[str, DelayInForce] | None = None) -> list[RetentionProblem]:
    """Delayed targets of the set whose delay (plus kafka.retention_margin_hours) the topic does not keep."""
    fs = file_set(config, name)
    if delays is None:
        delays = delays_in_force(config, name, fs)
    return retention_problems(name, files_topic(config.group, name), topic_retention_ms(config, name), delays,
                              config.kafka.retention_margin_hours)


def status(config: ArkConfig, name: str) -> SetStatus:
    """Catch up with the acknowledgements and plan (without shipping) for every target."""
    fs = file_set(config, name)
    sender = Sender(config, name, fs, state_dir(config, name))
    try:
        sender.catch_up()
        _scan, _cur, changes, _report, _kept = sender.plan()
        out = []
        for target in fs.targets:
            pending = sum(1 for _c, ts in changes if not ts or target.name in ts)
            applied = sender.state.get(f"applied_pass:{target.name}")
            out.append(TargetStatus(target.name, target.host, len(sender.state.acked(target.name)), pending,
                                    sender.state.pending_count(target.name), sender.delays.of(target.name),
                                    json.loads(applied) if applied else None))
        delays = {t.target: t.delay for t in out}
        return SetStatus(out, sender.state.last_pass(), retention_check(config, name, delays))
    finally:
        sender.close()


#: Allocation may differ this much before verify warns: filesystems place metadata and preallocate
#: differently (ext4 extent blocks, XFS speculative preallocation), which says nothing about sparseness.
ALLOCATION_SLACK_BYTES = 64 << 10


def allocation_differs(source_blocks: int, target_blocks: int) -> bool:
    """True when two allocations (512-byte blocks) differ by more than filesystems' own noise."""
    a, b = source_blocks * 512, target_blocks * 512
    return abs(a - b) > max(ALLOCATION_SLACK_BYTES, max(a, b) // 64)


def verify(config: ArkConfig, name: str) -> list[Difference]:
    """Compare the source with every target; [] when they match.

    Local targets that apply at once: full content hash and every attribute, the set's root
    included, plus a warning where a file's allocation differs (a sparse file that lost its holes).
    Delayed or paused local targets: their files against what they acknowledged (they are behind the
    source on purpose). Remote targets: what they acknowledged against the source.
    """
    fs = file_set(config, name)
    source_scan = scan(fs)
    source = _hashed(source_scan)
    out: list[Difference] = []
    sender = Sender(config, name, fs, state_dir(config, name))
    try:
        sender.catch_up()
        for target in fs.targets:
            local = is_local(target.host) and os.path.isdir(target.path)
            held = sender.delays.of(target.name).holds
            if local and held:
                out += _verify_held(sender, fs, target.name, target.path)
            elif local:
                target_scan = scan(fs, target.path)
                seen = _hashed(target_scan)
                have = {p: Acked(c.meta.kind, c.content_hash, c.meta.digest()) for p, c in seen.items()}
                out += [Difference(target.name, c.path, c.action) for c in plan_changes(have, source)]
                out += _allocation(target.name, source_scan, source, target_scan, seen)
            else:
                have = sender.state.acked(target.name)
                out += [Difference(target.name, c.path, c.action, warning=held) for c in plan_changes(have, source)]
    finally:
        sender.close()
    return out


def _verify_held(sender: Sender, fs: FileSetConfig, target: str, path: str) -> list[Difference]:
    """A delayed target's files against what it acknowledged. A record it applies meanwhile can make
    a path look different: those are compared again after reading the newer acknowledgements."""
    def differing() -> dict[str, str]:
        seen = _hashed(scan(fs, path))
        want = sender.state.acked(target)
        found = {}
        for p in sorted(set(seen) | set(want)):
            have, wanted = seen.get(p), want.get(p)
            if have is None or wanted is None:
                found[p] = "missing" if have is None else "not acknowledged"
            elif (have.meta.kind, have.content_hash, have.meta.digest()) != (wanted.kind, wanted.content_hash,
                                                                              wanted.meta_digest):
                found[p] = "content" if have.content_hash != wanted.content_hash else "meta"
        return found

    first = differing()
    if first:
        sender.catch_up()
        again = differing()
        first = {p: w for p, w in again.items() if p in first}
    in_flight = sender.state.pending_count(target)
    out = [Difference(target, p, f"{w} (against what it acknowledged)") for p, w in sorted(first.items())]
    if in_flight:
        out.append(Difference(target, "", f"delayed: {in_flight} changes shipped, not applied yet", warning=True))
    return out


def _allocation(target: str, source_scan: Scan, source: dict[str, Current], target_scan: Scan,
                seen: dict[str, Current]) -> list[Difference]:
    out = []
    for path, entry in source_scan.entries.items():
        there = target_scan.entries.get(path)
        if entry.meta.kind != "FILE" or there is None or there.meta.kind != "FILE":
            continue
        if seen[path].content_hash != source[path].content_hash:
            continue  # already a content difference
        if allocation_differs(entry.blocks, there.blocks):
            out.append(Difference(target, path, f"allocation: {entry.blocks * 512:,} bytes on the source, "
                                                f"{there.blocks * 512:,} on the target", warning=True))
    return out


def _hashed(result: Scan) -> dict[str, Current]:
    current: dict[str, Current] = {}
    for path, entry in result.entries.items():
        digest = hash_file(os.path.join(result.root, path)) if entry.meta.kind in ("FILE", "HARDLINK") else b""
        current[path] = Current(entry.meta, digest)
    return current
