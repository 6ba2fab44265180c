"""What the engine contract suite needs of an engine's test environment: databases and a few SQL statements.

A new engine passes the suite by adding a harness here (and its fixtures in conftest.py): everything else
in tests/contract is engine-neutral and builds the engine's parts through the registry.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import psycopg
import pymysql

from common.config import ArkConfig, parse_config
from deploy.mariadb import MariaDBInstance
from deploy.postgres import PgInstance


class EngineHarness(ABC):
    """One engine's databases for the contract suite (a source and a standby database, fresh per test)."""

    engine: str

    @abstractmethod
    def source(self) -> dict[str, Any]:
        """The settings (a config dict) of a fresh source database, ready for capture."""

    @abstractmethod
    def standby(self) -> dict[str, Any]:
        """The settings (a config dict) of a fresh, empty standby database."""

    @abstractmethod
    def run(self, db: dict[str, Any], *statements: str) -> None:
        """Run statements on a database, each in its own transaction (autocommit)."""

    @abstractmethod
    def run_in_one(self, db: dict[str, Any], statements: Sequence[str], *, commit: bool) -> None:
        """Run statements in ONE transaction, then commit it or roll it back."""

    @abstractmethod
    def tamper(self, db: dict[str, Any], statement: str) -> None:
        """Run ``statement`` on a standby past Ark's read-only guard (to damage it on purpose)."""

    @abstractmethod
    def create_table(self, name: str, *, keyless: bool = False) -> str:
        """DDL of ``name`` (columns id int, v text, amount decimal(12,2), raw bytes); ``keyless``: no unique key,
        rows identified by all their values (the engine's equivalent of REPLICA IDENTITY FULL)."""

    @abstractmethod
    def insert(self, name: str, i: int, v: str) -> str:
        """INSERT (i, v, i / 100 as amount, the bytes of v)."""

    @abstractmethod
    def update(self, name: str, i: int, v: str) -> str:
        """Set v (and raw) of the row(s) with id i."""

    @abstractmethod
    def delete_one(self, name: str, i: int) -> str:
        """Delete ONE row with id i (of a keyless table: one of the identical rows)."""

    @abstractmethod
    def rows(self, db: dict[str, Any], name: str) -> list[tuple[Any, ...]]:
        """(id, v, amount as text, raw bytes) of every row, sorted."""

    @abstractmethod
    def stop_source(self, db: dict[str, Any]) -> float:
        """Shut the source's server down the ordinary way, as a DBA or a service manager does (PostgreSQL:
        ``pg_ctl stop -m fast``; MariaDB: ``mysqladmin shutdown``); the seconds it took. AssertionError when it
        did not finish within 30 s (the server is then stopped the hard way)."""

    @abstractmethod
    def start_source(self, db: dict[str, Any]) -> None:
        """Start the source's server again (no-op when it runs) and wait until it takes connections."""

    def config(self, source: dict[str, Any], standbys: Sequence[dict[str, Any]] = (), group: str = "contract"
               ) -> ArkConfig:
        """A group config over these databases."""
        return parse_config({"group": group, "control_key": {"env": "ARK_CONTROL_KEY"}, "primary": source,
                             "standbys": list(standbys)})


class PostgresHarness(EngineHarness):
    """PostgreSQL: one database per role on the session's two instances."""

    engine = "postgresql"

    def __init__(self, primary: PgInstance, standby: PgInstance, dbname: str) -> None:
        self._primary, self._standby, self._db = primary, standby, dbname

    def _settings(self, name: str, inst: PgInstance) -> dict[str, Any]:
        return {"name": name, "engine": "postgresql", "host": "127.0.0.1", "port": inst.port, "dbname": self._db,
                "user": "postgres"}

    def source(self) -> dict[str, Any]:
        return {**self._settings("primary", self._primary), "tables": ["public.*"], "slot": f"c_{self._db}",
                "publication": f"c_{self._db}"}

    def standby(self) -> dict[str, Any]:
        return self._settings("standby", self._standby)

    def _dsn(self, db: dict[str, Any]) -> str:
        return f"host=127.0.0.1 port={db['port']} dbname={db['dbname']} user=postgres"

    def run(self, db: dict[str, Any], *statements: str) -> None:
        with psycopg.connect(self._dsn(db), autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt)  # type: ignore[arg-type]

    def run_in_one(self, db: dict[str, Any], statements: Sequence[str], *, commit: bool) -> None:
        with psycopg.connect(self._dsn(db)) as conn:
            for stmt in statements:
                conn.execute(stmt)  # type: ignore[arg-type]
            if commit:
                conn.commit()
            else:
                conn.rollback()

    def tamper(self, db: dict[str, Any], statement: str) -> None:
        with psycopg.connect(self._dsn(db), autocommit=True, options="-c default_transaction_read_only=off") as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def create_table(self, name: str, *, keyless: bool = False) -> str:
        key = "" if keyless else " PRIMARY KEY"
        ddl = f"CREATE TABLE {name} (id int{key}, v text, amount numeric(12,2), raw bytea)"
        return ddl + (f"; ALTER TABLE {name} REPLICA IDENTITY FULL" if keyless else "")

    def insert(self, name: str, i: int, v: str) -> str:
        return f"INSERT INTO {name} VALUES ({i}, '{v}', {i} / 100.0, convert_to('{v}', 'UTF8'))"

    def update(self, name: str, i: int, v: str) -> str:
        return f"UPDATE {name} SET v = '{v}', raw = convert_to('{v}', 'UTF8') WHERE id = {i}"

    def delete_one(self, name: str, i: int) -> str:
        return f"DELETE FROM {name} WHERE ctid = (SELECT min(ctid) FROM {name} WHERE id = {i})"

    def rows(self, db: dict[str, Any], name: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self._dsn(db), autocommit=True) as conn:
            return [(r[0], r[1], r[2], bytes(r[3]) if r[3] is not None else None) for r in conn.execute(
                f"SELECT id, v, amount::text, raw FROM {name} ORDER BY id, v").fetchall()]  # type: ignore[arg-type]

    def stop_source(self, db: dict[str, Any]) -> float:
        seconds, error = self._primary.timed_stop("fast", 30)
        if error:
            self._primary.stop("immediate")
            raise AssertionError(error)
        return seconds

    def start_source(self, db: dict[str, Any]) -> None:
        self._primary.start()

    def drop_slot(self) -> None:
        """Drop the capture's slot (a contract test's capture leaves it behind)."""
        self._primary.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                           f"WHERE slot_name = 'c_{self._db}' AND NOT active")


