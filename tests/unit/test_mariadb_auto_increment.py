"""AUTO_INCREMENT carried by the stream (Column.auto_increment, redo_entry v6) and MariaDB SEQUENCE values:
the capture's shapes, the standby's plans, the applier's forward-only SETVAL (tables of cases, fakes only)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from typing import Any

import pytest
from fastavro import schemaless_writer

from consumers.mariadb import sequences as standby_sequences
from consumers.mariadb.ddl import StandbyColumn, plan
from consumers.mariadb.sql import create_table_sql
from producers.mariadb import catalog
from producers.mariadb import sequences as source_sequences
from producers.mariadb.types import from_catalog
from schemas import envelope, registry
from schemas.entries import REDO_SCHEMA, Column, RedoEntry, SequenceValue, TableMeta, from_record, to_record

POS = "binlog.000001:4 gtid=0-1-1"


def _shape(auto: str = "", key: tuple[str, ...] = ("id",)) -> catalog.Shape:
    bigint = from_catalog("bigint", "bigint(20)", None, 19, 0, None, None)
    return catalog.Shape("s.t", ("id", "v"), (bigint, bigint), (False, True), key, auto)


def test_the_shape_says_which_column_is_auto_increment_and_other_versions_do_not_move() -> None:
    plain, auto = catalog.table_meta(_shape()), catalog.table_meta(_shape("id"))
    assert [c.auto_increment for c in auto.columns] == [True, False]
    assert not any(c.auto_increment for c in plain.columns)
    assert plain.version != auto.version  # a standby compares its table again when the property appears
    # the version of a shape without AUTO_INCREMENT is the one earlier builds computed (no needless re-adaptation)
    before = repr(("s.t", "key", [(c.name, c.type, c.source_type, c.nullable, c.key_position, c.default_expr,
                                   c.missing_value, c.column_id) for c in plain.columns]))
    assert plain.version == hashlib.sha256(before.encode()).hexdigest()[:16]


def test_v6_round_trip_and_a_v5_entry_reads_false() -> None:
    meta = TableMeta("s.t", (Column("id", "int64", "bigint", False, 1, auto_increment=True),
                             Column("v", "int64", "bigint")), "v", POS)
    entry = RedoEntry("g", "mariadb", 1, meta)
    env = envelope.encode(REDO_SCHEMA, to_record(entry))
    assert from_record(envelope.decode(env.value, env.headers, expect=REDO_SCHEMA).record) == entry
    v5 = next(s for s in registry.all_versions() if s.name == REDO_SCHEMA and s.version == 5)
    record = to_record(entry)
    for col in record["body"][1]["columns"]:
        col.pop("auto_increment")
    buf = io.BytesIO()
    schemaless_writer(buf, v5.parsed, record)
    headers = [("ark-crc", f"{envelope.crc32c(buf.getvalue()):08x}".encode()), ("ark-schema", v5.fingerprint.encode())]
    body = from_record(envelope.decode(buf.getvalue(), headers, expect=REDO_SCHEMA).record).body
    assert isinstance(body, TableMeta) and not any(c.auto_increment for c in body.columns)


def _meta(*cols: Column) -> TableMeta:
    return TableMeta("s.t", cols, "v", POS)


ID = Column("id", "int64", "bigint", False, 1)
V = Column("v", "int64", "bigint")


@pytest.mark.parametrize(("meta", "standby", "expected"), [
    # the standby's column lacks it: added (a rebuild; InnoDB starts the counter past the highest id)
    (_meta(replace(ID, auto_increment=True), V),
     [StandbyColumn("id", "bigint", True), StandbyColumn("v", "bigint", False)],
     ["ALTER TABLE `s`.`t` MODIFY COLUMN `id` bigint NOT NULL AUTO_INCREMENT"]),
    # already there: nothing
    (_meta(replace(ID, auto_increment=True), V),
     [StandbyColumn("id", "bigint", True, True), StandbyColumn("v", "bigint", False)], []),
    # never taken away (False also means "not said": older entries, another engine, a switchover added it)
    (_meta(ID, V), [StandbyColumn("id", "bigint", True, True), StandbyColumn("v", "bigint", False)], []),
    # a type change keeps it
    (_meta(ID, replace(V, source_type="int", type="int32")),
     [StandbyColumn("id", "bigint", True, True), StandbyColumn("v", "bigint", False)],
     ["ALTER TABLE `s`.`t` MODIFY COLUMN `v` int"]),
    (_meta(replace(ID, source_type="int", type="int32"), V),
     [StandbyColumn("id", "bigint", True, True), StandbyColumn("v", "bigint", False)],
     ["ALTER TABLE `s`.`t` MODIFY COLUMN `id` int NOT NULL AUTO_INCREMENT"]),
    # on a column that does not lead the key: an index of its own
    (_meta(ID, replace(V, auto_increment=True, nullable=False)),
     [StandbyColumn("id", "bigint", True), StandbyColumn("v", "bigint", True)],
     ["ALTER TABLE `s`.`t` MODIFY COLUMN `v` bigint NOT NULL AUTO_INCREMENT, ADD KEY (`v`)"]),
])
def test_standby_plans(meta: TableMeta, standby: list[StandbyColumn], expected: list[str]) -> None:
    assert plan(meta, standby, ["id"], has_rows=lambda: True).statements == expected


def test_create_table_with_auto_increment_but_not_its_staging_copy() -> None:
    meta = _meta(replace(ID, auto_increment=True), V)
    assert create_table_sql(meta) == ("CREATE TABLE `s`.`t` (`id` bigint NOT NULL AUTO_INCREMENT, `v` bigint, "
                                      "PRIMARY KEY (`id`)) ENGINE=InnoDB")
    assert "AUTO_INCREMENT" not in create_table_sql(meta, "`s`.`stage`", keyed=False)
    full = TableMeta("s.t", (replace(ID, auto_increment=True, key_position=1), replace(V, key_position=2)), "v", POS,
                     "full")
    assert create_table_sql(full).endswith("`v` bigint, KEY (`id`)) ENGINE=InnoDB")


@pytest.mark.parametrize(("nxt", "increment", "start", "last"), [
    (1, 1, 1, None),  # nothing handed out yet
    (1001, 1, 1, 1000),  # a cache of 1000 reserved: every value below may have been handed out
    (51, 10, 1, 41),
    (-11, -1, -1, -10),  # descending
    (-1, -1, -1, None),
])
def test_source_sequence_last_value(nxt: int, increment: int, start: int, last: int | None) -> None:
    assert source_sequences.last_value(nxt, increment, start) == last


class _Standby:
    """A fake standby: its sequences' values; SETVAL as MariaDB does it (never back: NULL)."""

    def __init__(self, values: dict[str, int]) -> None:
        self.values = values
        self.statements: list[str] = []

    def __call__(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        if sql.startswith("SELECT TABLE_SCHEMA"):
            pairs = list(zip(params[::2], params[1::2], strict=True))
            return [p for p in pairs if f"{p[0]}.{p[1]}" in self.values]
        name = sql.split("SETVAL(")[1].split(",")[0].replace("`", "")
        if params[0] <= self.values[name]:
            return [(None,)]
        self.values[name] = params[0]
        return [(params[0],)]


def test_standby_sequences_move_forward_only_and_missing_ones_are_said_once(caplog: pytest.LogCaptureFixture
                                                                            ) -> None:
    standby = _Standby({"s.a": 10, "s.b": 500})
    warned: set[str] = set()
    values = [SequenceValue("s.a", 40), SequenceValue("s.b", 100), SequenceValue("s.gone", 7),
              SequenceValue("s.a", 0, is_called=False)]
    assert standby_sequences.advance(standby, values, warned) == 1
    assert standby.values == {"s.a": 40, "s.b": 500}
    assert standby_sequences.advance(standby, values, warned) == 0  # again: nothing moves
    assert warned == {"s.gone"} and caplog.text.count("s.gone") == 1


def test_the_divergence_ledger_gets_json_values_from_a_mariadb_node() -> None:
    """``ark reinstate`` writes the group's row beside the old primary's: the driver's values must be JSON."""
    import datetime
    import json
    from decimal import Decimal

    from producers.mariadb.node_ops import _json_value

    row = {"id": 1, "balance": Decimal("10.50"), "at": datetime.datetime(2026, 1, 2, 3, 4, 5), "raw": b"\x00\xff",
           "note": None}
    assert json.loads(json.dumps({k: _json_value(v) for k, v in row.items()})) == {
        "id": 1, "balance": "10.50", "at": "2026-01-02 03:04:05", "raw": "\\x00ff", "note": None}
