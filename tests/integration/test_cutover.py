"""``ark cutover``: a MariaDB primary under a writer migrates to a PostgreSQL standby (README "Migrating MariaDB →
PostgreSQL").

Real Kafka, real ``ark sync``/``capture``/``apply`` processes, an application user of its own on MariaDB (no
READ_ONLY ADMIN, so the fence stops it). Checked:

- a refusal first: a row changed by hand on the standby makes the cutover's verify fail; the source is writable
  again (the writer's next commits succeed on it) and the command says so, exit 41;
- the cutover proper: writes on MariaDB stop (the writer gets read-only errors), every acknowledged insert is on
  PostgreSQL, both tables equal row by row (compared here with the drivers, apart from the cutover's own
  cross-engine verify), the application's next INSERT on PostgreSQL leaving the id out works (the
  AUTO_INCREMENT column became an identity past the highest id), and the write downtime is printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import yaml

from common.config import load_config
from deploy.agents import AgentProcess
from deploy.mariadb import MariaDBInstance
from ops.status import latest_beats
from tests.support.mariadb import connect as mconnect

ROOT = Path(__file__).resolve().parents[2]
APP_USER, APP_PASSWORD = "shop_app", "shop-app-pw"


class Writer:
    """The application: inserts orders (the id left out) as its own user; remembers each acknowledged id."""

    def __init__(self, inst: MariaDBInstance, schema: str) -> None:
        self.inst, self.schema = inst, schema
        self.acked: list[int] = []
        self.errors: Counter[int] = Counter()
        self.last_ack = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutover-writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _connect(self) -> Any:
        return pymysql.connect(**{**self.inst.connect_kwargs(), "user": APP_USER, "password": APP_PASSWORD},
                               connect_timeout=2, read_timeout=10, write_timeout=10,
                               init_command="SET time_zone = '+00:00'")

    def _run(self) -> None:
        conn = None
        n = 0
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self._connect()
                n += 1
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO `{self.schema}`.orders (ref, amount, note, at, flag) VALUES "
                                "(%s, %s, %s, UTC_TIMESTAMP(6), %s)", (n, f"{n % 1000}.{n % 100:02d}", f"n°{n} ✓",
                                                                       n % 2))
                    new_id = int(cur.lastrowid)
                conn.commit()
                self.acked.append(new_id)
                self.last_ack = time.monotonic()
            except pymysql.err.Error as exc:
                self.errors[exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1] += 1
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()


def _wait(what: str, done: Any, timeout: float, agents: list[AgentProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for agent in agents:
            if agent.proc is not None and not agent.alive():
                raise AssertionError(f"agent {agent.args} exited {agent.proc.returncode}:\n{agent.tail(40)}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _pg(dsn: str, statement: str, params: Any = None, options: str = "") -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC " + options) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _maria(inst: MariaDBInstance, statement: str) -> list[tuple[Any, ...]]:
    conn = mconnect(inst)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def _read_only(inst: MariaDBInstance) -> bool:
    return str(_maria(inst, "SELECT @@global.read_only")[0][0]) in ("1", "ON")


def test_cutover_mariadb_to_postgresql(fresh_db, fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    schema, primary, dsn = fresh_mariadb.name, fresh_mariadb.primary, fresh_db.standby_dsn
    primary.sql(f"CREATE TABLE `{schema}`.orders (id bigint AUTO_INCREMENT PRIMARY KEY, ref int NOT NULL, "
                f"amount decimal(12,2), note varchar(40), at datetime(6), flag tinyint(1)) ENGINE=InnoDB; "
                f"CREATE TABLE `{schema}`.bag (k int, v varchar(10)) ENGINE=InnoDB; "
                f"INSERT INTO `{schema}`.bag VALUES (1, 'a'), (1, 'a'), (2, 'b')")
    for host in ("'%'", "'localhost'"):
        primary.sql(f"CREATE USER IF NOT EXISTS {APP_USER}@{host} IDENTIFIED BY '{APP_PASSWORD}'; "
                    f"GRANT ALL ON `{schema}`.* TO {APP_USER}@{host}")
    workdir = ark_tmp / "groups" / unique_group
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{unique_group}.yaml"
    config.write_text(yaml.safe_dump({
        "group": unique_group, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": kafka_bootstrap},
        "primary": {"name": "shop_maria", "engine": "mariadb", "host": "127.0.0.1", "port": primary.port,
                    "tables": [f"{schema}.*"], "heartbeat_s": 0.1},
        "capture": {"batch_max_ms": 50},
        "standbys": [{"name": "shop_pg", "engine": "postgresql", "host": "127.0.0.1", "port": fresh_db.standby.port,
                      "dbname": fresh_db.name, "user": "postgres"}]}, sort_keys=False))

    def ark(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops", "-c", str(config), *args], capture_output=True, text=True,
                              timeout=600, cwd=ROOT, env={**os.environ}, check=False)

    agents: list[AgentProcess] = []
    writer = Writer(primary, schema)
    try:
        writer.start()
        _wait("the writer's first commits", lambda: len(writer.acked) >= 50, 60, agents)
        res = ark("sync", "shop_pg")
        assert res.returncode == 0, res.stdout + res.stderr
        for args in (["capture"], ["apply", "shop_pg"]):
            agents.append(AgentProcess(config, args, workdir / "logs" / f"{'-'.join(args)}.log").start())

        def pg_has(n: int) -> bool:
            return _pg(dsn, f"SELECT count(*) FROM {schema}.orders")[0][0] >= n

        _wait("the standby streaming", lambda: pg_has(len(writer.acked) + 0) and len(writer.acked) > 200, 180, agents)

        # -- ark verify across engines, while both run ------------------------------------------------------
        res = ark("verify", "shop_pg")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"{schema}.orders: " in res.stdout and "verdict: equal" in res.stdout, res.stdout

        # -- refused: the target is behind (paused): nothing changes ------------------------------------------
        assert ark("pause", "shop_pg").returncode == 0
        cfg = load_config(config)
        _wait("the applier's heartbeat saying paused",
              lambda: (latest_beats(cfg, window_s=10).get(("apply", "shop_pg")) or {}).get("state") == "paused", 60,
              agents)
        res = ark("cutover", "shop_pg", "--grace", "1")
        assert res.returncode == 41 and "shop_pg is paused: nothing was changed" in res.stderr, res.stderr
        assert "fenced" not in res.stderr and not _read_only(primary)
        assert ark("resume", "shop_pg").returncode == 0

        # -- refused: the standby diverged (a row changed by hand): verify fails, the source is writable again ----
        first = writer.acked[0]
        with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=off") as conn:
            note = conn.execute(f"SELECT note FROM {schema}.orders WHERE id = %s", [first]).fetchone()[0]  # type: ignore[index]
            conn.execute(f"UPDATE {schema}.orders SET note = 'changed by hand' WHERE id = %s", [first])
        res = ark("verify", "shop_pg")
        assert res.returncode == 11, res.stdout + res.stderr
        assert re.search(rf"hash partition \d+/\d+: .*different: {first}\b", res.stdout), res.stdout
        assert "changed by hand" not in res.stdout + res.stderr
        res = ark("verify", "shop_pg", "--repair")
        assert res.returncode != 0 and "within one engine only" in res.stderr, res.stderr
        res = ark("cutover", "shop_pg", "--grace", "1")
        assert res.returncode == 41, res.stdout + res.stderr
        assert f"{schema}.orders (different)" in res.stderr and "shop_maria is writable again" in res.stderr, res.stderr
        assert "changed by hand" not in res.stdout + res.stderr  # values never in output
        assert not _read_only(primary)
        acked_before = len(writer.acked)
        _wait("the writer going on on MariaDB after the refusal", lambda: len(writer.acked) >= acked_before + 50, 60,
              agents)
        with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=off") as conn:
            conn.execute(f"UPDATE {schema}.orders SET note = %s WHERE id = %s", [note, first])

        # -- the cutover --------------------------------------------------------------------------------------
        started = time.monotonic()
        res = ark("cutover", "shop_pg", "--grace", "1")
        took = time.monotonic() - started
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        m = re.search(r"write downtime: ([0-9.]+) s", res.stdout)
        assert m, out
        downtime = float(m[1])
        print(f"cutover took {took:.1f} s; write downtime reported {downtime:.3f} s; writer errors "
              f"{dict(writer.errors)}\n{res.stderr}\n{res.stdout}")
        assert 0 < downtime < took
        assert _read_only(primary)
        acked_at_cutover = len(writer.acked)
        _wait("the writer refused on the fenced MariaDB", lambda: sum(writer.errors.values()) >= 3, 30, agents)
        writer.stop()
        assert len(writer.acked) == acked_at_cutover, "a write was acknowledged on the fenced source"
        assert writer.errors[1290] > 0, dict(writer.errors)  # ER_OPTION_PREVENTS_STATEMENT: read-only

        # Every acknowledged insert is on PostgreSQL, and the tables are equal row by row.
        on_pg = {r[0] for r in _pg(dsn, f"SELECT id FROM {schema}.orders")}
        assert set(writer.acked) <= on_pg, sorted(set(writer.acked) - on_pg)[:10]
        maria_rows = _maria(primary, f"SELECT id, ref, amount, note, at, flag FROM `{schema}`.orders ORDER BY id")
        pg_rows = _pg(dsn, f"SELECT id, ref, amount, note, at, flag FROM {schema}.orders ORDER BY id")
        assert len(maria_rows) == len(pg_rows) > 250
        assert [tuple(r) for r in maria_rows] == [tuple(r) for r in pg_rows]
        assert sorted(_maria(primary, f"SELECT k, v FROM `{schema}`.bag")) == \
            sorted(_pg(dsn, f"SELECT k, v FROM {schema}.bag"))

        # The application's next INSERT on PostgreSQL, leaving the id out, works and follows the highest id.
        top = max(r[0] for r in maria_rows)
        (new_id,), = _pg(dsn, f"INSERT INTO {schema}.orders (ref, note) VALUES (1, 'first on PostgreSQL') "
                              "RETURNING id")
        assert new_id > top
        assert "point the application at shop_pg" in res.stdout
    finally:
        writer.stop()
        for agent in agents:
            agent.stop()


PG_TYPES = """
CREATE TABLE {s}.items (id serial PRIMARY KEY, small smallint, big bigint, num numeric(12,2), r real,
  d double precision, b boolean, s text, vc varchar(20), by bytea, dt date, ts timestamp(6), tz timestamptz,
  u uuid, j jsonb, iv interval, bits bit(5), arr int[]);
