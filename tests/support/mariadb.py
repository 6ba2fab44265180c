"""A MariaDB replication group for one test: config, real ``ark`` agents, a bank workload, row comparison."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import yaml

from deploy.agents import AgentProcess
from deploy.mariadb import MariaDBInstance

ROOT = Path(__file__).resolve().parents[2]


def connect(inst: MariaDBInstance, **extra: Any) -> Any:
    """An autocommit PyMySQL connection to ``inst`` as root (UTC session)."""
    return pymysql.connect(**inst.connect_kwargs(), autocommit=True, init_command="SET time_zone = '+00:00'",
                           **extra)


def query(inst: MariaDBInstance, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of one statement (text values: every column as MariaDB prints it)."""
    conv = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}
    conn = connect(inst, conv=conv)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def table_rows(inst: MariaDBInstance, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``schema.table`` ordered by all its columns (text values)."""
    schema, name = table.split(".", 1)
    cols = [r[0] for r in query(inst, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                                      "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (schema, name))]
    listed = ", ".join(f"`{c}`" for c in sorted(cols))
    return query(inst, f"SELECT {listed} FROM `{schema}`.`{name}` ORDER BY {listed}")


@dataclass
class MariaDBGroup:
    """A MariaDB primary and one MariaDB standby replicated by Ark through Kafka."""

    name: str
    workdir: Path
    kafka: str
    primary: MariaDBInstance
    standby: MariaDBInstance
    schema: str
    agents: list[AgentProcess] = field(default_factory=list)

    @property
    def config(self) -> Path:
        """Path of the group's YAML file."""
        return self.workdir / f"{self.name}.yaml"

    def write_config(self, **standby_extra: Any) -> Path:
        """Write the YAML."""
        doc = {
            "group": self.name,
            "control_key": {"env": "ARK_CONTROL_KEY"},
            "kafka": {"bootstrap": self.kafka},
            "primary": {"name": "primary", "engine": "mariadb", "host": "127.0.0.1", "port": self.primary.port,
                        "tables": [f"{self.schema}.*"], "heartbeat_s": 0.05},
            "capture": {"batch_max_ms": 50},
            "standbys": [{"name": "standby", "engine": "mariadb", "host": "127.0.0.1", "port": self.standby.port,
                          **standby_extra}],
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.config

    def ark(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``ark -c CONFIG args`` to completion."""
        return subprocess.run([sys.executable, "-m", "ops", "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT, env={**os.environ}, check=False)

    def ark_ok(self, *args: str, timeout: float = 300) -> str:
        """Run ``ark`` and fail with its output unless it exits 0."""
        res = self.ark(*args, timeout=timeout)
        assert res.returncode == 0, f"ark {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def start(self, *args: str) -> AgentProcess:
        """Start an agent (``capture`` or ``apply standby``) as a child process."""
        agent = AgentProcess(self.config, list(args), self.workdir / "logs" / f"{'-'.join(args)}.log").start()
        self.agents.append(agent)
        return agent

    def stop_all(self) -> None:
        """Stop every agent."""
        for agent in self.agents:
            agent.stop()

    def assert_agents_alive(self) -> None:
        """Fail with the agent's log when an agent exited by itself."""
        for agent in self.agents:
            if agent.proc is not None and not agent.alive() and agent.proc.returncode not in (0, -15, -9):
                raise AssertionError(f"agent {agent.args} exited {agent.proc.returncode}:\n{agent.tail(40)}")

    def differences(self, tables: list[str]) -> dict[str, str]:
        """Tables whose rows differ between primary and standby (with row counts), empty when equal."""
        out = {}
        for table in tables:
            want, got = table_rows(self.primary, table), table_rows(self.standby, table)
            if want != got:
                out[table] = f"primary {len(want)} rows, standby {len(got)} rows"
        return out

    def wait_equal(self, tables: list[str], timeout: float = 120) -> dict[str, str]:
        """Wait until the tables are equal; the last differences (empty on success)."""
        deadline = time.monotonic() + timeout
        diffs = self.differences(tables)
        while diffs and time.monotonic() < deadline:
            self.assert_agents_alive()
            time.sleep(0.5)
            diffs = self.differences(tables)
        return diffs


def create_bank(inst: MariaDBInstance, schema: str, accounts: int) -> Decimal:
    """Accounts with 1000.00 each and an empty history; returns the invariant total."""
    rows = ", ".join(f"({i}, 1000.00)" for i in range(1, accounts + 1))
    inst.sql(f"CREATE TABLE `{schema}`.accounts (id int PRIMARY KEY, balance decimal(14,2) NOT NULL); "
             f"CREATE TABLE `{schema}`.history (id bigint AUTO_INCREMENT PRIMARY KEY, src int NOT NULL, "
             f"dst int NOT NULL, amount decimal(14,2) NOT NULL, at datetime(6) NOT NULL); "
             f"INSERT INTO `{schema}`.accounts VALUES {rows}")
    return Decimal(1000) * accounts


def total_balance(inst: MariaDBInstance, schema: str) -> Decimal:
    """The sum of all balances, read in one statement (a consistent snapshot)."""
    return Decimal(query(inst, f"SELECT COALESCE(SUM(balance), 0) FROM `{schema}`.accounts")[0][0])


class BankWorkload:
    """Concurrent transfers (two updates and a history row per transaction) on the primary."""

    def __init__(self, inst: MariaDBInstance, schema: str, accounts: int, clients: int = 2) -> None:
        self.inst, self.schema, self.accounts, self.clients = inst, schema, accounts, clients
        self.committed = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self, seed: int) -> None:
        rnd = random.Random(seed)
        conn = connect(self.inst)
        conn.autocommit(False)
        s = self.schema
        while not self._stop.is_set():
            a, b = rnd.sample(range(1, self.accounts + 1), 2)
            amount = Decimal(rnd.randint(1, 10000)) / 100
            try:
                with conn.cursor() as cur:
                    cur.execute(f"UPDATE `{s}`.accounts SET balance = balance - %s WHERE id = %s", (amount, a))
                    cur.execute(f"UPDATE `{s}`.accounts SET balance = balance + %s WHERE id = %s", (amount, b))
                    cur.execute(f"INSERT INTO `{s}`.history (src, dst, amount, at) VALUES (%s, %s, %s, NOW(6))",
                                (a, b, amount))
                conn.commit()
                with self._lock:
                    self.committed += 1
            except pymysql.err.OperationalError as exc:
                conn.rollback()
                if exc.args[0] not in (1213, 1205):  # deadlocks between clients are retried
                    with self._lock:
                        self.errors += 1
        conn.close()

    def start(self) -> BankWorkload:
        """Start the client threads."""
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> int:
        """Stop and join; the number of committed transfers."""
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return self.committed
