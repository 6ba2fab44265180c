"""Private MariaDB 10.11 instances (Debian's ``mariadb-server``) in their own data directories.

Each instance has its own data directory, unix socket and free TCP port on 127.0.0.1; no system
service is involved (``--no-defaults`` keeps /etc/mysql out). The server is configured the way Ark's
capture needs a MariaDB primary: binary log in ROW format with full row images and full row
metadata (column names, signedness, primary key in every table-map event), GTID strict mode, a
durable binlog and redo log (``sync_binlog=1``, ``innodb_flush_log_at_trx_commit=1``) so that a
kill -9 loses nothing that was committed.

**Root.** ``mariadbd`` refuses to run as root unless told which user to be. When the caller is root
the data directory is owned by the OS user ``mysql`` (created by the Debian package) and the server
runs with ``--user=mysql``: it drops root before it opens any file, as the packaged service does.

**Clients.** ``root`` connects without a password over the unix socket and over TCP from 127.0.0.1
(``root@127.0.0.1`` is created at :meth:`MariaDBInstance.init`; with ``password`` it needs that
password over TCP). :meth:`MariaDBInstance.sql` runs statements over the socket.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from deploy._proc import alive, kill_quietly, proc_state, read_pid, tail, wait_dead, wait_stopped

__all__ = ["MARIADB_BIN", "MariaDBInstance"]

MARIADB_BIN = Path(os.environ.get("ARK_MARIADB_BIN", "/usr/sbin/mariadbd"))
_INSTALL_DB = os.environ.get("ARK_MARIADB_INSTALL_DB", "mariadb-install-db")
_CLIENT = os.environ.get("ARK_MARIADB_CLIENT", "mariadb")
_OS_USER = "mysql"

_BASE_OPTIONS: dict[str, str | int] = {
    "bind-address": "127.0.0.1",
    "skip-name-resolve": "ON",
    "log-bin": "binlog",  # relative: inside the data directory
    "binlog-format": "ROW",
    "binlog-row-image": "FULL",
    "binlog-row-metadata": "FULL",
    "gtid-strict-mode": "ON",
    "sync-binlog": 1,
    "innodb-flush-log-at-trx-commit": 1,
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_unicode_ci",
    "innodb-buffer-pool-size": "128M",
    "max-connections": 200,
    "max-allowed-packet": "256M",
    "log-warnings": 1,
}


class MariaDBInstance:
    """One MariaDB server in ``datadir`` listening on 127.0.0.1:``port`` (see the module docstring)."""

    def __init__(self, datadir: Path, port: int, server_id: int = 1) -> None:
        """Describe an instance; call :meth:`init` once, then :meth:`start`."""
        self.datadir = Path(datadir).absolute()
        self.port = port
        self.server_id = server_id
        self.password: str | None = None
        self.extra: dict[str, str | int] = {}
        with contextlib.suppress(OSError):
            self.password = (self.datadir / "ark.password").read_text().strip() or None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        """The server's unix socket (inside the data directory)."""
        return self.datadir / "mariadb.sock"

    @property
    def pid_file(self) -> Path:
        """The server's pid file."""
        return self.datadir / "mariadb.pid"

    @property
    def log_file(self) -> Path:
        """The server's error log."""
        return self.datadir / "server.log"

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(_OS_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _user_args(self) -> list[str]:
        return [f"--user={_OS_USER}"] if os.geteuid() == 0 else []

    # -- set-up ------------------------------------------------------------------------------------
    def init(self, extra_options: dict[str, str | int] | None = None, password: str | None = None) -> None:
        """Create the system tables (``mariadb-install-db``) and remember the server options.

        ``extra_options`` override the defaults (e.g. ``{"binlog-row-metadata": "MINIMAL"}``); they
        are kept in ``ark-options`` inside the data directory so that a later :meth:`start` (another
        process) uses them too. ``password`` protects ``root`` over TCP.
        """
        if (self.datadir / "mysql").exists():
            raise RuntimeError(f"{self.datadir} is already initialised")
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.datadir.chmod(0o750)
        self._chown(self.datadir)
        self._make_tmpdir()
        cmd = [_INSTALL_DB, "--no-defaults", f"--datadir={self.datadir}", f"--tmpdir={self.tmpdir}",
               "--auth-root-authentication-method=normal",
               "--skip-test-db", "--skip-name-resolve", *self._user_args()]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")
        if res.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        self.extra = dict(extra_options or {})
        lines = [f"{k}={v}" for k, v in self.extra.items()]
        (self.datadir / "ark-options").write_text("\n".join(lines) + ("\n" if lines else ""))
        self.start()
        try:
            ident = "IDENTIFIED BY '" + password.replace("\\", "\\\\").replace("'", "\\'") + "'" if password else ""
            self.sql(f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' {ident}; "
                     "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; "
                     + (f"ALTER USER 'root'@'127.0.0.1' {ident}; ALTER USER 'root'@'localhost' {ident};"
                        if password else ""))
        finally:
            self.stop()
        self.password = password
        if password:
            pw_file = self.datadir / "ark.password"
            pw_file.write_text(password + "\n")
            pw_file.chmod(0o600)

    @property
    def tmpdir(self) -> Path:
        """The server's own temporary directory, beside the data directory (inside it, it would be a database).
        The default, the shared /tmp, let instances and other programs remove each other's temporary tables
        ("Error on delete of '/tmp/#sql-temptable-...' (Errcode 2)")."""
        return self.datadir.with_name(self.datadir.name + ".tmp")

    def _make_tmpdir(self) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.tmpdir.chmod(0o750)
        self._chown(self.tmpdir)

    def _options(self) -> list[str]:
        extra: dict[str, str | int] = {}
        with contextlib.suppress(OSError):
            for line in (self.datadir / "ark-options").read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    extra[key] = value
        opts = {**_BASE_OPTIONS, "server-id": self.server_id, **extra}
        args = ["--no-defaults", f"--datadir={self.datadir}", f"--tmpdir={self.tmpdir}", f"--socket={self.socket}",
                f"--port={self.port}",
                f"--pid-file={self.pid_file}", f"--log-error={self.log_file}", *self._user_args()]
        return args + [f"--{k}={v}" for k, v in opts.items()]

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The server's pid when it is running, else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        pid = read_pid(self.pid_file)
        return pid if alive(pid) else None

    def is_running(self) -> bool:
        """True when the server process exists (a paused one counts as running)."""
        return self.pid is not None

    def start(self, timeout: float = 60) -> None:
        """Start ``mariadbd`` in the background and wait until it answers (no-op when running)."""
        if self.is_running():
            return
        self._make_tmpdir()  # also for a data directory initialised before it had one
        self._proc = subprocess.Popen([str(MARIADB_BIN), *self._options()], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                      start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"MariaDB on port {self.port} exited ({self._proc.returncode}) while starting:\n"
                                   f"{tail(self.log_file)}")
            if self.socket.exists() and self._ping():
                return
            time.sleep(0.1)
        raise RuntimeError(f"MariaDB on port {self.port} did not start within {timeout:g} s:\n{tail(self.log_file)}")

    def _client_env(self) -> dict[str, str]:
        """The client's environment: root's password, when set, goes there, never on the command line."""
        return {**os.environ, **({"MYSQL_PWD": self.password} if self.password else {})}

    def _ping(self) -> bool:
        res = subprocess.run([_CLIENT, "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", "SELECT 1"],
                             capture_output=True, text=True, check=False, timeout=10, env=self._client_env())
        return res.returncode == 0

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server: ``smart``/``fast`` shut it down cleanly (SIGTERM), ``immediate`` kills it."""
        pid = self.pid
        if pid is None:
            return
        if mode == "immediate":
            self.kill9()
            return
        self.resume()
        kill_quietly(pid, signal.SIGTERM)
        if not wait_dead([pid], timeout, reaped=True):
            raise RuntimeError(f"MariaDB on port {self.port} did not stop within {timeout:g} s")
        self._reap()

    def kill9(self) -> None:
        """SIGKILL the server, as a crash would, and wait until it is gone (crash recovery at next start)."""
        pid = self.pid
        if pid is None:
            return
        kill_quietly(pid, signal.SIGCONT)
        kill_quietly(pid, signal.SIGKILL)
        wait_dead([pid], 15, reaped=True)
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP the server (one process, many threads): connections hang, nothing is lost."""
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"MariaDB on port {self.port} is not running")
        kill_quietly(pid, signal.SIGSTOP)
        wait_stopped(pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT the server."""
        pid = self.pid
        if pid is not None:
            kill_quietly(pid, signal.SIGCONT)
            wait_stopped(pid, stopped=False)

    def is_paused(self) -> bool:
        """True when the server is stopped by a signal."""
        pid = self.pid
        return pid is not None and proc_state(pid) == "T"

    # -- clients -----------------------------------------------------------------------------------
    def connect_kwargs(self, dbname: str | None = None, user: str = "root") -> dict[str, object]:
        """PyMySQL keyword arguments for TCP on 127.0.0.1 (with root's password when set)."""
        kwargs: dict[str, object] = {"host": "127.0.0.1", "port": self.port, "user": user, "charset": "utf8mb4"}
        if dbname:
            kwargs["database"] = dbname
        if self.password and user == "root":
            kwargs["password"] = self.password
        return kwargs

    def sql(self, statements: str, dbname: str | None = None) -> str:
        """Run ``statements`` with the ``mariadb`` client over the socket as root; tab-separated output."""
        cmd = [_CLIENT, "--no-defaults", f"--socket={self.socket}", "-uroot", "--default-character-set=utf8mb4",
               "-N", "-B", "-e", statements]
        if dbname:
            cmd.append(dbname)
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300, env=self._client_env())
        if res.returncode != 0:
            raise RuntimeError(f"mariadb on port {self.port} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def create_database(self, name: str) -> None:
        """Create database (schema) ``name`` (utf8mb4)."""
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists."""
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")

    def destroy(self) -> None:
        """Kill the server and delete the data directory."""
        self.kill9()
        shutil.rmtree(self.datadir, ignore_errors=True)
