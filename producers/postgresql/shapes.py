"""A table's shape from the facts Ark's DDL hook recorded, exactly as the catalog path describes it.

The hook (:mod:`.hooks_sql`) reads a table's catalog inside the user's DDL transaction and records it
at the DDL's place in the WAL. From those facts this module builds what pgoutput's Relation message
and :func:`.catalog.column_details` give the catalog path (:mod:`.describe`): the same columns in the
same order, the same replica-identity flags, the same key rule, the same declared type names and
default expressions. :func:`.relations.build_relation` turns either into the same :class:`TableMeta`
(same version hash), so a table described from the facts and one described from the catalog can only
differ when the table really differs.
"""

from __future__ import annotations

from typing import Any

from producers.postgresql import pgoutput
from producers.postgresql.catalog import ColumnDetails
from producers.postgresql.relations import Rel, build_relation

Facts = dict[str, Any]


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def qualified_name(facts: Facts) -> str:
    """``schema.table`` unquoted, as in patterns and entries."""
    return f"{facts['schema']}.{facts['name']}"


def relation_from_facts(facts: Facts) -> pgoutput.Relation:
    """The Relation message pgoutput sends for the table as the facts describe it.

    Columns: not generated, in attnum order. Flags: every column under REPLICA IDENTITY FULL, the
    primary key's under DEFAULT, the replica-identity index's under USING INDEX, none under NOTHING.
    """
    replident = str(facts.get("replident") or "d")
    flagged: set[int] = set()
    if replident in ("d", "i"):
        for index in facts.get("indexes") or ():
            # A DEFERRABLE primary key is no replica identity (PostgreSQL ignores it, as catalog.py does).
            if (replident == "d" and index.get("primary") and index.get("immediate", True)) \
                    or (replident == "i" and index.get("replident")):
                flagged = {int(k) for k in index.get("keys") or ()}
                break
    columns = []
    for col in facts.get("columns") or ():
        if col.get("generated"):
            continue
        attnum = _int(col.get("attnum"))
        is_key = replident == "f" or attnum in flagged
        columns.append(pgoutput.RelationColumn(pgoutput.COLUMN_KEY if is_key else 0, str(col["name"]),
                                               _int(col.get("typoid")), _int(col.get("typmod"))))
    return pgoutput.Relation(_int(facts.get("oid")), str(facts["schema"]), str(facts["name"]), replident,
                             tuple(columns))


def details_from_facts(facts: Facts) -> ColumnDetails:
    """What :func:`.catalog.column_details` reads, from the facts (same key rule)."""
    cols = facts.get("columns") or ()
    names = {_int(c.get("attnum")): str(c["name"]) for c in cols}
    not_null = {str(c["name"]): bool(c.get("not_null")) for c in cols}
    key: tuple[str, ...] = ()
    for index in facts.get("indexes") or ():  # ordered as catalog.column_details orders them
        if not index.get("unique") or not index.get("valid") or index.get("partial") or index.get("expr") \
                or not index.get("immediate", True):  # a DEFERRABLE key finds no row inside a transaction
            continue
        cand = tuple(names.get(int(k), "") for k in index.get("keys") or ())
        if all(cand) and (index.get("primary") or all(not_null[c] for c in cand)):
            key = cand
            break
    plain = [c for c in cols if not c.get("generated")]
    return ColumnDetails(
        not_null, {str(c["name"]): str(c["type"]) for c in cols}, key,
        attnums={str(c["name"]): _int(c.get("attnum")) for c in plain},
        defaults={str(c["name"]): str(c["default"]) for c in plain if c.get("default") is not None},
        missing={str(c["name"]): str(c["missing"]) for c in plain if c.get("missing") is not None},
    )


def rel_from_facts(facts: Facts, type_names: dict[int, str], position: str) -> Rel:
    """The table's Rel (its TableMeta and value converters) as the facts describe it at ``position``."""
    return build_relation(relation_from_facts(facts), details_from_facts(facts), type_names, position)
