"""MariaDB's :class:`~common.node_health.HealthProbe`: the node agent's look at its database (``ark agent NODE``).

* **process**: the server's pid, read from its pid file, is a live process; only when the data directory is on
  this host. The pid file is the one the server named (``@@pid_file``, remembered from the last answer); before
  the server ever answered, the one ``*.pid`` file in ``agent.data_dir`` (MariaDB's default is
  ``<datadir>/<hostname>.pid``). A clean shutdown removes it, a crash leaves a dead pid behind: both are said.
* **query**: a login and ``SELECT 1`` within the check's timeout (PyMySQL's ``connect_timeout``, whole seconds,
  and ``read_timeout``/``write_timeout``, so a server that accepts the connection but never answers fails too).
* **writable** (the primary only): ``@@read_only`` off, and ``@@super_read_only`` off where the server has it
  (MySQL; MariaDB 10.11 has ``read_only`` only, which already binds every user without READ_ONLY ADMIN).

One short connection per round, closed at once: the agent never keeps an idle session.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import Any

import psutil
import pymysql

from common.config import ArkConfig
from common.monitor import is_local
from common.node_health import DATABASE, NO_RESTART, Check, HealthProbe
from common.settings import DatabaseSettings

_SERVER_FACTS = ("SELECT @@datadir, @@pid_file, @@log_bin_basename, @@read_only, "
                 "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES "
                 "WHERE VARIABLE_NAME = 'SUPER_READ_ONLY')")


class MariaDBHealth(HealthProbe):
    """Checks one MariaDB node (see the module docstring)."""

    def __init__(self, cfg: ArkConfig, db: DatabaseSettings) -> None:
        self.db = db
        self.local = is_local(db.host)
        self.data_dir: str | None = db.agent.data_dir
        self.pid_file: str | None = None
        self.binlog_dir: str | None = db.agent.wal_dir

    def _connect(self, timeout_s: float) -> Any:
        kwargs: dict[str, Any] = dict(self.db.connect_kwargs())  # type: ignore[attr-defined]
        kwargs.update(connect_timeout=max(1, math.ceil(timeout_s)), read_timeout=timeout_s, write_timeout=timeout_s,
                      program_name="ark-agent")
        return pymysql.connect(**kwargs)

    def checks(self, *, primary: bool, timeout_s: float) -> list[Check]:
        out: list[Check] = []
        if self.local and (self.data_dir or self.pid_file):
            out.append(self._process())
        try:
            conn = self._connect(timeout_s)
        except pymysql.err.Error as exc:
            out.append(Check("query", False, f"login failed: {_first_line(exc)}"))
            return out
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
                out.append(Check("query", True))
                cur.execute(_SERVER_FACTS)
                facts = cur.fetchone()
            self._remember(facts)
            if primary:
                out.append(_writable(facts))
        except pymysql.err.Error as exc:
            out.append(Check("query", False, f"SELECT 1 failed: {_first_line(exc)}"))
        finally:
            conn.close()
        return out

    def _remember(self, facts: Any) -> None:
        """Where this server keeps its files, as it says (for the process and disk checks)."""
        if not self.local or facts is None:
            return
        datadir, pid_file, binlog_base = (_text(v) for v in facts[:3])
        if datadir and not self.data_dir:
            self.data_dir = datadir.rstrip("/")
        if pid_file:
            self.pid_file = pid_file if os.path.isabs(pid_file) else os.path.join(self.data_dir or "", pid_file)
        if binlog_base and not self.binlog_dir:
            base = binlog_base if os.path.isabs(binlog_base) else os.path.join(self.data_dir or "", binlog_base)
            self.binlog_dir = os.path.dirname(base)

    def _pid_path(self) -> Path | None:
        if self.pid_file:
            return Path(self.pid_file)
        found = sorted(glob.glob(os.path.join(self.data_dir or "", "*.pid")))
        return Path(found[0]) if len(found) == 1 else None

    def _process(self) -> Check:
        path = self._pid_path()
        if path is None:
            return Check("process", False, f"not running (no pid file in {self.data_dir})")
        try:
            pid = int(path.read_text().split()[0])
        except FileNotFoundError:
            return Check("process", False, f"not running (no {path})")
        except PermissionError:  # the agent runs as another user than the server: the other checks still judge
            return Check("process", True, f"{path} not readable by the agent's user (check skipped)")
        except (OSError, ValueError, IndexError) as exc:
            return Check("process", False, f"{path} unreadable: {exc}")
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return Check("process", False, f"pid {pid} is a zombie")
        except psutil.NoSuchProcess:
            return Check("process", False, f"pid {pid} of {path} is gone (the server crashed)")
        except psutil.Error:
            pass  # another user's process we may not inspect: it exists
        return Check("process", True)

    def directories(self) -> list[str]:
        if not self.local or not self.data_dir:
            return []
        return [self.data_dir] + ([self.binlog_dir] if self.binlog_dir and self.binlog_dir != self.data_dir else [])


def _writable(facts: Any) -> Check:
    read_only, super_read_only = _text(facts[3]), _text(facts[4])
    if read_only in ("1", "ON"):
        return Check("writable", False, "@@read_only is ON (only users with READ_ONLY ADMIN can write), and no "
                     "handover fenced it", NO_RESTART)
    if super_read_only.upper() in ("1", "ON"):
        return Check("writable", False, "@@super_read_only is ON, and no handover fenced it", NO_RESTART)
    return Check("writable", True, target=DATABASE)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _first_line(exc: BaseException) -> str:
    """PyMySQL's (code, text) as one line."""
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        return f"({exc.args[0]}) " + " ".join(str(exc.args[1]).split())
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
