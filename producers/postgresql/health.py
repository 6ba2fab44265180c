"""PostgreSQL's :class:`~common.node_health.HealthProbe`: the node agent's look at its database.

* **process**: the postmaster's pid, first line of ``postmaster.pid`` in the data directory, is a live process
  (only when the data directory is on this host: ``agent.data_dir``, or what the server said last time);
* **query**: a login and ``SELECT 1`` within the check's timeout (``connect_timeout`` and ``statement_timeout``);
* **writable** (the primary only): not in recovery and ``SHOW transaction_read_only`` off in a fresh session,
  which is what the fence's ``ALTER DATABASE ... SET default_transaction_read_only`` turns on.

One short connection per round (``application_name`` ark-agent), closed at once: the agent never keeps an idle
session (a smart shutdown waits for every session, and fencing ends client sessions).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import psutil
import psycopg

from common.config import ArkConfig
from common.monitor import is_local
from common.node_health import DATABASE, NO_RESTART, Check, HealthProbe
from common.settings import DatabaseSettings


class PostgresHealth(HealthProbe):
    """Checks one PostgreSQL node (see the module docstring)."""

    def __init__(self, cfg: ArkConfig, db: DatabaseSettings) -> None:
        self.db = db
        self.local = is_local(db.host)
        self.data_dir: str | None = db.agent.data_dir
        self.wal_dir: str | None = db.agent.wal_dir

    def _connect(self, timeout_s: float) -> Any:
        kwargs: dict[str, Any] = dict(self.db.connect_kwargs())  # type: ignore[attr-defined]
        # libpq's connect_timeout is whole seconds, and at least 2 (a smaller value is raised to 2).
        kwargs.update(application_name="ark-agent", connect_timeout=max(2, math.ceil(timeout_s)),
                      options=f"-c statement_timeout={int(timeout_s * 1000)}")
        return psycopg.connect(**kwargs, autocommit=True)

    def checks(self, *, primary: bool, timeout_s: float) -> list[Check]:
        out: list[Check] = []
        if self.local and self.data_dir:
            out.append(self._process())
        try:
            conn = self._connect(timeout_s)
        except psycopg.Error as exc:
            out.append(Check("query", False, f"login failed: {_first_line(exc)}"))
            return out
        try:
            conn.execute("SELECT 1").fetchone()
            out.append(Check("query", True))
            if self.local and not self.data_dir:
                with contextlib.suppress(psycopg.Error):  # superuser or pg_read_all_settings
                    self.data_dir = str(conn.execute("SHOW data_directory").fetchone()[0])
            if primary:
                out.append(self._writable(conn))
        except psycopg.Error as exc:
            out.append(Check("query", False, f"SELECT 1 failed: {_first_line(exc)}"))
        finally:
            conn.close()
        return out

    def _process(self) -> Check:
        pid_file = Path(self.data_dir or "") / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except FileNotFoundError:
            return Check("process", False, f"not running (no {pid_file})")
        except PermissionError:  # the agent runs as another user than the server: the other checks still judge
            return Check("process", True, f"{pid_file} not readable by the agent's user (check skipped)")
        except (OSError, ValueError) as exc:
            return Check("process", False, f"{pid_file} unreadable: {exc}")
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return Check("process", False, f"pid {pid} is a zombie")
        except psutil.NoSuchProcess:
            return Check("process", False, f"pid {pid} of {pid_file} is gone (the server crashed)")
        except psutil.Error:
            pass  # another user's process we may not inspect: it exists
        return Check("process", True)

    def _writable(self, conn: Any) -> Check:
        in_recovery, read_only = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')").fetchone()
        if in_recovery:
            return Check("writable", False, "the primary is in recovery (a physical standby?)", NO_RESTART)
        if str(read_only) == "on":
            return Check("writable", False, "new sessions are read-only (default_transaction_read_only), and no "
                         "handover fenced it", NO_RESTART)
        return Check("writable", True, target=DATABASE)

    #: The line an offline fence adds to postgresql.auto.conf (PostgreSQL reads it at start; ``ALTER SYSTEM RESET``
    #: at the next promotion removes it: producers/postgresql/node_ops.py ``unfence``).
    OFFLINE_FENCE = "default_transaction_read_only = 'on'"

    def fence_offline(self, why: str) -> str:
        if not self.local or not self.data_dir:
            return ""
        data = Path(self.data_dir)
        conf, pid = data / "postgresql.auto.conf", data / "postmaster.pid"
        if not conf.exists() or self._running(pid):
            return ""  # not a data directory; or running (or starting): the online fence is for it
        text = conf.read_text()
        if self.OFFLINE_FENCE not in text.splitlines():
            # PostgreSQL's own file, written while the server is down (as ALTER SYSTEM would): a comment says why.
            conf.write_text(f"{text.rstrip()}\n# ark: {why}\n{self.OFFLINE_FENCE}\n".lstrip("\n"))
        return f"{conf} makes it start read-only"

    @staticmethod
    def _running(pid_file: Path) -> bool:
        """A postmaster runs for this data directory (a pid file left by a crash names no live process)."""
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return psutil.pid_exists(pid)

    def directories(self) -> list[str]:
        if not self.local or not self.data_dir:
            return []
        wal = self.wal_dir or os.path.realpath(os.path.join(self.data_dir, "pg_wal"))
        return [self.data_dir, wal]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
