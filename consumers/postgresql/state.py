"""Ark's own tables on a PostgreSQL standby: ``ark.apply_state``, ``ark.table_meta``, ``ark.table_state``.

The state row is written in the same transaction as the data it describes (exactly once); the
table shapes are stored beside it so a restarted applier knows the shapes as of its state.
``ark.table_state`` says which tables are being resynced (their rows are skipped until the fresh
copy is swapped in); schema ``ark_resync`` holds the staging copies of those tables.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb

from consumers.base import ApplyState
from consumers.tables import TableState
from schemas.entries import Column, TableMeta

#: Schema of the staging copies of tables being resynced (see :mod:`.resync`).
RESYNC_SCHEMA = "ark_resync"

SCHEMA_DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS ark",
    """CREATE TABLE IF NOT EXISTS ark.apply_state (
        "group"        text   NOT NULL,
        standby        text   NOT NULL,
        topic          text   NOT NULL,
        "partition"    int    NOT NULL,
        next_offset    bigint NOT NULL,
        position       text   NOT NULL,
        position_key   bytea  NOT NULL,
        epoch          bigint NOT NULL,
        commit_time_us bigint NOT NULL,
        applied_at_us  bigint NOT NULL,
        applied_txns   bigint NOT NULL DEFAULT 0,
        extra          jsonb  NOT NULL DEFAULT '{}',
        PRIMARY KEY ("group", standby))""",
    """CREATE TABLE IF NOT EXISTS ark.table_meta (
        "group"   text  NOT NULL,
        "table"   text  NOT NULL,
        version   text  NOT NULL,
        meta      jsonb NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY ("group", "table"))""",
    """CREATE TABLE IF NOT EXISTS ark.table_state (
        "group"        text   NOT NULL,
        standby        text   NOT NULL,
        "table"        text   NOT NULL,
        state          text   NOT NULL,
        floor_position text   NOT NULL DEFAULT '',
        floor_key      bytea  NOT NULL DEFAULT '',
        reason         text   NOT NULL DEFAULT '',
        updated_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY ("group", standby, "table"))""",
    f"CREATE SCHEMA IF NOT EXISTS {RESYNC_SCHEMA}",
    "COMMENT ON SCHEMA ark IS 'Ark replication state; written only by the Ark applier'",
)

_STATE_COLS = ('"group", standby, topic, "partition", next_offset, position, position_key, epoch, '
               "commit_time_us, applied_at_us, applied_txns, extra")

LOAD_STATE_SQL = f'SELECT {_STATE_COLS} FROM ark.apply_state WHERE "group" = %s AND standby = %s'

SAVE_STATE_SQL = f"""
INSERT INTO ark.apply_state ({_STATE_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT ("group", standby) DO UPDATE SET
    topic = EXCLUDED.topic, "partition" = EXCLUDED."partition", next_offset = EXCLUDED.next_offset,
    position = EXCLUDED.position, position_key = EXCLUDED.position_key, epoch = EXCLUDED.epoch,
    commit_time_us = EXCLUDED.commit_time_us, applied_at_us = EXCLUDED.applied_at_us,
    applied_txns = EXCLUDED.applied_txns, extra = EXCLUDED.extra
"""

LOAD_METAS_SQL = 'SELECT "table", meta FROM ark.table_meta WHERE "group" = %s ORDER BY "table"'

SAVE_META_SQL = """
INSERT INTO ark.table_meta ("group", "table", version, meta) VALUES (%s, %s, %s, %s)
ON CONFLICT ("group", "table") DO UPDATE SET version = EXCLUDED.version, meta = EXCLUDED.meta,
    stored_at = now()
"""


LOAD_TABLE_STATES_SQL = """
SELECT "table", state, floor_position, floor_key, reason, (extract(epoch FROM updated_at) * 1e6)::bigint
FROM ark.table_state WHERE "group" = %s AND standby = %s ORDER BY "table"
"""

SAVE_TABLE_STATE_SQL = """
INSERT INTO ark.table_state ("group", standby, "table", state, floor_position, floor_key, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT ("group", standby, "table") DO UPDATE SET state = EXCLUDED.state,
    floor_position = EXCLUDED.floor_position, floor_key = EXCLUDED.floor_key, reason = EXCLUDED.reason,
    updated_at = now()
"""

CLEAR_TABLE_STATES_SQL = 'DELETE FROM ark.table_state WHERE "group" = %s AND standby = %s'


def table_state_params(group: str, standby: str, ts: TableState) -> list[Any]:
    """Parameters of :data:`SAVE_TABLE_STATE_SQL`."""
    return [group, standby, ts.table, ts.state, ts.floor_position, bytes(ts.floor_key), ts.reason]


def table_state_from_row(row: tuple[Any, ...]) -> TableState:
    """A :class:`TableState` from a row of :data:`LOAD_TABLE_STATES_SQL`."""
    return TableState(table=str(row[0]), state=str(row[1]), floor_position=str(row[2]),
                      floor_key=bytes(row[3]), reason=str(row[4]), updated_at_us=int(row[5] or 0))


def state_params(state: ApplyState) -> list[Any]:
    """Parameters of :data:`SAVE_STATE_SQL`."""
    return [state.group, state.standby, state.topic, state.partition, state.next_offset, state.position,
            bytes(state.position_key), state.epoch, state.commit_time_us, state.applied_at_us,
            state.applied_txns, Jsonb(dict(state.extra))]


def state_from_row(row: tuple[Any, ...]) -> ApplyState:
    """An :class:`ApplyState` from a row of :data:`LOAD_STATE_SQL`."""
    extra = row[11] if isinstance(row[11], dict) else json.loads(row[11] or "{}")
    return ApplyState(group=row[0], standby=row[1], topic=row[2], partition=int(row[3]),
                      next_offset=int(row[4]), position=row[5], position_key=bytes(row[6]),
                      epoch=int(row[7]), commit_time_us=int(row[8]), applied_at_us=int(row[9]),
                      applied_txns=int(row[10]), extra={str(k): str(v) for k, v in extra.items()})


def meta_to_json(meta: TableMeta) -> dict[str, Any]:
    """The JSON document stored in ``ark.table_meta.meta``."""
    return {"table": meta.table, "version": meta.version, "position": meta.position,
            "columns": [{"name": c.name, "type": c.type, "source_type": c.source_type,
                         "nullable": c.nullable, "key_position": c.key_position} for c in meta.columns]}


def meta_from_json(doc: dict[str, Any]) -> TableMeta:
    """The :class:`TableMeta` of a stored JSON document."""
    return TableMeta(table=doc["table"], version=doc["version"], position=doc.get("position", ""),
                     identity=doc.get("identity", "key"), columns=tuple(Column(**c) for c in doc["columns"]))
