"""Cross-engine apply through the same entries: PostgreSQL → MariaDB and MariaDB → PostgreSQL.

Real Kafka, real ``ark sync``/``capture``/``apply`` processes. Each direction copies a table of many types
with an online sync, streams inserts, updates (an UPDATE that leaves a TOASTed value out, from PostgreSQL),
deletes, a keyless table and DDL (rename, add with a default, then another change: the case where a
rename must not be taken for a drop and add), compares every value, and ends with a value the standby
cannot store: the applier stops with a data error naming the table and the column (never the value).
The type maps are in README "Cross-engine apply".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from deploy.agents import AgentProcess
from tests.support.mariadb import query as mquery

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Mixed:
    """A group whose primary and standby are of different engines."""

    name: str
    workdir: Path
    kafka: str
    primary: dict[str, Any]
    standby: dict[str, Any]
    agents: list[AgentProcess] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.workdir / f"{self.name}.yaml"

    def write(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        doc = {"group": self.name, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": self.kafka},
               "primary": self.primary, "capture": {"batch_max_ms": 50}, "standbys": [self.standby]}
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))

    def ark(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops", "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=300, cwd=ROOT, env={**os.environ}, check=False)

    def start(self, *args: str) -> AgentProcess:
        agent = AgentProcess(self.config, list(args), self.workdir / "logs" / f"{'-'.join(args)}.log").start()
        self.agents.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in self.agents:
            agent.stop()


def _wait(predicate: Any, timeout: float, what: str, agents: list[AgentProcess]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not there yet (a table the standby has not created)
            pass
        for agent in agents:
            if agent.proc is not None and not agent.alive():
                raise AssertionError(f"agent {agent.args} exited {agent.proc.returncode}:\n{agent.tail(40)}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _pg(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


# -- PostgreSQL → MariaDB -------------------------------------------------------------------------------
PG_TYPES = """
CREATE TABLE {s}.t (id int PRIMARY KEY, small smallint, big bigint, num numeric(12,2), unum numeric, r real,
  d double precision, b boolean, s text, vc varchar(20), by bytea, dt date, ts timestamp(6), tz timestamptz,
  tm time, u uuid, j jsonb, iv interval, arr int[], doc text);
