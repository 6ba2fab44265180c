"""Ark's own tables on a MariaDB standby, in database ``ark``: apply state, table shapes, table states.

The state row is written in the same transaction as the data it describes (exactly once). Database
``ark_resync`` holds the staging copies of tables being resynced.
"""

from __future__ import annotations

import json
from typing import Any

from consumers.base import ApplyState
from consumers.tables import TableState
from schemas.entries import Column, TableMeta, column_record

STATE_DB = "ark"
RESYNC_DB = "ark_resync"

SCHEMA_DDL: tuple[str, ...] = (
    f"CREATE DATABASE IF NOT EXISTS {STATE_DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    f"CREATE DATABASE IF NOT EXISTS {RESYNC_DB} CHARACTER SET utf8mb4",
    f"""CREATE TABLE IF NOT EXISTS {STATE_DB}.apply_state (
        `group`        varchar(200) NOT NULL,
        standby        varchar(200) NOT NULL,
        topic          varchar(255) NOT NULL,
        `partition`    int          NOT NULL,
        next_offset    bigint       NOT NULL,
        position       text         NOT NULL,
        position_key   varbinary(64) NOT NULL,
        epoch          bigint       NOT NULL,
        commit_time_us bigint       NOT NULL,
        applied_at_us  bigint       NOT NULL,
        applied_txns   bigint       NOT NULL DEFAULT 0,
        extra          longtext     NOT NULL,
        PRIMARY KEY (`group`, standby)) ENGINE=InnoDB""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_DB}.table_meta (
        `group`   varchar(200) NOT NULL,
        `table`   varchar(300) NOT NULL,
        version   varchar(64)  NOT NULL,
        meta      longtext     NOT NULL,
        stored_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        PRIMARY KEY (`group`, `table`)) ENGINE=InnoDB""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_DB}.table_state (
        `group`        varchar(200) NOT NULL,
        standby        varchar(200) NOT NULL,
        `table`        varchar(300) NOT NULL,
        state          varchar(20)  NOT NULL,
        floor_position text         NOT NULL,
        floor_key      varbinary(64) NOT NULL,
        reason         text         NOT NULL,
        updated_at     timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        PRIMARY KEY (`group`, standby, `table`)) ENGINE=InnoDB""",
)

_STATE_COLS = ("`group`, standby, topic, `partition`, next_offset, position, position_key, epoch, commit_time_us, "
               "applied_at_us, applied_txns, extra")

LOAD_STATE_SQL = f"SELECT {_STATE_COLS} FROM {STATE_DB}.apply_state WHERE `group` = %s AND standby = %s"

SAVE_STATE_SQL = f"""
INSERT INTO {STATE_DB}.apply_state ({_STATE_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON DUPLICATE KEY UPDATE topic = VALUES(topic), `partition` = VALUES(`partition`),
    next_offset = VALUES(next_offset), position = VALUES(position), position_key = VALUES(position_key),
    epoch = VALUES(epoch), commit_time_us = VALUES(commit_time_us), applied_at_us = VALUES(applied_at_us),
    applied_txns = VALUES(applied_txns), extra = VALUES(extra)
"""

#: The compare-and-set of the state row: only when it is still the one the applier read.
CAS_STATE_SQL = f"""
UPDATE {STATE_DB}.apply_state SET topic = %s, `partition` = %s, next_offset = %s, position = %s, position_key = %s,
    epoch = %s, commit_time_us = %s, applied_at_us = %s, applied_txns = %s, extra = %s
WHERE `group` = %s AND standby = %s AND next_offset = %s AND epoch = %s
"""

LOAD_METAS_SQL = f"SELECT `table`, meta FROM {STATE_DB}.table_meta WHERE `group` = %s ORDER BY `table`"
#: A table the primary renamed: its stored shape moves with it (the JSON keeps the table's name too).
RENAME_META_SQL = (f"UPDATE {STATE_DB}.table_meta SET `table` = %s, meta = JSON_SET(meta, '$.table', %s) "
                   "WHERE `group` = %s AND `table` = %s")
#: A table the primary dropped (followed with standbys[].follow_drop): its stored shape goes.
FORGET_META_SQL = f"DELETE FROM {STATE_DB}.table_meta WHERE `group` = %s AND `table` = %s"

SAVE_META_SQL = f"""
INSERT INTO {STATE_DB}.table_meta (`group`, `table`, version, meta) VALUES (%s, %s, %s, %s)
ON DUPLICATE KEY UPDATE version = VALUES(version), meta = VALUES(meta), stored_at = CURRENT_TIMESTAMP(6)
"""

LOAD_TABLE_STATES_SQL = f"""
SELECT `table`, state, floor_position, floor_key, reason, CAST(UNIX_TIMESTAMP(updated_at) * 1000000 AS SIGNED)
FROM {STATE_DB}.table_state WHERE `group` = %s AND standby = %s ORDER BY `table`
"""

SAVE_TABLE_STATE_SQL = f"""
INSERT INTO {STATE_DB}.table_state (`group`, standby, `table`, state, floor_position, floor_key, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON DUPLICATE KEY UPDATE state = VALUES(state), floor_position = VALUES(floor_position),
    floor_key = VALUES(floor_key), reason = VALUES(reason), updated_at = CURRENT_TIMESTAMP(6)
"""

CLEAR_TABLE_STATES_SQL = f"DELETE FROM {STATE_DB}.table_state WHERE `group` = %s AND standby = %s"


def state_params(state: ApplyState) -> list[Any]:
    """Parameters of :data:`SAVE_STATE_SQL`."""
    return [state.group, state.standby, state.topic, state.partition, state.next_offset, state.position,
            bytes(state.position_key), state.epoch, state.commit_time_us, state.applied_at_us,
            state.applied_txns, json.dumps(dict(state.extra))]


def state_from_row(row: tuple[Any, ...]) -> ApplyState:
    """An :class:`ApplyState` from a row of :data:`LOAD_STATE_SQL`."""
    extra = json.loads(row[11] or "{}")
    return ApplyState(group=str(row[0]), standby=str(row[1]), topic=str(row[2]), partition=int(row[3]),
                      next_offset=int(row[4]), position=str(row[5]), position_key=bytes(row[6]),
                      epoch=int(row[7]), commit_time_us=int(row[8]), applied_at_us=int(row[9]),
                      applied_txns=int(row[10]), extra={str(k): str(v) for k, v in extra.items()})


def meta_json(meta: TableMeta) -> str:
    """The stored JSON of a shape (every column field, so transition hints survive a restart)."""
    return json.dumps({"table": meta.table, "version": meta.version, "position": meta.position,
                       "identity": meta.identity, "columns": [column_record(c) for c in meta.columns]})


def meta_from_json(text: str | bytes) -> TableMeta:
    """The TableMeta of a stored JSON document."""
    doc = json.loads(text)
    return TableMeta(table=doc["table"], version=doc["version"], position=doc.get("position", ""),
                     identity=doc.get("identity", "key"), columns=tuple(Column(**c) for c in doc["columns"]))


def table_state_params(group: str, standby: str, ts: TableState) -> list[Any]:
    """Parameters of :data:`SAVE_TABLE_STATE_SQL`."""
    return [group, standby, ts.table, ts.state, ts.floor_position, bytes(ts.floor_key), ts.reason]


def table_state_from_row(row: tuple[Any, ...]) -> TableState:
    """A TableState from a row of :data:`LOAD_TABLE_STATES_SQL`."""
    return TableState(table=str(row[0]), state=str(row[1]), floor_position=str(row[2]), floor_key=bytes(row[3]),
                      reason=str(row[4]), updated_at_us=int(row[5] or 0))