CREATE TABLE {s}.bag (k int, v text);
ALTER TABLE {s}.bag REPLICA IDENTITY FULL;
INSERT INTO {s}.bag VALUES (1, 'a'), (1, 'a'), (2, 'A');
"""
PG_ITEM = ("(-32768, 9223372036854775807, -1234567890.12, 1.1, -1.7976931348623157e308, true, 'héllo ''q'' 😀 {i}', "
           "'Abc ', '\\x00ff'::bytea, '0001-01-01', '2024-02-29 23:59:59.5', '2038-01-19 03:14:08.25+02', "
           "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"b\": [1, 2.5], \"a\": null}}', "
           "'1 year 2 mons 3 days 04:05:06', B'10101', '{{1,2,3}}')")


def test_cutover_postgresql_to_mariadb(fresh_db, fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    """The other direction, without a writer: verify across engines finds equal, then a differing key; the
    cutover gives the serial column its AUTO_INCREMENT on MariaDB."""
    schema, dsn, standby = fresh_mariadb.name, fresh_db.primary_dsn, fresh_mariadb.standby
    cols = "small, big, num, r, d, b, s, vc, by, dt, ts, tz, u, j, iv, bits, arr"
    _pg(dsn, f"CREATE SCHEMA {schema}")
    for statement in PG_TYPES.format(s=schema).strip().split(";\n"):
        _pg(dsn, statement)
    _pg(dsn, f"INSERT INTO {schema}.items ({cols}) VALUES " + ", ".join(PG_ITEM.format(i=i) for i in range(40)))
    workdir = ark_tmp / "groups" / unique_group
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{unique_group}.yaml"
    config.write_text(yaml.safe_dump({
        "group": unique_group, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": kafka_bootstrap},
        "primary": {"name": "pg", "engine": "postgresql", "host": "127.0.0.1", "port": fresh_db.primary.port,
                    "dbname": fresh_db.name, "user": "postgres", "tables": [f"{schema}.*"]},
        "capture": {"batch_max_ms": 50},
        "standbys": [{"name": "maria", "engine": "mariadb", "host": "127.0.0.1", "port": standby.port}]},
        sort_keys=False))

    def ark(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops", "-c", str(config), *args], capture_output=True, text=True,
                              timeout=600, cwd=ROOT, env={**os.environ}, check=False)

    agents: list[AgentProcess] = []
    try:
        res = ark("sync", "maria")
        assert res.returncode == 0, res.stdout + res.stderr
        for args in (["capture"], ["apply", "maria"]):
            agents.append(AgentProcess(config, args, workdir / "logs" / f"{'-'.join(args)}.log").start())
        _pg(dsn, f"INSERT INTO {schema}.items ({cols}) VALUES " + PG_ITEM.format(i=99))
        _pg(dsn, f"UPDATE {schema}.items SET s = 'moved' WHERE id = 3")
        _wait("the stream on MariaDB", lambda: str(_maria(standby, f"SELECT COUNT(*) FROM `{schema}`.items WHERE "
                                                                    "s = 'moved'")[0][0]) == "1", 120, agents)
        res = ark("verify", "maria")
        assert res.returncode == 0 and "verdict: equal" in res.stdout, res.stdout + res.stderr
        _maria(standby, f"UPDATE `{schema}`.items SET r = 1.2 WHERE id = 5")
        res = ark("verify", "maria")
        assert res.returncode == 11 and re.search(r"different: 5\b", res.stdout), res.stdout + res.stderr
        _maria(standby, f"UPDATE `{schema}`.items SET r = 1.1 WHERE id = 5")  # float 1.1 as a real holds it

        res = ark("cutover", "maria", "--grace", "1")
        assert res.returncode == 0, res.stdout + res.stderr
        assert re.search(r"write downtime: [0-9.]+ s", res.stdout), res.stdout
        print(res.stderr + res.stdout)
        conn = mconnect(standby)
        try:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO `{schema}`.items (s) VALUES ('first on MariaDB')")
                assert int(cur.lastrowid) > 41
        finally:
            conn.close()
        assert _pg(dsn, "SHOW default_transaction_read_only") == [("on",)]  # the source stays fenced
    finally:
        for agent in agents:
            agent.stop()
        with contextlib.suppress(Exception):
            _pg(dsn, f"ALTER DATABASE {fresh_db.name} RESET default_transaction_read_only",
                options="-c default_transaction_read_only=off")
        with contextlib.suppress(Exception):
            _pg(dsn, f"SELECT pg_drop_replication_slot('ark_{unique_group}')")
