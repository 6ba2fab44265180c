"""A replication group for one test: config file, agents as real processes, and checkers.

Everything runs for real: ``ark`` subprocesses against the session's Kafka broker and PostgreSQL
instances. Checkers compare primary and standby row by row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from deploy.agents import AgentProcess
from deploy.compare import TableDiff, compare_tables
from deploy.postgres import PgInstance

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Standby:
    """One standby of the test group."""

    name: str
    instance: PgInstance
    dbname: str
    delay_seconds: float = 0.0

    @property
    def dsn(self) -> str:
        """DSN of the standby database."""
        return self.instance.dsn(self.dbname)


@dataclass
class Group:
    """A replication group: primary database, standbys, config, and agent processes."""

    name: str
    workdir: Path
    kafka: str
    primary: PgInstance
    dbname: str
    standbys: list[Standby]
    tables: tuple[str, ...] = ("public.*",)
    capture_extra: dict[str, Any] = field(default_factory=dict)
    standby_extra: dict[str, Any] = field(default_factory=dict)
    primary_extra: dict[str, Any] = field(default_factory=dict)
    agents: list[AgentProcess] = field(default_factory=list)

    @property
    def config(self) -> Path:
        """Path of the group's YAML file."""
        return self.workdir / f"{self.name}.yaml"

    @property
    def primary_dsn(self) -> str:
        """DSN of the primary database."""
        return self.primary.dsn(self.dbname)

    def write_config(self, **overrides: Any) -> Path:
        """Write the YAML (``overrides`` merge into the top level)."""
        def db(name: str, inst: PgInstance, dbname: str, **extra: Any) -> dict[str, Any]:
            return {"name": name, "engine": "postgresql", "host": "127.0.0.1", "port": inst.port, "dbname": dbname,
                    "user": "postgres",
                    **extra}

        doc: dict[str, Any] = {
            "group": self.name,
            "control_key": {"env": "ARK_CONTROL_KEY"},
            "kafka": {"bootstrap": self.kafka},
            "primary": db("primary", self.primary, self.dbname, tables=list(self.tables), **self.primary_extra),
            "capture": {"batch_max_ms": 50, **self.capture_extra},
            "standbys": [db(s.name, s.instance, s.dbname, delay_seconds=s.delay_seconds, **self.standby_extra)
                         for s in self.standbys],
        }
        doc.update(overrides)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.config

    def ark(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None,
            config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``ark -c CONFIG args`` to completion; output captured."""
        return subprocess.run([sys.executable, "-m", "ops", "-c", str(config or self.config), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, **(env or {})}, check=False)

    def ark_ok(self, *args: str, timeout: float = 300) -> str:
        """Run ``ark`` and fail with its output unless it exits 0."""
        res = self.ark(*args, timeout=timeout)
        assert res.returncode == 0, f"ark {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def start(self, *args: str, name: str | None = None, config: Path | None = None,
              prefix: list[str] | None = None) -> AgentProcess:
        """Start an agent (``capture`` or ``apply NAME``) as a child process.

        ``config`` replaces the group's YAML file; ``prefix`` goes before the command (a network namespace).
        """
        label = name or "-".join(args)
        agent = AgentProcess(config or self.config, list(args), self.workdir / "logs" / f"{label}.log",
                             prefix=prefix).start()
        self.agents.append(agent)
        return agent

    def stop_all(self) -> None:
        """Stop every agent this group started."""
        for agent in self.agents:
            agent.stop()

    def standby(self, name: str) -> Standby:
        """The standby called ``name``."""
        return next(s for s in self.standbys if s.name == name)

    def diffs(self, standby: str, tables: list[str]) -> list[TableDiff]:
        """Row-by-row differences."""
        return compare_tables(self.primary_dsn, self.standby(standby).dsn, tables)

    def wait_equal(self, standby: str, tables: list[str], timeout: float = 90) -> list[TableDiff]:
        """Wait until the tables are equal on ``standby``; returns the last diffs (all equal on success)."""
        deadline = time.monotonic() + timeout
        diffs = self.diffs(standby, tables)
        while time.monotonic() < deadline and not all(d.equal for d in diffs):
            self.assert_agents_alive()
            time.sleep(0.5)
            diffs = self.diffs(standby, tables)
        return diffs

    def assert_agents_alive(self) -> None:
        """Fail with the agent's log when an agent exited."""
        for agent in self.agents:
            if agent.proc is not None and not agent.alive() and agent.proc.returncode not in (0, -15, -9):
                raise AssertionError(f"agent {agent.args} exited {agent.proc.returncode}:\n{agent.tail(40)}")


def sql(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement in autocommit; rows if any."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll until ``predicate()`` or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


TICK_TABLE = "public.ark_tick"


def create_tick_table(dsn: str) -> None:
    """The table :func:`ticking` writes to; create it before the sync, like any replicated table."""
    sql(dsn, f"CREATE TABLE IF NOT EXISTS {TICK_TABLE} (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")


@contextmanager
def ticking(dsn: str, every_s: float = 0.2) -> Iterator[None]:
    """Commit one row to :data:`TICK_TABLE` every ``every_s`` while the block runs.

    A source with commits gives the capture a new position at once; an idle one only with the capture's next
    checkpoint (every 10 s). What waits for the stream to pass a position (verify's hold, a table resync's
    floor) therefore waits up to 10 s on an idle source, which is not what a test of it is about.
    """
    stop = threading.Event()

    def tick() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.wait(every_s):
                conn.execute(f"INSERT INTO {TICK_TABLE} DEFAULT VALUES")

    thread = threading.Thread(target=tick, name="tick", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
