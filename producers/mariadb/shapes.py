"""The capture's per-table shape cache: table maps -> TableMeta, DDL statements -> transition hints.

A table's shape is read from each table-map event (exact at that point of the log, whatever the
catalog says now). A new TableMeta is published only when the shape changes. The key is the
primary key the table map names; a table without one uses its first unique index on NOT NULL
columns from the catalog (checked against the table map's columns and nullability), as the
snapshot does.

DDL (query events) is parsed (:mod:`.ddl`): ALTER TABLE steps are replayed on the column names the
capture last saw, and at the next table map of the table, if they predict its names exactly, the
new shape goes out with transition hints (renames, and the value existing rows got for an added
column). That value is asked of the server itself: the added column's definition is applied to a
one-row temporary table (not written to the binlog in ROW format) and read back, so MariaDB's own
rules give it (implicit defaults of NOT NULL columns, conversions of the literal).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pymysql

from producers.mariadb import catalog
from producers.mariadb.binlog import Query
from producers.mariadb.ddl import Evolution, Predicted, name_id, parse
from producers.mariadb.rows import TableState
from producers.mariadb.tablemap import TableMap, parse_table_map
from producers.mariadb.types import ColumnType
from schemas.entries import TableMeta, Value

log = logging.getLogger(__name__)

Hint = tuple[int, str | None, str | None]


def value_text(value: Value) -> str | None:
    """The canonical text of a neutral value (None stays None): what ``missing_value`` carries."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def map_shape(tmap: TableMap, unique_key: Sequence[str], auto_increment: str = "") -> catalog.Shape:
    """The Shape of a table map; ``unique_key`` is used when the table map names no primary key;
    ``auto_increment`` (the catalog's AUTO_INCREMENT column) only when the table map has that column."""
    key: tuple[str, ...] = tuple(tmap.names[i] for i in tmap.primary_key)
    if not key and unique_key:
        idx = {n: i for i, n in enumerate(tmap.names)}
        if all(n in idx and not tmap.nullable[idx[n]] for n in unique_key):
            key = tuple(unique_key)
    auto = next((n for n in tmap.names if n.casefold() == auto_increment.casefold()), "") if auto_increment else ""
    return catalog.Shape(tmap.qualified, tmap.names, tmap.types, tmap.nullable, key, auto)


