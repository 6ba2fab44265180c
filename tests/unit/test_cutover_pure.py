"""The pure part of ``ark cutover``: which column counters the target gets."""

from __future__ import annotations

from common.node_ops import Sequence
from ops.cutover import column_sequences
from schemas.entries import Column, TableMeta


def _meta(table: str, default: str | None, neutral: str = "int32", key: int = 1) -> TableMeta:
    return TableMeta(table, (Column("id", neutral, "integer", False, key, default_expr=default),
                             Column("v", "string", "text")), "1")


def test_a_serial_key_gets_a_column_counter_with_its_sequence_value() -> None:
    source = {"shop.orders_id_seq": Sequence(last_value=41)}
    got = column_sequences(source, [_meta("shop.orders", "nextval('orders_id_seq'::regclass)"),
                                    _meta("shop.quoted", "nextval('\"shop\".\"q_seq\"'::regclass)"),
                                    _meta("shop.plain", None), _meta("shop.text_key", "nextval('s')", "string"),
                                    _meta("shop.no_key", "nextval('s')", key=0)])
    assert got["shop.orders_id_seq"] == Sequence(last_value=41)  # the sequence itself travels too
    assert got["shop.orders"] == Sequence(last_value=41, column="id")
    assert got["shop.quoted"] == Sequence(last_value=None, column="id")  # its sequence is not replicated: max(id)
    assert {"shop.plain", "shop.text_key", "shop.no_key"}.isdisjoint(got)


def test_mariadb_auto_increment_counters_are_kept_as_they_come() -> None:
    source = {"shop.orders": Sequence(last_value=7, column="id")}
    assert column_sequences(source, [_meta("shop.orders", None)]) == source
