"""MariaDB's :class:`~common.node_ops.NodeOps`: what a switchover or failover does to one MariaDB node.

* **Fence** (the old primary): the write transactions in flight (InnoDB transactions of client sessions that hold
  locks or changed rows) get the grace to end; then ``SET GLOBAL read_only = ON``; then every client session that
  exists at that moment is ended (``KILL CONNECTION``), but Ark's own (the node's configured user), replication
  threads and system threads. Why in that order: on MariaDB 10.11 ``read_only`` binds every session at once, the
  COMMIT of a transaction already in flight included (it fails with error 1290 and nothing of it is kept), so the
  grace has to come first. A session of a user with READ_ONLY ADMIN (root's ALL PRIVILEGES has it; SUPER no longer
  has it in 10.11) is not stopped by ``read_only``: ending every session that started before the fence is what
  stops it, and the application's connection pool then reconnects (to the new primary). Ark's user needs READ_ONLY
  ADMIN (to set ``read_only`` and to write under it), CONNECTION ADMIN (to end other users' sessions) and PROCESS
  (to see them): :func:`missing_privileges`. Give the application a user of its own: a session of Ark's user is
  never ended.
* **Sequences**: MariaDB SEQUENCE objects and the AUTO_INCREMENT counters of the replicated tables (a
  :class:`~common.node_ops.Sequence` with ``column`` set: the AUTO_INCREMENT column, keyed ``schema.table``).
  The new primary's are moved forward to at least the old one's (``SETVAL``, ``ALTER TABLE ... AUTO_INCREMENT``),
  never backwards. A standby's applier inserts explicit ids and InnoDB's counter follows them, so the counters are
  usually there already; this closes what the old primary handed out and rolled back (a gap InnoDB keeps).
* **Promote**: the capture's own prerequisites (binlog on, ROW, FULL image and metadata: producers/mariadb/setup.py)
  are checked; the binlog position is read while the node is still read-only, recorded in ``ark.source_start`` on
  the node (the capture of a new epoch starts exactly there: MariaDB has no slot to hold it), then ``read_only``
  goes. Idempotent: on a node already writable the recorded position stands.
* **Drop source**: a binlog is not a slot, there is nothing to drop on the server. What goes: the capture's binlog
  reader connection of the ended epoch (a standby read by a binlog reader is a source: the applier's guard would
  refuse it) and the node's ``ark.source_start`` row.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from common.config import ArkConfig
from common.errors import PrerequisiteError, SourceError
from common.node_ops import FenceReport, NodeOps, Sequence, SequenceReport
from common.roles import config_under, node
from producers.mariadb import catalog
from producers.mariadb.setup import problems
from schemas.positions import mariadb_position

log = logging.getLogger(__name__)

#: Where a promoted node records the binlog position its capture starts at (read by producers/mariadb/capture.py).
START_DB = "ark"
START_TABLE = f"{START_DB}.source_start"
START_DDL = (f"CREATE DATABASE IF NOT EXISTS {START_DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
             f"""CREATE TABLE IF NOT EXISTS {START_TABLE} (
                 `group`     varchar(200) NOT NULL PRIMARY KEY,
                 node        varchar(200) NOT NULL,
                 position    text         NOT NULL,
                 promoted_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB""")

#: Threads that are not client sessions: never ended.
_NOT_CLIENTS = ("Daemon", "Binlog Dump", "Binlog Dump GTID", "Slave_IO", "Slave_SQL", "Slave_worker", "Killed")
_SYSTEM_USERS = ("system user", "event_scheduler", "unauthenticated user")

#: Every session with its InnoDB transaction, if any (a writer: it changed rows or holds locks).
_SESSIONS = """
SELECT p.ID, p.USER, p.COMMAND, t.trx_id, COALESCE(t.trx_rows_modified, 0) + COALESCE(t.trx_lock_structs, 0)
FROM information_schema.PROCESSLIST p LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID
"""

#: information_schema.INNODB_TRX is a cache that InnoDB refreshes only when it was not read for 100 ms: polled
#: faster, it keeps showing transactions that ended long ago.
TRX_CACHE_S = 0.15

_READ_ONLY_FIX = "GRANT READ_ONLY ADMIN, CONNECTION ADMIN, PROCESS ON *.* TO {user}"


@dataclass(frozen=True)
class Session:
    """One row of the processlist, with its InnoDB transaction (``trx`` "" when none; ``writes``: rows changed or
    locks held)."""

    id: int
    user: str
    command: str
    trx: str = ""
    writes: int = 0


def missing_privileges(grants: Iterable[str]) -> list[str]:
    """The global privileges fencing needs that ``SHOW GRANTS`` does not give (``ALL PRIVILEGES ON *.*`` has all).

    READ_ONLY ADMIN: set ``read_only`` and write under it (in 10.11 SUPER no longer includes it);
    CONNECTION ADMIN (or SUPER): end other users' sessions; PROCESS: see them.
    """
    held: set[str] = set()
    for grant in grants:
        text = " ".join(grant.upper().split())
        found = re.match(r"GRANT (.+?) ON \*\.\* TO ", text)
        if found is None:
            continue
        if found.group(1).startswith("ALL PRIVILEGES"):
            return []
        held.update(p.strip() for p in found.group(1).split(","))
    missing = []
    if "READ_ONLY ADMIN" not in held:
        missing.append("READ_ONLY ADMIN")
    if "CONNECTION ADMIN" not in held and "SUPER" not in held:
        missing.append("CONNECTION ADMIN")
    if "PROCESS" not in held:
        missing.append("PROCESS")
    return missing


def client_sessions(sessions: Iterable[Session], *, own_id: int, spared_users: Iterable[str]) -> list[Session]:
    """The sessions fencing may end: client sessions, not this one, not Ark's (``spared_users``), not replication
    or system threads."""
    spared = set(spared_users)
    return [s for s in sessions if s.id != own_id and s.user not in spared and s.user not in _SYSTEM_USERS
            and not s.command.startswith(_NOT_CLIENTS)]


def still_in_flight(in_flight: Mapping[int, str], now: Iterable[Session]) -> dict[int, str]:
    """Of the write transactions in flight when the fence began (session id -> trx id), those still running."""
    running = {(s.id, s.trx) for s in now if s.trx}
    return {sid: trx for sid, trx in in_flight.items() if (sid, trx) in running}


def auto_increment_target(want_last: int | None, have_next: int | None) -> int | None:
    """The AUTO_INCREMENT to set on the new primary so that its next value is past ``want_last`` (the old primary's
    last value handed out), or None when it already is (never backwards)."""
    if want_last is None:
        return None
    if have_next is not None and have_next > want_last:
        return None
    return want_last + 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _qualified(dotted: str) -> str:
    schema, _, name = dotted.partition(".")
    return f"{_ident(schema)}.{_ident(name)}"


class MariaDBNodeOps(NodeOps):
    """One MariaDB node of the group (see the module docstring)."""

    def __init__(self, cfg: ArkConfig, name: str, *, connect_timeout_s: int | None = None) -> None:
        self.cfg = cfg
        self.name = name
        self.settings: Any = node(cfg, name)
        self._timeout = connect_timeout_s
        self._conn: Any = None

    # -- plumbing ------------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"node {self.name} ({catalog.where(self.settings)})"

    def _connect(self) -> Any:
        if self._conn is None or not self._conn.open:
            extra: dict[str, Any] = {"autocommit": True}
            if self._timeout is not None:  # a failover: a server that accepts but never answers must not hang it
                extra.update(connect_timeout=self._timeout, read_timeout=max(10, 3 * self._timeout),
                             write_timeout=max(10, 3 * self._timeout))
            self._conn = catalog.connect(self.settings, role=f"node {self.name}", **extra)
        return self._conn

    def _rows(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            return catalog.query(self._connect(), statement, params)
        except pymysql.err.Error as exc:
            if not (self._conn is not None and self._conn.open):
                self._conn = None
            err = catalog.source_error(self.settings, exc, role=f"node {self.name}")
            raise SourceError(f"{self._where()}: {err.message}",
                              fix="check the node and run the command again (every step is idempotent)") from None

    def _sessions(self) -> list[Session]:
        return [Session(int(r[0]), _text(r[1] or ""), _text(r[2] or ""), _text(r[3] or ""), int(r[4] or 0))
                for r in self._rows(_SESSIONS)]

    def _own_id(self) -> int:
        return int(self._connect().thread_id())

    # -- NodeOps ---------------------------------------------------------------------------------------
    def writable(self) -> bool:
        (read_only,), = self._rows("SELECT @@global.read_only")
        return _text(read_only) in ("0", "OFF")

    def _require_privileges(self) -> None:
        missing = missing_privileges(_text(r[0]) for r in self._rows("SHOW GRANTS"))
        if missing:
            raise PrerequisiteError(f"{self._where()}: fencing needs {', '.join(missing)} for {self.settings.user} "
                                    "(set read_only and write under it, end and see other users' sessions); "
                                    "nothing was changed",
                                    fix=_READ_ONLY_FIX.format(user=self.settings.user))

    def fence(self, grace_s: float) -> FenceReport:
        self._require_privileges()  # before anything changes: nothing half-applied
        started = time.monotonic()
        own, spared = self._own_id(), {self.settings.user}
        clients = client_sessions(self._sessions(), own_id=own, spared_users=spared)
        in_flight = {s.id: s.trx for s in clients if s.trx and s.writes}
        deadline = started + grace_s
        while in_flight and time.monotonic() < deadline:
            time.sleep(min(TRX_CACHE_S, max(0.0, deadline - time.monotonic())))
            in_flight = still_in_flight(in_flight, self._sessions())
        self._rows("SET GLOBAL read_only = ON")
        ended = 0
        for session in client_sessions(self._sessions(), own_id=own, spared_users=spared):
            try:
                self._rows(f"KILL CONNECTION {int(session.id)}")
                ended += 1
            except SourceError as exc:
                if "Unknown thread id" not in exc.message:  # gone by itself meanwhile
                    raise
        position = self.log_position()
        waited = time.monotonic() - started
        log.info("fenced %s: read_only, %d sessions ended, %.2f s; binlog at %s", self._where(), ended, waited,
                 position)
        return FenceReport(waited_s=waited, sessions_ended=ended, position=position)

    def unfence(self) -> None:
        self._rows("SET GLOBAL read_only = OFF")
        log.info("%s accepts writes", self._where())

    def log_position(self) -> str:
        """``FILE:OFFSET gtid=STATE`` at the binlog's end (the GTID state the server has at exactly that offset)."""
        rows = self._rows("SHOW MASTER STATUS")
        if not rows:
            raise SourceError(f"{self._where()} has no binary log", fix="start the server with log_bin "
                              "(binlog_format=ROW, binlog_row_image=FULL) and restart it")
        file, offset = _text(rows[0][0]), int(rows[0][1])
        (gtid,), = self._rows("SELECT BINLOG_GTID_POS(%s, %s)", (file, offset))
        return mariadb_position(file, offset, _text(gtid or "")).text

    # -- sequences and AUTO_INCREMENT ------------------------------------------------------------------
    def _tables(self, kind: str) -> list[str]:
        rows = self._rows("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = %s "
                          "ORDER BY 1, 2", (kind,))
        return [f"{_text(s)}.{_text(t)}" for s, t in rows
                if catalog.matches(f"{_text(s)}.{_text(t)}", self.cfg.primary.tables)]

    def _auto_increments(self) -> dict[str, tuple[str, int | None]]:
        """schema.table -> (its AUTO_INCREMENT column, the next value it hands out) of the replicated tables."""
        rows = self._rows("SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, t.AUTO_INCREMENT FROM "
                          "information_schema.COLUMNS c JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = "
                          "c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME WHERE c.EXTRA LIKE '%%auto_increment%%' "
                          "AND t.TABLE_TYPE = 'BASE TABLE'")
        out = {}
        for schema, table, column, next_value in rows:
            name = f"{_text(schema)}.{_text(table)}"
            if catalog.matches(name, self.cfg.primary.tables):
                out[name] = (_text(column), None if next_value is None else int(next_value))
        return out

    def sequences(self) -> dict[str, Sequence]:
        out: dict[str, Sequence] = {}
        for name in self._tables("SEQUENCE"):
            (nxt, minimum, maximum, start, increment, cache, cycle), = self._rows(
                "SELECT next_not_cached_value, minimum_value, maximum_value, start_value, increment, cache_size, "
                f"cycle_option FROM {_qualified(name)}")
            # The last value handed out is not kept (LASTVAL is per session): everything below the next uncached
            # value may have been, so that is what the new primary must pass (forward only: safe, may skip some).
            last = int(nxt) - int(increment)
            out[name] = Sequence(last_value=None if last < int(start) else last, start=int(start),
                                 minimum=int(minimum), maximum=int(maximum), increment=int(increment),
                                 cycle=bool(int(cycle)), cache=max(1, int(cache)))
        for name, (column, next_value) in self._auto_increments().items():
            (top,), = self._rows(f"SELECT MAX({_ident(column)}) FROM {_qualified(name)}")
            candidates = [v for v in (None if next_value is None else next_value - 1,
                                      None if top is None else int(top)) if v is not None and v > 0]
            out[name] = Sequence(last_value=max(candidates) if candidates else None, column=column)
        return out

    def set_sequences(self, values: dict[str, Sequence]) -> SequenceReport:
        here_seqs = set(self._tables("SEQUENCE"))
        here_auto = self._auto_increments()
        moved = unchanged = 0
        created: list[str] = []
        for name, want in sorted(values.items()):
            if want.column:
                if name not in here_auto:
                    if self._add_auto_increment(name, want):
                        created.append(name)
                        moved += 1
                    else:
                        unchanged += 1
                    continue
                target = auto_increment_target(want.last_value, here_auto[name][1])
                if target is None:
                    unchanged += 1
                    continue
                self._rows(f"ALTER TABLE {_qualified(name)} AUTO_INCREMENT = {int(target)}")
                log.info("%s: %s AUTO_INCREMENT moved to %d", self._where(), name, target)
                moved += 1
                continue
            if name not in here_seqs:
                schema = name.partition(".")[0]
                self._rows(f"CREATE DATABASE IF NOT EXISTS {_ident(schema)}")
                self._rows(f"CREATE SEQUENCE IF NOT EXISTS {_qualified(name)} START WITH {int(want.start)} "
                           f"MINVALUE {int(want.minimum)} MAXVALUE {int(want.maximum)} INCREMENT BY "
                           f"{int(want.increment)} CACHE {int(want.cache)} {'CYCLE' if want.cycle else 'NOCYCLE'}")
                created.append(name)
            if want.last_value is None:
                unchanged += 1
                continue
            (result,), = self._rows(f"SELECT SETVAL({_qualified(name)}, %s)", (want.last_value,))
            # SETVAL never moves a sequence backwards: it answers NULL when it is already past the value.
            if result is None:
                unchanged += 1
            else:
                moved += 1
        if created:
            log.info("%s: created sequences %s (an initial sync copies tables only)", self._where(), ", ".join(created))
        return SequenceReport(moved=moved, unchanged=unchanged, created=tuple(created))

    def _add_auto_increment(self, name: str, want: Sequence) -> bool:
        """Give ``name``'s column ``want.column`` the AUTO_INCREMENT it has on the old primary, starting past its
        last value. A standby's table is created from the stream's shapes, which do not carry AUTO_INCREMENT (the
        binlog's table maps do not say it): without this the application's first INSERT on the new primary fails
        (error 1364). MODIFY rebuilds the table: once per table and node, the node keeps it as a standby (the
        applier writes explicit ids). False when the node lacks the table or the column."""
        schema, _, table = name.partition(".")
        rows = self._rows("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND "
                          "TABLE_NAME = %s AND COLUMN_NAME = %s", (schema, table, want.column))
        if not rows:
            log.warning("%s: table %s has no column %s here: its AUTO_INCREMENT was not set", self._where(), name,
                        want.column)
            return False
        start = auto_increment_target(want.last_value, None) or 1
        self._rows(f"ALTER TABLE {_qualified(name)} MODIFY {_ident(want.column)} {_text(rows[0][0])} NOT NULL "
                   f"AUTO_INCREMENT, AUTO_INCREMENT = {int(start)}")
        log.warning("%s: %s.%s had no AUTO_INCREMENT here (a standby's table is created without it): added, "
                    "starting at %d", self._where(), name, want.column, start)
        return True

    # -- promote / drop source ---------------------------------------------------------------------------
    def promote(self) -> str:
        primary = config_under(self.cfg, self.name).primary
        fatal = [p for p in problems(self._connect(), primary) if p.fatal]
        if fatal:
            raise PrerequisiteError(f"{self._where()} cannot be captured: {fatal[0].what}", fix=fatal[0].fix)
        if self.writable():
            recorded = self.recorded_start()
            if recorded is not None:  # promoted already (a command run again): its capture starts where it did
                return recorded
        for statement in START_DDL:
            self._rows(statement)
        # Read while ordinary sessions cannot write: nothing of theirs lies before this position.
        position = self.log_position()
        self._rows(f"REPLACE INTO {START_TABLE} (`group`, node, position) VALUES (%s, %s, %s)",
                   (self.cfg.group, self.name, position))
        self.unfence()
        return position

    def recorded_start(self) -> str | None:
        """The position this node's promotion recorded for the group (None: none recorded)."""
        if not self._rows("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                          (START_DB, "source_start")):
            return None
        rows = self._rows(f"SELECT position FROM {START_TABLE} WHERE `group` = %s", (self.cfg.group,))
        return _text(rows[0][0]) if rows else None

    def drop_source(self) -> list[str]:
        # A binlog is not a slot: the server keeps it by time whoever reads it, and there is nothing to drop. What
        # makes the node a source is a reader: the ended epoch's capture may still hold its binlog connection
        # (it has published its end-of-epoch marker), and the applier's guard refuses a node that is read.
        dropped = []
        for _attempt in range(50):
            readers = [s for s in self._sessions() if s.command.startswith("Binlog Dump")
                       and s.user == self.settings.user]
            if not readers:
                break
            for reader in readers:
                try:
                    self._rows(f"KILL CONNECTION {int(reader.id)}")
                    dropped.append(f"binlog reader connection {reader.id}")
                except SourceError as exc:
                    if "Unknown thread id" not in exc.message:
                        raise
            time.sleep(0.1)
        if self.recorded_start() is not None:
            self._rows(f"DELETE FROM {START_TABLE} WHERE `group` = %s", (self.cfg.group,))
            dropped.append(f"capture start position ({START_TABLE})")
        log.info("%s is no longer a source: dropped %s", self._where(), ", ".join(dropped) or "nothing")
        return dropped

    def row(self, table: str, key: dict[str, object]) -> dict[str, object] | None:
        where = " AND ".join(f"{_ident(c)} = %s" for c in key)
        conn = self._connect()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(f"SELECT * FROM {_qualified(table)} WHERE {where}", tuple(key.values()))
                found = cur.fetchone()
        except pymysql.err.Error as exc:
            raise catalog.source_error(self.settings, exc, role=f"node {self.name}") from None
        # The divergence ledger is JSON: the driver's Decimal, date and time values as their text, bytes as \\x hex
        # (as the ledger writes the old primary's own values, failover/divergence.py).
        return None if found is None else {k: _json_value(v) for k, v in found.items()}

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.err.Error:
                log.debug("closing the connection to %s failed", self._where(), exc_info=True)
        self._conn = None


def _json_value(value: object) -> object:
    """A driver value as the divergence ledger's JSON holds it."""
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)