class Shapes:
    """Table maps and DDL of one capture stream (see the module docstring)."""

    def __init__(self, conn: Any, patterns: Sequence[str], collations: Mapping[int, tuple[str, int]]) -> None:
        self.conn = conn
        self.patterns = tuple(patterns)
        self.collations = collations
        self.by_id: dict[int, TableState] = {}
        self.tables: dict[str, TableState] = {}
        self.shapes: dict[str, catalog.Shape] = {}
        self.evolutions: dict[str, Evolution] = {}
        self._unique: dict[str, tuple[str, ...]] = {}
        self._facts: dict[str, catalog.TableFacts] = {}  # per table, asked again after a DDL on it

    def table_map(self, body: bytes, position: str) -> TableMeta | None:
        """Register a table map; the new TableMeta when its table's shape changed (None otherwise)."""
        tmap = parse_table_map(body, 6, self.collations)
        table = tmap.qualified
        if not catalog.matches(table, self.patterns):
            self.by_id.pop(tmap.table_id, None)
            return None
        facts = self._facts.get(table)
        if facts is None:
            facts = self._facts[table] = catalog.table_facts(self.conn, tmap.schema, tmap.table)
        if facts.kind == "SEQUENCE":
            # NEXTVAL past the cache and SETVAL write the sequence's row to the binlog: not a table of the stream,
            # its values travel as SequenceValues (MariaDBCapture.sequence_values).
            self.by_id.pop(tmap.table_id, None)
            return None
        unique: tuple[str, ...] = ()
        if not tmap.primary_key:
            if table not in self._unique:
                self._unique[table] = catalog.catalog_key(self.conn, tmap.schema, tmap.table)
            unique = self._unique[table]
        shape = map_shape(tmap, unique, facts.auto_increment)
        state = self.tables.get(table)
        if state is not None and self.shapes.get(table) == shape:
            # Same shape under a new table id (table ids change when MariaDB reopens a table).
            state = (TableState(tmap, state.decs, state.meta, state.key_idx) if state.map.raw == tmap.raw
                     else TableState.build(tmap, state.meta))
            self.by_id[tmap.table_id] = self.tables[table] = state
            self.evolutions.pop(table, None)
            return None
        hints = self._hints(table, tmap, state)
        meta = catalog.table_meta(shape, position, hints)
        state = TableState.build(tmap, meta)
        self.by_id[tmap.table_id] = self.tables[table] = state
        self.shapes[table] = shape
        return meta

    def _hints(self, table: str, tmap: TableMap, previous: TableState | None) -> list[Hint] | None:
        evolution = self.evolutions.pop(table, None)
        if evolution is None:
            return None
        if not evolution.followable or not evolution.matches(tmap.names):
            why = evolution.why or (f"the statements predict columns {[c.name for c in evolution.columns]} but "
                                    f"the binlog states {list(tmap.names)}")
            log.warning("DDL on %s is published without transition hints (%s): standbys follow what needs no "
                        "hint and resync the table otherwise", table, why)
            return None
        return [self._hint(tmap, i, col) for i, col in enumerate(evolution.columns)]

    def _hint(self, tmap: TableMap, i: int, col: Predicted) -> Hint:
        if col.old is not None:
            return name_id(col.old), None, None
        step = col.step
        assert step is not None
        ct = tmap.types[i]
        if (step.default is None or step.default.upper() == "NULL") and tmap.nullable[i]:
            return name_id(col.name), None, None
        if not step.constant_default or (ct.data_type == "timestamp" and step.default is not None):
            # Per-row or per-moment values (CURRENT_TIMESTAMP, uuid()), or a literal read in the DDL
            # session's time zone: what the existing rows hold is not in the log.
            return name_id(col.name), step.default or "?", None
        return name_id(col.name), step.default, self._probe(tmap.schema, step.definition, ct, col.name)

    def _probe(self, schema: str, definition: str, ct: ColumnType, name: str) -> str | None:
        """The value a row that existed before ``ADD COLUMN <definition>`` holds, as MariaDB computes it."""
        probe = f"`{schema.replace('`', '``')}`.`_ark_probe`"
        statements = [f"CREATE TEMPORARY TABLE {probe} (`_ark_k` int)", f"INSERT INTO {probe} VALUES (1)",
                      f"ALTER TABLE {probe} ADD COLUMN `_ark_v` {definition}"]
        try:
            with self.conn.cursor() as cur:
                cur.execute("SET @ark_mode = @@session.sql_mode, SESSION sql_mode = ''")
                try:
                    for sql in statements:
                        cur.execute(sql)
                    expr = ct.text_expr("`_ark_v`")
                    cur.execute(f"SELECT {expr if ct.binary else f'CAST({expr} AS CHAR)'} FROM {probe}")
                    raw = cur.fetchone()[0]
                finally:
                    cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {probe}")
                    cur.execute("SET SESSION sql_mode = @ark_mode")
        except pymysql.err.Error as exc:
            log.warning("cannot ask the primary what existing rows hold for the new column %s (%s): standbys "
                        "resync the table", name, exc)
            return None
        if raw is None:
            return None
        return value_text(ct.from_text(raw if isinstance(raw, bytes) else str(raw).encode()))

    def query(self, q: Query, position: str) -> list[str]:
        """Follow one query event; returns the captured tables a TRUNCATE emptied."""
        ddl = parse(q.sql, q.schema)
        if ddl is None:
            return []
        captured = [t for t in ddl.tables if catalog.matches(t, self.patterns)]
        if ddl.kind == "truncate":
            return captured
        for table in ddl.tables:  # created, dropped, renamed, altered: what the catalog says of it may differ now
            self._facts.pop(table, None)
        if ddl.kind == "alter" and captured:
            table = captured[0]
            evolution = self.evolutions.get(table)
            if evolution is None:
                state = self.tables.get(table)
                if state is None:
                    log.info("DDL on %s before any of its rows in this capture session: its new shape goes out "
                             "without transition hints", table)
                    return []
                evolution = self.evolutions[table] = Evolution(state.map.names)
            evolution.apply(ddl.steps)
            self._unique.pop(table, None)
            for step in ddl.steps:
                if step.op == "rename_table":
                    log.error("table %s was renamed to %s at %s: a standby cannot follow a rename; resync the new "
                              "table on every standby (ark resync <standby> --table %s.%s)", table, step.new_name,
                              position, table.split(".")[0], step.new_name)
        elif ddl.kind == "rename":
            for old, new in zip(ddl.tables[::2], ddl.tables[1::2], strict=True):
                if catalog.matches(new, self.patterns) or catalog.matches(old, self.patterns):
                    log.error("table %s was renamed to %s at %s: a standby keeps %s and does not get the rows of "
                              "%s; resync it on every standby (ark resync <standby> --table %s)", old, new,
                              position, old, new, new)
        elif ddl.kind == "drop" and captured:
            log.warning("DROP TABLE %s at %s is not followed: standbys keep the table and its rows until a DBA "
                        "drops them", ", ".join(captured), position)
        elif ddl.kind == "create" and captured:
            log.info("new table %s at %s: standbys create it with its first rows", ", ".join(captured), position)
        return []
