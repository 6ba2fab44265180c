"""Monitoring facts every agent gathers and carries in its heartbeat (schemas/avro/heartbeat.v3.avsc).

One :class:`Monitor` per agent process samples, in its own thread every :data:`SAMPLE_EVERY_S`:

* **the host** (psutil): CPU, memory, swap, load, and disk use of each *relevant* mount (the agent's
  working directory, the database's data directory and log when they are on this host, a file set's
  directories);
* **the database** the agent serves (the primary for a capture, its standby for an applier), through its
  engine's :class:`DatabaseMonitor`: sessions, long-running transactions, lock waits, replication slot
  retained bytes. It opens a fresh connection per sample and closes it at once, so that Ark never holds
  an idle session on a database (a smart shutdown waits for every session);
* **the server log** (the engine's "alert log"): tailed from the file, each PANIC, FATAL and ERROR line
  counted and the recent ones kept, with quoted values redacted (:func:`redact`): row values never
  travel in heartbeats;
* **the processes of the node's services**: the agent itself and, when the database runs on this host,
  its server process (with its number of backends).

A fact that cannot be read is left out and said in :attr:`Facts.notes`; the agent never stops for it.
Metric names (the keys of the heartbeat's ``metrics`` map) are listed in :data:`METRIC_HELP`; the
Prometheus exporter (common/metrics.py), the console and ``ark report`` read them by these names.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from common.config import ArkConfig
    from common.settings import DatabaseSettings

log = logging.getLogger(__name__)

#: Seconds between two samples (heartbeats go out every second and carry the newest sample).
SAMPLE_EVERY_S = 5.0
#: A transaction open longer than this counts as long-running.
LONG_TXN_S = 60.0
#: Recent alert lines kept (and carried in each heartbeat).
RECENT_ALERTS = 20
#: Longest alert line carried, in characters.
ALERT_CHARS = 300
#: At most this much new log is read per sample (a log flood never stalls the agent).
LOG_READ_BYTES = 1 << 20
#: On first open, this much of the log's end is read for its recent alerts (not counted).
LOG_BACKLOG_BYTES = 64 << 10

#: The metrics this module puts in heartbeats, with their meaning (Prometheus help texts).
METRIC_HELP: dict[str, str] = {
    "host.cpu_pct": "CPU use of the host, percent of all cores, since the previous sample",
    "host.mem_used_pct": "memory in use on the host, percent",
    "host.mem_available_bytes": "memory available on the host, bytes",
    "host.swap_used_pct": "swap in use on the host, percent",
    "host.load1": "1-minute load average",
    "host.load5": "5-minute load average",
    "host.load15": "15-minute load average",
    "disk.used_pct@": "disk use of a relevant mount, percent (the mount follows the @)",
    "disk.free_bytes@": "free bytes of a relevant mount (the mount follows the @)",
    "db.up": "1 when the database answered the last sample, else 0",
    "db.sessions": "client sessions on the database server",
    "db.active_sessions": "client sessions running a statement",
    "db.max_connections": "the server's connection limit",
    "db.long_txns": f"transactions open longer than {LONG_TXN_S:g} s",
    "db.oldest_txn_s": "age of the oldest open transaction, seconds",
    "db.lock_waits": "sessions waiting for a lock",
    "db.slots": "replication slots on the server",
    "db.slot_retained_bytes": "log bytes the group's replication slot holds back (the capture's; else the largest)",
    "log.panic": "PANIC lines in the server log since the agent started",
    "log.fatal": "FATAL lines in the server log since the agent started",
    "log.error": "ERROR lines in the server log since the agent started",
    "crc_failures": "redo entries whose CRC did not match (each is read again, then quarantined if still bad)",
    "quarantines": "corrupt entries quarantined (each with a retransmit request)",
    "resyncs": "table resyncs started by this agent",
    "control_refused": "control records refused as not authentic",
    "agent.restarts": "local restarts the node agent ran (database and services) since it started",
    "agent.failed_checks": "node agent checks that failed in its last round (disk warnings included)",
    "agent.failing_rounds": "node agent check rounds in a row with a failure",
    "agent.service_address_held": "1 while the node agent holds the group's service address on this node",
}

#: Process-wide event counters (one agent per process): ``count("crc_failures")`` where it happens.
COUNTERS: Counter[str] = Counter()
_COUNTERS_LOCK = threading.Lock()


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to the process-wide counter ``name`` (carried in the heartbeat's metrics)."""
    with _COUNTERS_LOCK:
        COUNTERS[name] += n


def counters() -> dict[str, float]:
    """A copy of the process-wide counters."""
    with _COUNTERS_LOCK:
        return {k: float(v) for k, v in COUNTERS.items()}


