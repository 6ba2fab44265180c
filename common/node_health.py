"""The node agent's health checks, and the pure function that turns their results into the node's state.

``ark agent NODE`` (failover/node_agent.py) runs the checks every ``agent.check_interval_s``:

* through its engine's :class:`HealthProbe` (the registry's ``health`` part: PostgreSQL's and MariaDB's): the
  database server's process alive (its pid file, when the data directory is on this host), login and a trivial
  query within ``check_timeout_s``, and on the primary that it accepts writes;
* engine-neutral ones here: the listener accepts a TCP connection, disk free under the data and WAL
  directories, and the services (processes, TCP ports) the node's config names.

:func:`decide` maps the results, the restarts already tried and the roles' say to the state the heartbeat
carries (``healthy``, ``restarting``, ``failed``) and one sentence; nothing in it does I/O, so every case
is a row of a unit-test table (tests/unit/test_node_health.py).
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import psutil

from common.settings import DatabaseSettings, NodeAgentSettings, ServiceSettings

#: What a failed check asks to restart: the database, or a named service ("service:NAME").
DATABASE = "database"
#: A check failure that a restart does not fix (a primary that refuses writes, a disk running full).
NO_RESTART = ""


@dataclass(frozen=True)
class Check:
    """One check's result. ``target`` is what a restart would fix (:data:`DATABASE`, ``service:NAME``, or
    :data:`NO_RESTART`); ``warning``: a failure that is reported but never makes the node failed."""

    name: str
    ok: bool
    detail: str = ""
    target: str = DATABASE
    warning: bool = False


@dataclass(frozen=True)
class Decision:
    """What the agent says and does after one round of checks."""

    state: str
    message: str
    #: The target to restart now (None: nothing to restart this round).
    restart: str | None = None


@dataclass
class RestartBook:
    """Restarts tried per target since the node was last stable, and the failed rounds in a row."""

    tries: dict[str, int] = field(default_factory=dict)
    failing_rounds: int = 0


def _sentence(failed: list[Check]) -> str:
    return "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in failed)


def decide(checks: list[Check], book: RestartBook, settings: NodeAgentSettings, *, hold: str = "",
           restartable: frozenset[str] = frozenset(), previous: str = "healthy") -> Decision:
    """The state after ``checks`` (pure; see the module docstring).

    ``book``: what was tried already (``failing_rounds`` counts this round when a check failed).
    ``hold``: why the database must not be restarted (a handover stopped or fenced it on purpose); said in the
    message instead. ``restartable``: the targets that have a restart command. ``previous``: the state of the
    last round (kept while a failure is not yet confirmed).
    """
    warnings = [c for c in checks if not c.ok and c.warning]
    failed = [c for c in checks if not c.ok and not c.warning]
    tail = f" (warning: {_sentence(warnings)})" if warnings else ""
    if not failed:
        return Decision("healthy", "all checks pass" + tail)
    lasting = [c for c in failed if c.target == NO_RESTART]
    if lasting:
        return Decision("failed", f"{_sentence(lasting)}; a local restart does not fix this" + tail)
    if book.failing_rounds < settings.failures_before_restart:
        kept = previous if previous in ("healthy", "restarting") else "healthy"
        return Decision(kept, f"{_sentence(failed)} (failed {book.failing_rounds} check round(s) in a row; a restart "
                              f"follows {settings.failures_before_restart})" + tail)
    if hold and any(c.target == DATABASE for c in failed):
        return Decision("failed", f"{_sentence(failed)}; not restarted: {hold}" + tail)
    targets = sorted({c.target for c in failed}, key=lambda t: (t != DATABASE, t))
    for target in targets:  # the database first: a service usually fails because its database is down
        why = _sentence([c for c in failed if c.target == target])
        if target not in restartable:
            how = "restart_command" if target == DATABASE else f"restart_command of {target}"
            return Decision("failed", f"{why}; no {how} is configured, so no local restart" + tail)
        done = book.tries.get(target, 0)
        if done >= settings.restart_tries:
            return Decision("failed", f"{why}; {done} local restart(s) of the {target} did not help" + tail)
        return Decision("restarting", f"{why}; restarting the {target}, try {done + 1} of {settings.restart_tries}"
                        + tail, restart=target)
    raise AssertionError("unreachable: a failed check has a target")  # pragma: no cover


def backoff_s(settings: NodeAgentSettings, tries_done: int) -> float:
    """The wait after try ``tries_done`` (1-based) before the next one: the backoff, doubling."""
    return settings.restart_backoff_s * 2 ** max(0, tries_done - 1)


# -- the engine's part ------------------------------------------------------------------------------------
class HealthProbe(ABC):
    """An engine's checks of one of its databases (registry part ``health``); never raises for a database
    that is down: the check says so."""

    @abstractmethod
    def checks(self, *, primary: bool, timeout_s: float) -> list[Check]:
        """The server process (when local), login and a trivial query, and on the primary writability."""

    @abstractmethod
    def directories(self) -> list[str]:
        """The data and WAL directories of the database on this host (those known; for the disk check)."""

    def fence_offline(self, why: str) -> str:
        """Make the database, which is down, start read-only next time (a demoted old primary restarted by hand or
        by its service manager must never take a write before ``ark reinstate``). Returns what was done, '' when the
        engine or this host cannot (no local data directory known)."""
        return ""


# -- engine-neutral checks ----------------------------------------------------------------------------------
def tcp_accepts(host: str, port: int, timeout_s: float) -> str:
    """'' when ``host:port`` accepts a TCP connection within ``timeout_s``, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def listener_check(db: DatabaseSettings, timeout_s: float) -> Check:
    """The database's listener accepts a TCP connection."""
    why = tcp_accepts(db.host, db.port, timeout_s)
    return Check("listener", not why, f"{db.host}:{db.port} {why}" if why else "")


def disk_checks(paths: list[str], min_free_pct: float) -> list[Check]:
    """Free space under each directory (a warning below ``min_free_pct``: a restart frees nothing)."""
    out = []
    for path in dict.fromkeys(paths):
        try:
            usage = psutil.disk_usage(path)
        except OSError as exc:
            out.append(Check(f"disk {path}", False, exc.strerror or str(exc), NO_RESTART, warning=True))
            continue
        free = 100.0 - usage.percent
        ok = free >= min_free_pct
        out.append(Check(f"disk {path}", ok, "" if ok else f"{free:.1f}% free, below {min_free_pct:g}%",
                         NO_RESTART, warning=True))
    return out


def process_running(pattern: str) -> bool:
    """Whether a process whose name or command line contains ``pattern`` runs (zombies do not count)."""
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if proc.pid == os.getpid() or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if pattern in (info.get("name") or "") or pattern in " ".join(info.get("cmdline") or ()):
            return True
    return False


def service_checks(services: tuple[ServiceSettings, ...], timeout_s: float) -> list[Check]:
    """Each configured service's process and port."""
    out = []
    for svc in services:
        target = f"service:{svc.name}"
        if svc.process is not None:
            ok = process_running(svc.process)
            out.append(Check(f"service {svc.name} process", ok, "" if ok else f"no process matches {svc.process!r}",
                             target))
        if svc.port is not None:
            why = tcp_accepts(svc.host, svc.port, timeout_s)
            out.append(Check(f"service {svc.name} port", not why, f"{svc.host}:{svc.port} {why}" if why else "",
                             target))
    return out
