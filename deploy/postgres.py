"""Private PostgreSQL 15 instances (Debian binaries) in their own data directories, for tests and demos.

PostgreSQL refuses to run as root, so every server-side command runs as the OS user ``postgres``
(``runuser -u postgres``) when the caller is root. The unix socket lives in the data directory; clients
use TCP on 127.0.0.1 (see :meth:`PgInstance.dsn`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from deploy._proc import (
    alive,
    children,
    kill_quietly,
    proc_state,
    read_pid,
    signal_tree,
    tail,
    wait_dead,
    wait_stopped,
)

__all__ = ["PG_BIN", "PgInstance"]

PG_BIN = Path(os.environ.get("ARK_PG_BIN", "/usr/lib/postgresql/15/bin"))
_OS_USER = "postgres"

_BASE_CONF: dict[str, str | int] = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_replication_slots": 10,
    "max_wal_senders": 10,
    "synchronous_commit": "on",
    "fsync": "on",
    "max_connections": 100,
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
}


def _quote(value: str | int | bool) -> str:
    """Render a postgresql.conf value (strings single-quoted)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class PgInstance:
    """One PostgreSQL cluster in ``datadir`` listening on 127.0.0.1:``port``.

    ``netns``: the server runs inside that network namespace (``ip netns exec NETNS`` before ``pg_ctl start``), as
    a database on a host of its own would; ``host`` is then the address clients outside reach it at (the namespace's
    127.0.0.1 is not the caller's). The tests of the service address put each node so (tests/support/netlan.py).
    """

    def __init__(self, datadir: Path, port: int, *, netns: str | None = None, host: str = "127.0.0.1") -> None:
        """Describe an instance; call :meth:`init` once, then :meth:`start`."""
        self.datadir = Path(datadir).absolute()
        self.port = port
        self.netns = netns
        self.host = host
        self.password: str | None = None
        pw_file = self.datadir / "ark.password"
        with contextlib.suppress(OSError):
            self.password = pw_file.read_text().strip() or None

    # -- helpers -----------------------------------------------------------------------------------
    def _as_pg(self, cmd: list[str], check: bool = True, in_netns: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` as the postgres OS user (when root), capturing output; ``in_netns``: inside :attr:`netns`."""
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", _OS_USER, "--", *cmd]
        if in_netns and self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(_OS_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def log_file(self) -> Path:
        """The server's stderr log (``pg_ctl -l``), inside the data directory."""
        return self.datadir / "server.log"

    # -- set-up ------------------------------------------------------------------------------------
    def init(self, extra_conf: dict[str, str | int | bool] | None = None,
             password: str | None = None, extra_listen: tuple[str, ...] = ()) -> None:
        """Run initdb and write the configuration.

        Local (unix socket) connections are trusted. With ``password`` the ``postgres`` superuser gets
        that password and TCP connections need it (scram-sha-256); without one TCP is trusted too.
        ``extra_conf`` overrides the defaults (e.g. ``{"wal_level": "replica"}``). ``extra_listen``: IPv4
        addresses to listen on besides 127.0.0.1; clients from each one's /24 are accepted like local TCP
        clients (the fault suite reaches a standby from a network namespace so).
        """
        if (self.datadir / "PG_VERSION").exists():
            raise RuntimeError(f"{self.datadir} is already initialised")
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.datadir.chmod(0o700)
        self._chown(self.datadir)
        cmd = [str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "postgres", "-E", "UTF8",
               "--locale=C.UTF-8", "--auth-local=trust"]
        pw_path: Path | None = None
        if password:
            fd, name = tempfile.mkstemp(prefix="ark-pw-")
            pw_path = Path(name)
            os.write(fd, (password + "\n").encode())
            os.close(fd)
            pw_path.chmod(0o600)
            self._chown(pw_path)
            cmd += ["--auth-host=scram-sha-256", f"--pwfile={pw_path}"]
        else:
            cmd += ["--auth-host=trust"]
        try:
            self._as_pg(cmd)
        finally:
            if pw_path is not None:
                pw_path.unlink(missing_ok=True)
        conf: dict[str, str | int | bool] = {**_BASE_CONF, "port": self.port,
                                            "unix_socket_directories": str(self.datadir)}
        if extra_listen:
            conf["listen_addresses"] = ",".join(["127.0.0.1", *extra_listen])
            method = "scram-sha-256" if password else "trust"
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                for addr in extra_listen:
                    net = ".".join(addr.split(".")[:3]) + ".0/24"
                    hba.write(f"host all all {net} {method}\n")
                    hba.write(f"host replication all {net} {method}\n")  # a capture reaching it from there
        conf.update(extra_conf or {})
        lines = ["", "# --- written by deploy/postgres.py (later settings win) ---"]
        lines += [f"{key} = {_quote(value)}" for key, value in conf.items()]
        with (self.datadir / "postgresql.conf").open("a") as fh:
            fh.write("\n".join(lines) + "\n")
        self.password = password
        if password:
            pw_file = self.datadir / "ark.password"
            pw_file.write_text(password + "\n")
            pw_file.chmod(0o600)
            self._chown(pw_file)  # pg_basebackup reads every file of the data directory

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The postmaster's pid when it is running, else None."""
        pid = read_pid(self.datadir / "postmaster.pid")
        return pid if alive(pid) else None

    def is_running(self) -> bool:
        """True when the postmaster process exists (a paused one counts as running)."""
        return self.pid is not None

    def start(self, timeout: int = 60) -> None:
        """Start the server with pg_ctl and wait until it accepts connections (no-op when running)."""
        if self.is_running():
            return
        res = self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_file),
                           "-w", "-t", str(timeout), "start"], check=False, in_netns=True)
        if res.returncode != 0:
            raise RuntimeError(f"PostgreSQL on port {self.port} did not start:\n{res.stdout}{res.stderr}\n"
                               f"{tail(self.log_file)}")

    def stop(self, mode: str = "fast", timeout: int = 60) -> float:
        """Stop the server with ``pg_ctl stop -m <mode>`` (smart, fast or immediate); returns the seconds
        ``pg_ctl`` took (0 when not running). RuntimeError when it did not stop within ``timeout``."""
        seconds, error = self.timed_stop(mode, timeout)
        if error:
            raise RuntimeError(error)
        return seconds

    def timed_stop(self, mode: str = "fast", timeout: int = 60) -> tuple[float, str]:
        """``pg_ctl stop -m <mode> -t <timeout>``: (seconds it took, "" or pg_ctl's error); never raises.

        What a DBA or a service manager runs: with ``-w`` pg_ctl returns once the postmaster is gone,
        or gives up after ``timeout`` ("server does not shut down") and leaves the shutdown going on.
        """
        if not self.is_running():
            return 0.0, ""
        self.resume()
        started = time.monotonic()
        res = self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
                           "-t", str(timeout), "stop"], check=False)
        seconds = time.monotonic() - started
        if res.returncode != 0:
            return seconds, f"pg_ctl stop -m {mode} on port {self.port} failed ({res.returncode}) after " \
                            f"{seconds:.1f} s: {(res.stdout + res.stderr).strip()}"
        return seconds, ""

    def restart(self, mode: str = "fast", timeout: int = 60) -> float:
        """Stop (``mode``) and start again, as ``pg_ctl restart`` does; returns the seconds the stop took."""
        seconds = self.stop(mode, timeout)
        self.start(timeout)
        return seconds

    def kill9(self) -> None:
        """SIGKILL the postmaster, as a crash would, and wait until its children have exited too.

        The backends notice the postmaster's death and exit by themselves; the wait makes a following
        :meth:`start` (crash recovery) reliable, since it refuses while old shared memory is in use.
        """
        pid = self.pid
        if pid is None:
            return
        kids = children(pid)
        self.resume()
        kill_quietly(pid, signal.SIGKILL)
        if not wait_dead([pid, *kids], 15, reaped=True):
            for kid in kids:
                kill_quietly(kid, signal.SIGKILL)
            wait_dead([pid, *kids], 5, reaped=True)

    def pause(self) -> None:
        """SIGSTOP the postmaster and its children: connections hang, nothing is lost."""
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"PostgreSQL on port {self.port} is not running")
        signal_tree(pid, signal.SIGSTOP)
        wait_stopped(pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT the postmaster and its children."""
        pid = self.pid
        if pid is not None:
            signal_tree(pid, signal.SIGCONT)
            wait_stopped(pid, stopped=False)

    def is_paused(self) -> bool:
        """True when the postmaster is stopped by a signal."""
        pid = self.pid
        return pid is not None and proc_state(pid) == "T"

    # -- clients -----------------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        """Return a libpq keyword DSN for TCP on :attr:`host` (127.0.0.1 unless the server runs in a network
        namespace), with the superuser password when set."""
        parts = [f"host={self.host} port={self.port} dbname={dbname} user={user}"]
        secret = password if password is not None else (self.password if user == "postgres" else None)
        if secret:
            parts.append("password='" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'")
        return " ".join(parts)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql over the unix socket as superuser; return unaligned, tuples-only output."""
        psql = shutil.which("psql", path=str(PG_BIN)) or "psql"
        cmd = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.datadir),
               "-p", str(self.port), "-U", "postgres", "-d", dbname, "-c", sql]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} failed: {res.stderr.strip()}\nSQL: {sql}")
        return res.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` (with its replication slots and connections); errors are reported, not hidden."""
        self.psql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                  f"WHERE database = '{name}' AND NOT active")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        """Stop the server (immediately) and delete the data directory."""
        with contextlib.suppress(RuntimeError):
            self.stop(mode="immediate")
        self.kill9()
        shutil.rmtree(self.datadir, ignore_errors=True)