class MariaDBHarness(EngineHarness):
    """MariaDB: two instances of the contract suite's own (``public`` is a database there).

    A fresh source is a fresh binlog: MariaDB has no slot, so a capture without a resume position reads
    from the oldest binlog the server holds, and each test must not see the previous tests' transactions.
    :meth:`reset` therefore drops the databases and runs ``RESET MASTER``, which is why these instances are
    the suite's own and not the session's shared ones.
    """

    engine = "mariadb"

    def __init__(self, primary: MariaDBInstance, standby: MariaDBInstance) -> None:
        self._primary, self._standby = primary, standby

    def reset(self) -> None:
        """Empty both servers (and the primary's binlog); ``public`` exists on the source only."""
        self._primary.sql("DROP DATABASE IF EXISTS public; CREATE DATABASE public CHARACTER SET utf8mb4; "
                          "RESET MASTER")
        self._standby.sql("SET GLOBAL read_only = OFF; DROP DATABASE IF EXISTS public; DROP DATABASE IF EXISTS ark; "
                          "DROP DATABASE IF EXISTS ark_resync")

    def source(self) -> dict[str, Any]:
        return {"name": "primary", "engine": "mariadb", "host": "127.0.0.1", "port": self._primary.port,
                "tables": ["public.*"], "heartbeat_s": 0.05}

    def standby(self) -> dict[str, Any]:
        return {"name": "standby", "engine": "mariadb", "host": "127.0.0.1", "port": self._standby.port}

    def _connect(self, db: dict[str, Any]) -> Any:
        inst = self._primary if db["port"] == self._primary.port else self._standby
        return pymysql.connect(**inst.connect_kwargs(), autocommit=True)  # type: ignore[arg-type]

    def run(self, db: dict[str, Any], *statements: str) -> None:
        conn = self._connect(db)
        try:
            with conn.cursor() as cur:
                for stmt in statements:
                    cur.execute(stmt)
        finally:
            conn.close()

    def run_in_one(self, db: dict[str, Any], statements: Sequence[str], *, commit: bool) -> None:
        conn = self._connect(db)
        try:
            conn.begin()
            with conn.cursor() as cur:
                for stmt in statements:
                    cur.execute(stmt)
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.close()

    def tamper(self, db: dict[str, Any], statement: str) -> None:
        self.run(db, statement)  # root has READ_ONLY ADMIN (SUPER): read_only does not stop it

    def create_table(self, name: str, *, keyless: bool = False) -> str:
        key = "" if keyless else " PRIMARY KEY"
        return f"CREATE TABLE {name} (id int{key}, v text, amount decimal(12,2), raw blob) ENGINE=InnoDB"

    def insert(self, name: str, i: int, v: str) -> str:
        return f"INSERT INTO {name} VALUES ({i}, '{v}', {i} / 100, CAST('{v}' AS BINARY))"

    def update(self, name: str, i: int, v: str) -> str:
        return f"UPDATE {name} SET v = '{v}', raw = CAST('{v}' AS BINARY) WHERE id = {i}"

    def delete_one(self, name: str, i: int) -> str:
        return f"DELETE FROM {name} WHERE id = {i} LIMIT 1"

    def stop_source(self, db: dict[str, Any]) -> float:
        started = time.monotonic()
        try:
            self._primary.stop(timeout=30)  # SIGTERM: what mysqladmin shutdown and the service manager do
        except RuntimeError as exc:
            self._primary.kill9()
            raise AssertionError(str(exc)) from None
        return time.monotonic() - started

    def start_source(self, db: dict[str, Any]) -> None:
        if not self._primary.is_running():
            self._primary.start()

    def rows(self, db: dict[str, Any], name: str) -> list[tuple[Any, ...]]:
        conn = self._connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT id, v, CAST(amount AS CHAR), raw FROM {name} ORDER BY id, v")
                return [(r[0], r[1], r[2], bytes(r[3]) if r[3] is not None else None) for r in cur.fetchall()]
        finally:
            conn.close()
