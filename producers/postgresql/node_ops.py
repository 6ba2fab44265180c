"""PostgreSQL's :class:`~common.node_ops.NodeOps`: what a switchover or failover does to one node.

* **Fence** (the old primary): ``ALTER DATABASE ... SET default_transaction_read_only = on`` (the same guard
  a standby has), then the sessions that started before it are ended: idle ones at once, those inside a
  transaction when it ends or when the grace runs out. A session started before the ALTER keeps its old
  default and could still write, so none of them is left. Ark's own sessions (``ark``, ``ark-capture``) and
  walsenders stay. It is a guard against the application, not a security boundary: a session may still
  ``SET default_transaction_read_only = off`` (README, "Switchover and failover").
* **Sequences**: ``pg_sequences`` of the old primary, ``setval`` on the new one, forward only, for the
  sequences matching ``primary.tables`` (the same schema.name patterns); a sequence the new primary lacks
  (an initial sync copies tables, not sequences) is created with the old one's definition first.
* **Promote**: the capture set-up (publication, logical slot) is created while the node is still read-only,
  so the slot starts after everything the applier wrote and before any new write; then the guard goes.
* **Drop source**: the old primary's slot and publication go when it becomes a standby (an applier refuses a
  database that holds them: common/guard.py ``IsASource``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from typing import Any

import psycopg2
from psycopg2 import sql

from common.config import ArkConfig
from common.errors import SourceError
from common.node_ops import FenceReport, NodeOps, Sequence, SequenceReport
from common.roles import config_under, node
from producers.postgresql import catalog, setup
from producers.postgresql.catalog import SESSION_OPTIONS
from producers.postgresql.hooks import inserts_publication_of
from producers.postgresql.hooks_sql import SCHEMA as HOOK_SCHEMA

log = logging.getLogger(__name__)

#: Ark's own sessions: never ended by fencing (the capture drains through them).
ARK_APPS = ("ark", "ark-capture")

#: Client sessions of this database other than ours and Ark's (walsenders are not client backends).
_OTHERS = """
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
  AND coalesce(application_name, '') NOT IN ('ark', 'ark-capture') AND backend_start <= %s
