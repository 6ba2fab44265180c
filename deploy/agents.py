"""Start and stop Ark agents as child processes (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class AgentProcess:
    """``ark -c CONFIG <args>`` in its own process group, output to a log file.

    ``prefix`` goes before the command, e.g. ``["ip", "netns", "exec", NS]`` to run the agent inside a
    network namespace (it must exec the command, so that signals reach the agent itself).
    """

    def __init__(self, config: Path, args: list[str], log_file: Path, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.config = config
        self.args = args
        self.log_file = log_file
        self.env = {**os.environ, **(env or {})}
        self.prefix = list(prefix or [])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        """Start (or restart) the agent."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "ops", "-c", str(self.config), *self.args],
                                     stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        out.close()
        return self

    @property
    def pid(self) -> int | None:
        """The agent's pid while it runs."""
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the agent finishes its batch), then SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL, no warning: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to exit by itself; its return code, or None if still running."""
        if self.proc is None:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            time.sleep(0.1)
        return None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the agent's log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervised:
    """An agent restarted a second after it exits, as systemd's ``Restart=always`` (``RestartSec=1``) would on
    another host: what the capture of a failover test or benchmark needs (it exits when fenced, then starts again
    and follows the roles)."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent if agent.alive() else agent.start()
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            if not self.agent.alive():
                self.restarts += 1
                self.agent.start()

    def unsupervise(self) -> AgentProcess:
        """Stop restarting the agent and leave it as it is (a benchmark about to kill its host: a restart racing the
        kill would come back on a dead host). The agent, for its caller to reap."""
        self._stop.set()
        self._thread.join(5)
        return self.agent

    def stop(self) -> None:
        self.unsupervise().stop()