CREATE TABLE {s}.bag (k int, v text);
ALTER TABLE {s}.bag REPLICA IDENTITY FULL;
"""
PG_ROW = ("({i}, -32768, 9223372036854775807, -1234567890.12, 1.000000000000000000000000000001, 1.5, "
          "-1.7976931348623157e308, true, 'héllo ''q'' 😀 {i}', 'Abc ', '\\x00ff'::bytea, '0001-01-01', "
          "'2024-02-29 23:59:59.999999', '2038-01-19 03:14:08+02', '24:00:00', "
          "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"a\": [1, 2.5]}}', '1 year 2 mons 3 days 04:05:06', "
          "'{{1,2,3}}', repeat('x', 100000))")


def _maria_t(inst: Any, schema: str, cols: str) -> list[tuple[Any, ...]]:
    return mquery(inst, f"SELECT {cols} FROM `{schema}`.t ORDER BY id")


def test_postgresql_to_mariadb(fresh_db, fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    schema, dsn, standby = fresh_mariadb.name, fresh_db.primary_dsn, fresh_mariadb.standby
    _pg(dsn, f"CREATE SCHEMA {schema}")
    _pg(dsn, PG_TYPES.format(s=schema))
    _pg(dsn, f"INSERT INTO {schema}.t VALUES {PG_ROW.format(i=1)}, {PG_ROW.format(i=2)}")
    _pg(dsn, f"INSERT INTO {schema}.bag VALUES (1, 'a'), (1, 'a'), (2, 'A')")
    group = Mixed(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap,
                  {"name": "primary", "engine": "postgresql", "host": "127.0.0.1", "port": fresh_db.primary.port,
                   "dbname": fresh_db.name, "user": "postgres", "tables": [f"{schema}.*"]},
                  {"name": "standby", "engine": "mariadb", "host": "127.0.0.1", "port": standby.port})
    group.write()
    try:
        res = group.ark("sync", "standby")
        assert res.returncode == 0, res.stdout + res.stderr
        capture, apply = group.start("capture"), group.start("apply", "standby")
        _pg(dsn, f"INSERT INTO {schema}.t VALUES {PG_ROW.format(i=3)}")
        _pg(dsn, f"UPDATE {schema}.t SET small = 7 WHERE id = 1")  # doc (TOASTed) is left out: UNCHANGED
        _pg(dsn, f"UPDATE {schema}.t SET id = 20, vc = 'moved' WHERE id = 2")
        _pg(dsn, f"DELETE FROM {schema}.t WHERE id = 3")
        _pg(dsn, f"UPDATE {schema}.bag SET v = 'b' WHERE ctid = (SELECT min(ctid) FROM {schema}.bag WHERE v = 'a')")
        _pg(dsn, f"DELETE FROM {schema}.bag WHERE v = 'A'")
        _pg(dsn, f"ALTER TABLE {schema}.t RENAME COLUMN vc TO label")
        _pg(dsn, f"ALTER TABLE {schema}.t ADD COLUMN extra int NOT NULL DEFAULT 42")
        _pg(dsn, f"INSERT INTO {schema}.t (id, label, extra) VALUES (4, 'four', 1)")
        # A table renamed on the primary is renamed on the standby, with its rows (a DDL step of the hook).
        _pg(dsn, f"ALTER TABLE {schema}.bag RENAME TO bag2")
        _pg(dsn, f"INSERT INTO {schema}.bag2 VALUES (3, 'c')")
        _wait(lambda: _maria_t(standby, schema, "COUNT(*)") == [("3",)] and
              mquery(standby, f"SELECT extra FROM `{schema}`.t WHERE id = 4") == [("1",)] and
              mquery(standby, f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{schema}' "
                              "AND TABLE_NAME = 'bag2'") == [("1",)], 120,
              "the stream on the MariaDB standby", [capture, apply])
        got = _maria_t(standby, schema, "id, small, big, num, unum, r, d, b, s, label, `by`, dt, ts, tz, tm, u, j, iv, "
                                        "arr, CHAR_LENGTH(doc), extra")

        def row(i: int, small: str, label: str) -> tuple[Any, ...]:
            return (str(i), small, "9223372036854775807", "-1234567890.12", "1.000000000000000000000000000001", "1.5",
                    "-1.7976931348623157e308", "1", f"héllo 'q' 😀 {2 if i == 20 else i}", label, b"\x00\xff",
                    "0001-01-01", "2024-02-29 23:59:59.999999", "2038-01-19 01:14:08.000000", "24:00:00.000000",
                    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '{"a": [1, 2.5]}', "1 year 2 mons 3 days 04:05:06",
                    "{1,2,3}", "100000", "42")

        four = ("4", *[None] * 8, "four", *[None] * 10, "1")
        assert got == [row(1, "7", "Abc "), four, row(20, "-32768", "moved")], got
        _wait(lambda: mquery(standby, f"SELECT k, CAST(v AS BINARY) FROM `{schema}`.bag2 ORDER BY k, v") ==
              [("1", b"a"), ("1", b"b"), ("3", b"c")], 60, "bag2 on the MariaDB standby", [capture, apply])
        # A value MariaDB cannot store: the applier stops, naming the table and the column.
        _pg(dsn, f"INSERT INTO {schema}.t (id, tz, extra) VALUES (5, 'infinity', 0)")
        code = apply.wait_exit(120)
        log = apply.tail(60)
        assert code == 9, log
        assert f"column tz (timestamptz, timestamp with time zone) of {schema}.t cannot be stored" in log, log
        assert "infinity" not in log.split("cannot be stored")[1].splitlines()[0]
    finally:
        group.stop_all()
        with __import__("contextlib").suppress(Exception):
            _pg(dsn, f"SELECT pg_drop_replication_slot('ark_{unique_group}')")


# -- MariaDB → PostgreSQL -------------------------------------------------------------------------------
MARIA_TYPES = """
CREATE TABLE `{s}`.t (id int PRIMARY KEY, ti tinyint unsigned, y year, bu bigint unsigned, de decimal(10,3),
  f float, d double, dtt datetime(6), ts timestamp(3) NULL, tm time(2), v varchar(20), tx mediumtext, en enum('a','b'),
  st set('x','y'), bl blob, bt bit(5), js json, g geometry) ENGINE=InnoDB;