"""


class PostgresNodeOps(NodeOps):
    """One PostgreSQL node of the group (see the module docstring)."""

    def __init__(self, cfg: ArkConfig, name: str, *, connect_timeout_s: int | None = None) -> None:
        self.cfg = cfg
        self._timeout = connect_timeout_s
        self.name = name
        self.settings: Any = node(cfg, name)
        self._conn: Any = None

    # -- plumbing ------------------------------------------------------------------------------------
    def _where(self) -> str:
        s = self.settings
        return f"node {self.name} ({s.user}@{s.host}:{s.port}/{s.dbname})"

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            kwargs = self.settings.connect_kwargs()
            kwargs.update(options=SESSION_OPTIONS + " -c default_transaction_read_only=off",
                          application_name="ark", client_encoding="UTF8")
            if self._timeout is not None:
                kwargs["connect_timeout"] = self._timeout
            try:
                self._conn = psycopg2.connect(**kwargs)
            except psycopg2.Error as exc:
                raise SourceError(f"{self._where()} cannot be reached: {' '.join(str(exc).split())}",
                                  fix=f"is PostgreSQL running at {self.settings.host}:{self.settings.port}?") from None
            self._conn.autocommit = True
        return self._conn

    def _rows(self, statement: str | sql.Composable, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._connect().cursor() as cur:
                cur.execute(statement, params or None)
                return cur.fetchall() if cur.description else []
        except psycopg2.Error as exc:
            raise SourceError(f"{self._where()}: {' '.join(str(exc).split())}",
                              fix="check the node and run the command again (every step is idempotent)") from None

    def _db(self) -> sql.Composable:
        return sql.Identifier(self.settings.dbname)

    # -- NodeOps ---------------------------------------------------------------------------------------
    def writable(self) -> bool:
        row = self._rows("SELECT pg_is_in_recovery(), coalesce((SELECT setting FROM pg_db_role_setting s, "
                         "unnest(s.setconfig) setting WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE "
                         "datname = current_database()) AND s.setrole = 0 AND setting LIKE "
                         "'default_transaction_read_only=%%'), '')")[0]
        in_recovery, guard = bool(row[0]), str(row[1])
        return not in_recovery and guard.split("=", 1)[-1].lower() not in ("on", "true", "1", "yes")

    def fence(self, grace_s: float) -> FenceReport:
        started = time.monotonic()
        self._rows(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(self._db()))
        (fenced_at,), = self._rows("SELECT clock_timestamp()")
        # The transaction each session has in flight now may finish within the grace; a session that is idle,
        # or that began another transaction since, is ended at once (it started before the guard: it could write).
        in_flight = {pid: xact for pid, state, xact in self._sessions(fenced_at) if state not in ("idle", "disabled")}
        ended = 0
        deadline = started + grace_s
        while True:
            sessions = self._sessions(fenced_at)
            if not sessions:
                break
            late = time.monotonic() >= deadline
            doomed = [pid for pid, state, xact in sessions
                      if late or state in ("idle", "disabled") or in_flight.get(pid, xact) != xact
                      or pid not in in_flight]
            if doomed:
                rows = self._rows("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (doomed,))
                ended += sum(1 for (done,) in rows if done)
            time.sleep(0.01)
        (position,), = self._rows("SELECT pg_current_wal_insert_lsn()::text")
        # One more WAL record after that position (flushed by the WAL writer within its delay): the walsender
        # reads past it, so a drained capture sees its log end beyond the position (an idle log may otherwise end
        # exactly at it, or just before a page header).
        self._rows("SELECT pg_logical_emit_message(false, 'ark', 'fenced')")
        waited = time.monotonic() - started
        log.info("fenced %s: read-only, %d sessions ended, %.2f s; log at %s", self._where(), ended, waited, position)
        return FenceReport(waited_s=waited, sessions_ended=ended, position=str(position))

    def _sessions(self, before: object) -> list[tuple[int, str, object]]:
        """(pid, state, xact_start) of the client sessions that started before ``before`` (see :data:`_OTHERS`)."""
        return [(int(pid), str(state or ""), xact) for pid, state, xact in
                self._rows("SELECT pid, state, xact_start " + _OTHERS, (before,))]

    def unfence(self) -> None:
        self._rows(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(self._db()))
        # A node agent may have fenced the data directory while the server was down (health.py fence_offline).
        try:
            offline = self._rows("SELECT count(*) FROM pg_file_settings WHERE name = 'default_transaction_read_only' "
                                 "AND sourcefile LIKE '%%postgresql.auto.conf'")[0][0]
        except SourceError:
            offline = 0  # pg_file_settings needs superuser or pg_read_all_settings: then no agent could write it
        if offline:
            self._rows("ALTER SYSTEM RESET default_transaction_read_only")
            self._rows("SELECT pg_reload_conf()")
        log.info("%s accepts writes", self._where())

    def log_position(self) -> str:
        (position,), = self._rows("SELECT pg_current_wal_insert_lsn()::text")
        return str(position)

    def _replicated(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.cfg.primary.tables)

    def sequences(self) -> dict[str, Sequence]:
        rows = self._rows("SELECT schemaname, sequencename, last_value, data_type::text, start_value, min_value, "
                          "max_value, increment_by, cycle, cache_size FROM pg_sequences")
        return {f"{r[0]}.{r[1]}": Sequence(last_value=None if r[2] is None else int(r[2]), data_type=str(r[3]),
                                           start=int(r[4]), minimum=int(r[5]), maximum=int(r[6]), increment=int(r[7]),
                                           cycle=bool(r[8]), cache=int(r[9]))
                for r in rows if self._replicated(f"{r[0]}.{r[1]}")}

    def set_sequences(self, values: dict[str, Sequence]) -> SequenceReport:
        here = {f"{schema}.{seq}": value for schema, seq, value in
                self._rows("SELECT schemaname, sequencename, last_value FROM pg_sequences")}
        moved = unchanged = 0
        created = []
        for name, want in sorted(values.items()):
            if want.column:  # another engine's column counter (MariaDB AUTO_INCREMENT): an identity column here
                done = self._column_counter(name, want)
                moved, unchanged = moved + (done != ""), unchanged + (done == "")
                if done == "created":
                    created.append(f"{name}.{want.column} (identity)")
                continue
            schema, _, seq = name.partition(".")
            ident = sql.Identifier(schema, seq)
            if name not in here:
                self._rows(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                self._rows(sql.SQL("CREATE SEQUENCE {} AS {} INCREMENT {} MINVALUE {} MAXVALUE {} START {} CACHE {} "
                                   "{}").format(ident, sql.SQL(want.data_type), *map(sql.Literal, (
                                       want.increment, want.minimum, want.maximum, want.start, want.cache)),
                                       sql.SQL("CYCLE" if want.cycle else "NO CYCLE")))
                created.append(name)
                here[name] = None
            if want.last_value is None or (here[name] is not None and int(here[name]) >= want.last_value):
                unchanged += 1
                continue
            self._rows("SELECT setval(%s::regclass, %s, true)", (ident.as_string(self._connect()), want.last_value))
            moved += 1
        if created:
            log.info("%s: created sequences %s (an initial sync copies tables only)", self._where(),
                     ", ".join(created))
        return SequenceReport(moved=moved, unchanged=unchanged, created=tuple(created))

    def _column_counter(self, table: str, want: Sequence) -> str:
        """Give ``table.column`` a counter past both ``want`` and the column's highest value: its identity or
        serial sequence moved forward, or (none yet) a new ``GENERATED BY DEFAULT AS IDENTITY``, so that an
        INSERT leaving the column out works. 'created', 'moved' or '' (already past)."""
        schema, _, name = table.partition(".")
        rel = sql.Identifier(schema, name)
        col = sql.Identifier(want.column)
        (seq, has_default), = self._rows(
            "SELECT pg_get_serial_sequence(%s, %s), a.atthasdef FROM pg_attribute a WHERE a.attrelid = %s::regclass "
            "AND a.attname = %s", (rel.as_string(self._connect()), want.column, rel.as_string(self._connect()),
                                   want.column))
        (top,), = self._rows(sql.SQL("SELECT max({}) FROM {}").format(col, rel))
        past = max(v for v in (want.last_value, None if top is None else int(top), 0) if v is not None)
        if seq is None:
            if has_default:  # a default of the standby's own (not a counter): not ours to replace
                log.warning("%s: %s.%s has a default that is not a sequence: left as it is", self._where(), table,
                            want.column)
                return ""
            self._rows(sql.SQL("ALTER TABLE {} ALTER COLUMN {} ADD GENERATED BY DEFAULT AS IDENTITY (START WITH {})")
                       .format(rel, col, sql.Literal(past + 1)))
            return "created"
        (last, called), = self._rows(sql.SQL("SELECT last_value, is_called FROM {}").format(
            sql.Identifier(*str(seq).replace('"', "").split(".", 1))))
        if (int(last) if called else int(last) - 1) >= past:
            return ""
        self._rows("SELECT setval(%s::regclass, %s, true)", (str(seq), past))
        return "moved"

    def promote(self) -> str:
        cfg = config_under(self.cfg, self.name)
        conn = self._connect()
        try:
            setup.ensure(conn, cfg)  # publication and slot, while ordinary sessions still cannot write
        except psycopg2.Error as exc:
            raise SourceError(f"{self._where()}: creating the capture set-up failed: {' '.join(str(exc).split())}",
                              fix="check the node's wal_level (logical) and max_replication_slots, then run the "
                                  "command again") from None
        state = catalog.slot_state(conn, catalog.slot_of(cfg))
        self.unfence()
        return state.confirmed_flush_lsn if state is not None and state.confirmed_flush_lsn else self.log_position()

    def drop_source(self) -> list[str]:
        cfg = config_under(self.cfg, self.name)
        slot, publication = catalog.slot_of(cfg), catalog.publication_of(cfg)
        dropped = []
        for _attempt in range(50):
            rows = self._rows("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            if not rows:
                break
            if rows[0][0] is not None:  # a capture still streams from it: it has published its last epoch
                self._rows("SELECT pg_terminate_backend(%s)", (rows[0][0],))
                time.sleep(0.1)
                continue
            try:
                self._rows("SELECT pg_drop_replication_slot(%s)", (slot,))
                dropped.append(f"slot {slot}")
                break
            except SourceError as exc:
                if "is active" not in exc.message:
                    raise
                time.sleep(0.1)
        for pub in (publication, inserts_publication_of(cfg)):  # the keyless policy's second one too
            if self._rows("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,)):
                self._rows(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(pub)))
                dropped.append(f"publication {pub}")
        # The DDL hooks stay (other groups may use them), but no longer act for this group: a standby's DDL
        # comes from the stream, and the keyless policy is the new primary's to apply.
        if self._rows("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'groups'", (HOOK_SCHEMA,)):
            rows = self._rows(sql.SQL("DELETE FROM {}.groups WHERE group_name = %s RETURNING 1").format(
                sql.Identifier(HOOK_SCHEMA)), (cfg.group,))
            if rows:
                dropped.append(f"its DDL hooks' registration of group {cfg.group}")
        log.info("%s is no longer a source: dropped %s", self._where(), ", ".join(dropped) or "nothing")
        return dropped

    def row(self, table: str, key: dict[str, object]) -> dict[str, object] | None:
        schema, _, name = table.partition(".")
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key)
        rows = self._rows(sql.SQL("SELECT row_to_json(t)::text FROM {} t WHERE {}").format(
            sql.Identifier(schema, name), where), tuple(key.values()))
        if not rows:
            return None
        found: dict[str, object] = json.loads(rows[0][0])
        return found

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
