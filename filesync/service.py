"""Running a file set: one-shot sync, long-running sender/receiver, watch mode, status and verify.

Roles: the **sender** runs on the source host; each target's **receiver** runs on its host. For a
one-shot ``sync`` (and in ``watch``), receivers of targets whose host is this machine run in the same
process, in threads, so a single command converges a local set; remote targets need their
``ark files receive`` running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from common.config import ArkConfig
from common.config_files import FileSetConfig
from filesync.chunks import hash_file
from filesync.errors import UnknownFileSet
from filesync.plan import Acked, Current, plan_changes
from filesync.receiver import Receiver
from filesync.scanner import Scan, scan
from filesync.sender import PassReport, Progress, Sender
from filesync.state import StateDB

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
        self.receivers = [Receiver(config.kafka, config.group, name, fs, t, state_dir(config, name)) for t in wanted]
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
    """One-shot: ship the set once and wait until every target acknowledged (local targets applied here)."""
    fs = file_set(config, name)
    sender = Sender(config.kafka, config.group, name, fs, state_dir(config, name), progress=progress)
    try:
        with LocalReceivers(config, name) as local:
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
    receiver = Receiver(config.kafka, config.group, name, fs, target, state_dir(config, name))
    try:
        receiver.run(stop)
    finally:
        receiver.close()


def serve(config: ArkConfig, name: str, stop: threading.Event, *, watch: bool | None = None,
          local_targets: bool = True, progress: Progress | None = None) -> None:
    """Long-running sender: a pass now, then on file events (``watch``) and on the set's schedule.

    With ``local_targets`` the receivers of targets on this host run here too. ``watch`` None takes
    the set's ``watch:`` setting.
    """
    from filesync.watch import run_sender_loop

    fs = file_set(config, name)
    sender = Sender(config.kafka, config.group, name, fs, state_dir(config, name), progress=progress)
    local = LocalReceivers(config, name, None if local_targets else [])
    try:
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
    """One path where a target differs from the source."""

    target: str
    path: str
    what: str


@dataclass
class TargetStatus:
    """One target's view: entries it acknowledged, changes still to ship to it."""

    target: str
    host: str
    acked: int
    pending: int


def status(config: ArkConfig, name: str) -> list[TargetStatus]:
    """Catch up with the acknowledgements and plan (without shipping) for every target."""
    fs = file_set(config, name)
    sender = Sender(config.kafka, config.group, name, fs, state_dir(config, name))
    try:
        sender.catch_up()
        _scan, _cur, changes, _report, _kept = sender.plan()
        out = []
        for target in fs.targets:
            pending = sum(1 for _c, ts in changes if not ts or target.name in ts)
            out.append(TargetStatus(target.name, target.host, len(sender.state.acked(target.name)), pending))
        return out
    finally:
        sender.close()


def verify(config: ArkConfig, name: str) -> list[Difference]:
    """Compare the source with every local target by full content hash and attributes; [] when equal.

    Remote targets are compared with what they acknowledged.
    """
    fs = file_set(config, name)
    source = _hashed(scan(fs))
    out: list[Difference] = []
    for target in fs.targets:
        if is_local(target.host) and os.path.isdir(target.path):
            seen = _hashed(scan(fs, target.path))
            have = {p: Acked(c.meta.kind, c.content_hash, c.meta.digest()) for p, c in seen.items()}
        else:
            db = StateDB(state_dir(config, name) / "sender.db")
            have = db.acked(target.name)
            db.close()
        for change in plan_changes(have, source):
            out.append(Difference(target.name, change.path, change.action))
    return out


def _hashed(result: Scan) -> dict[str, Current]:
    current: dict[str, Current] = {}
    for path, entry in result.entries.items():
        digest = hash_file(os.path.join(result.root, path)) if entry.meta.kind in ("FILE", "HARDLINK") else b""
        current[path] = Current(entry.meta, digest)
    return current