CREATE TABLE `{s}`.bag (k int, v varchar(10)) ENGINE=InnoDB;
"""
MARIA_ROW = ("({i}, 255, 2155, 18446744073709551615, -1234567.125, 1.5, -2.5e-300, '2024-02-29 23:59:59.5', "
             "'2038-01-19 03:14:07.999', '-12:30:00.25', 'ça {i}', repeat('t', 70000), 'b', 'x,y', x'00ff', b'10101', "
             "'{{\"a\": 1}}', ST_GeomFromText('POINT(1 2)'))")


def test_mariadb_to_postgresql(fresh_db, fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    schema, primary, dsn = fresh_mariadb.name, fresh_mariadb.primary, fresh_db.standby_dsn
    primary.sql(MARIA_TYPES.format(s=schema))
    primary.sql(f"INSERT INTO `{schema}`.t VALUES {MARIA_ROW.format(i=1)}, {MARIA_ROW.format(i=2)}; "
                f"INSERT INTO `{schema}`.bag VALUES (1, 'a'), (1, 'a'), (2, 'A')")
    group = Mixed(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap,
                  {"name": "primary", "engine": "mariadb", "host": "127.0.0.1", "port": primary.port,
                   "tables": [f"{schema}.*"], "heartbeat_s": 0.05},
                  {"name": "standby", "engine": "postgresql", "host": "127.0.0.1", "port": fresh_db.standby.port,
                   "dbname": fresh_db.name, "user": "postgres"})
    group.write()
    try:
        res = group.ark("sync", "standby")
        assert res.returncode == 0, res.stdout + res.stderr
        capture, apply = group.start("capture"), group.start("apply", "standby")
        primary.sql(f"INSERT INTO `{schema}`.t VALUES {MARIA_ROW.format(i=3)}; "
                    f"UPDATE `{schema}`.t SET id = 20, v = 'moved' WHERE id = 2; "
                    f"DELETE FROM `{schema}`.t WHERE id = 3; "
                    f"UPDATE `{schema}`.bag SET v = 'b' WHERE v = 'a' LIMIT 1; "
                    f"DELETE FROM `{schema}`.bag WHERE k = 2; "
                    f"ALTER TABLE `{schema}`.t ADD COLUMN extra int NOT NULL DEFAULT 42; "
                    f"INSERT INTO `{schema}`.t (id, v) VALUES (4, 'four'); "
                    f"ALTER TABLE `{schema}`.t RENAME COLUMN v TO label; "  # a shape whose hints say label was v
                    f"INSERT INTO `{schema}`.t (id, label, extra) VALUES (5, 'five', 1); "
                    f"ALTER TABLE `{schema}`.t ADD COLUMN note varchar(5); "  # ... and the next one: label was label
                    f"INSERT INTO `{schema}`.t (id, label, note) VALUES (6, 'six', 'n')")
        _wait(lambda: _pg(dsn, f"SELECT count(*) FROM {schema}.t WHERE note = 'n'") == [(1,)], 120,
              "the stream on the PostgreSQL standby", [capture, apply])
        got = _pg(dsn, f"SELECT id, ti, y, bu::text, de::text, f, d, dtt::text, "
                       f"(ts AT TIME ZONE 'UTC')::text, tm::text, label, length(tx), en, st, bl, bt::text, js, "
                       f"length(g), extra FROM {schema}.t ORDER BY id")
        assert [r[0] for r in got] == [1, 4, 5, 6, 20]
        one = got[0]
        assert one[1:8] == (255, 2155, "18446744073709551615", "-1234567.125", 1.5, -2.5e-300,
                            "2024-02-29 23:59:59.5")
        assert one[8:] == ("2038-01-19 03:14:07.999", "-12:30:00.25", "ça 1", 70000, "b", "x,y", b"\x00\xff",
                           "10101", '{"a": 1}', 25, 42)
        # Renamed, then another shape change: the data stayed (taken for a new column, it was silently NULL).
        assert [r[10] for r in got] == ["ça 1", "four", "five", "six", "moved"]
        assert [r[18] for r in got] == [42, 42, 1, 42, 42]
        apply_log = apply.tail(400)
        assert "resync" not in apply_log, apply_log  # followed in place, no table resync needed
        assert sorted(_pg(dsn, f"SELECT k, v FROM {schema}.bag")) == [(1, "a"), (1, "b")]
        # A value PostgreSQL cannot store: a zero date. The applier stops, naming the table and the column.
        primary.sql(f"SET sql_mode = ''; INSERT INTO `{schema}`.t (id, dtt) VALUES (7, '0000-00-00 00:00:00')")
        code = apply.wait_exit(120)
        log = apply.tail(60)
        assert code == 9, log
        assert f"{schema}.t" in log and "dtt" in log, log
    finally:
        group.stop_all()
    rows = json.dumps([list(map(str, r)) for r in _pg(dsn, f"SELECT id FROM {schema}.t ORDER BY id")])
    assert rows == json.dumps([["1"], ["4"], ["5"], ["6"], ["20"]])