# -- the server log ----------------------------------------------------------------------------------
_SEVERITY = re.compile(r"(?:^|[\s\[])(PANIC|FATAL|ERROR)(?:\]|:)(?=\s|$)")
_REDACTIONS = (
    (re.compile(r"'(?:[^']|'')*'"), "'…'"),            # SQL literals
    (re.compile(r"=\([^)]*\)"), "=(…)"),                 # Key (id)=(42)
    (re.compile(r'(:\s+|near\s+)"[^"]*"'), r'\1"…"'),  # invalid input syntax for type integer: "abc"
)


def redact(line: str) -> str:
    """A log line without the values it may quote (literals, key values, rejected input); names stay."""
    for pattern, repl in _REDACTIONS:
        line = pattern.sub(repl, line)
    line = line.strip()
    return line if len(line) <= ALERT_CHARS else line[:ALERT_CHARS - 1] + "…"


def classify(line: str) -> str | None:
    """``PANIC``, ``FATAL`` or ``ERROR`` when the line reports one (PostgreSQL and MariaDB forms)."""
    found = _SEVERITY.search(line)
    return found.group(1) if found else None


class LogTail:
    """Follows one log file (survives rotation and truncation); counts and keeps its alert lines."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.counts: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def read(self) -> None:
        """Read what was appended since the last call (OSError when the file cannot be read)."""
        st = self.path.stat()
        backlog = False
        if self._inode != st.st_ino or st.st_size < self._offset:  # first open, rotated or truncated
            first = self._inode is None
            self._inode, self._partial = st.st_ino, b""
            self._offset = max(0, st.st_size - LOG_BACKLOG_BYTES) if first else 0
            backlog = first
        if st.st_size <= self._offset:
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read(LOG_READ_BYTES)
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if backlog and self._offset - len(data) > 0 and lines:
            lines.pop(0)  # the backlog starts mid-line
        now_us = time.time_ns() // 1000
        for raw in lines:
            text = raw.decode("utf-8", "replace")
            severity = classify(text)
            if severity is None:
                continue
            if not backlog:
                self.counts[severity] += 1
            self.recent.append({"at_us": now_us, "severity": severity, "source": self.source, "text": redact(text)})


# -- the database --------------------------------------------------------------------------------------
@dataclass
class DbSample:
    """What one look at the database found."""

    #: ``db.*`` metrics (METRIC_HELP names them).
    metrics: dict[str, float] = field(default_factory=dict)
    #: The database server's main process, when it runs on this host.
    server_pid: int | None = None
    #: The server's log file, when known (config ``server_log``, or the server says).
    log_file: str | None = None
    #: The server's data directory, when it is on this host (its mount is watched).
    data_dir: str | None = None
    #: Why something could not be read ('' when all was).
    message: str = ""


class DatabaseMonitor(ABC):
    """An engine's look at one of its databases (see the module docstring); never raises for a database
    that is down: the sample says ``db.up`` 0 and why."""

    @abstractmethod
    def sample(self) -> DbSample:
        """One look: connect, read, disconnect."""


def is_local(host: str) -> bool:
    """Whether ``host`` names this machine (a unix socket, loopback, or one of its addresses or names)."""
    if not host or host.startswith("/") or host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        return False
    return any(a.address == host for addrs in psutil.net_if_addrs().values() for a in addrs)


# -- processes -----------------------------------------------------------------------------------------
class ProcessWatch:
    """One service process, sampled for CPU (between samples), memory, uptime and children."""

    def __init__(self, name: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self._proc: psutil.Process | None = None
        with contextlib.suppress(psutil.Error):
            self._proc = psutil.Process(pid)
            self._proc.cpu_percent(None)

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "pid": self.pid, "running": False, "cpu_pct": 0.0, "rss_bytes": 0,
                               "uptime_s": 0.0, "children": 0}
        proc = self._proc
        if proc is None:
            return out
        try:
            with proc.oneshot():
                out.update(running=proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE,
                           cpu_pct=float(proc.cpu_percent(None)), rss_bytes=int(proc.memory_info().rss),
                           uptime_s=max(0.0, time.time() - proc.create_time()))
            out["children"] = len(proc.children())
        except psutil.Error:
            out["running"] = False
        return out


# -- the host ------------------------------------------------------------------------------------------
def mount_of(path: str | Path) -> str:
    """The mount point holding ``path`` (its nearest existing ancestor's)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    p = p.resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def host_metrics(mounts: set[str]) -> dict[str, float]:
    """``host.*`` and ``disk.*@MOUNT`` metrics now."""
    out: dict[str, float] = {"host.cpu_pct": float(psutil.cpu_percent(None))}
    vm = psutil.virtual_memory()
    out["host.mem_used_pct"], out["host.mem_available_bytes"] = float(vm.percent), float(vm.available)
    with contextlib.suppress(OSError, RuntimeError):
        out["host.swap_used_pct"] = float(psutil.swap_memory().percent)
    with contextlib.suppress(OSError):
        out["host.load1"], out["host.load5"], out["host.load15"] = (float(x) for x in os.getloadavg())
    for mount in sorted(mounts):
        try:
            usage = psutil.disk_usage(mount)
        except OSError:
            continue
        out[f"disk.used_pct@{mount}"], out[f"disk.free_bytes@{mount}"] = float(usage.percent), float(usage.free)
    return out


# -- the monitor ---------------------------------------------------------------------------------------
@dataclass
class Facts:
    """The newest sample: what a heartbeat carries."""

    metrics: dict[str, float] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    #: None: no database is watched; else whether it answered.
    db_up: bool | None = None
    notes: list[str] = field(default_factory=list)


class Monitor:
    """Samples the facts of one agent in a background thread (see the module docstring)."""

    def __init__(self, agent: str, *, database: DatabaseMonitor | None = None, server_log: Path | None = None,
                 node: str = "", paths: tuple[str, ...] = (), every_s: float = SAMPLE_EVERY_S) -> None:
        self.agent = agent
        self.node = node
        self._database = database
        self._configured_log = server_log
        self._paths = (os.getcwd(), *paths)
        self._every_s = every_s
        self._tail: LogTail | None = None
        self._self = ProcessWatch(f"ark-{agent}", os.getpid())
        self._server: ProcessWatch | None = None
        self._facts = Facts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        psutil.cpu_percent(None)  # the first call only starts the measure

    def start(self) -> None:
        """Sample now and then every ``every_s`` seconds, in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name=f"monitor-{self.agent}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def latest(self) -> Facts:
        """The newest sample (empty before the first one)."""
        with self._lock:
            f = self._facts
            return Facts(dict(f.metrics), list(f.alerts), list(f.processes), f.db_up, list(f.notes))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                facts = self.sample()
                with self._lock:
                    self._facts = facts
            except Exception as exc:  # noqa: BLE001 - loop boundary: monitoring must never stop an agent
                log.warning("monitoring sample failed: %s", exc)
            self._stop.wait(self._every_s)

    def sample(self) -> Facts:
        """One sample of everything (normally called by the thread)."""
        facts = Facts()
        mounts = {mount_of(p) for p in self._paths}
        log_file = str(self._configured_log) if self._configured_log else None
        if self._database is not None:
            db = self._database.sample()
            facts.metrics.update(db.metrics)
            facts.db_up = bool(db.metrics.get("db.up", 0.0))
            if db.message:
                facts.notes.append(db.message)
            log_file = log_file or db.log_file
            if db.data_dir:
                mounts.add(mount_of(db.data_dir))
            if db.server_pid is not None and (self._server is None or self._server.pid != db.server_pid):
                self._server = ProcessWatch(_process_name(db.server_pid), db.server_pid)
        if log_file:
            mounts.add(mount_of(log_file))
            self._read_log(Path(log_file), facts)
        elif self._database is not None:
            facts.notes.append("server log: not known (set server_log: in the database's config block)")
        facts.metrics.update(host_metrics(mounts))
        facts.processes = [w.sample() for w in (self._self, self._server) if w is not None]
        return facts

    def _read_log(self, path: Path, facts: Facts) -> None:
        if self._tail is None or self._tail.path != path:
            self._tail = LogTail(path, f"{self.node} {path.name}".strip())
        try:
            self._tail.read()
        except OSError as exc:
            facts.notes.append(f"server log {path}: {exc.strerror or exc}")
            return
        for severity in ("PANIC", "FATAL", "ERROR"):
            facts.metrics[f"log.{severity.lower()}"] = float(self._tail.counts[severity])
        facts.alerts = list(self._tail.recent)


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "database"


def monitor_for(cfg: ArkConfig, kind: str, name: str) -> Monitor:
    """The monitor of one agent: a capture watches the primary, an applier its standby, a node agent its node,
    a file set its directories (the database part comes from the engine registry's ``monitor``)."""
    from common.engines import engine, load

    db: DatabaseSettings | None = None
    paths: tuple[str, ...] = ()
    if kind == "capture":
        db = cfg.primary
    elif kind == "apply":
        db = next((s for s in cfg.standbys if s.name == name), None)
    elif kind == "node":  # the node agent watches its own database, whatever its role
        db = next((n for n in (cfg.primary, *cfg.standbys) if n.name == name), None)
    elif kind == "filesync":
        fs = cfg.files.get(name.split("/", 1)[0])
        if fs is not None:
            paths = (fs.source.path, *(t.path for t in fs.targets))
    database: DatabaseMonitor | None = None
    if db is not None:
        spec = engine(db.engine)
        if spec.monitor:
            database = load(spec.monitor)(cfg, db)
    server_log = getattr(db, "server_log", None) if db is not None else None
    return Monitor(kind, database=database, server_log=Path(server_log) if server_log else None,
                   node=db.name if db is not None else name, paths=paths)
