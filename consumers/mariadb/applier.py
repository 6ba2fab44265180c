"""The MariaDB standby: :class:`MariaDBApplier`, with PyMySQL.

**Exactly once.** Rows and the state row (``ark.apply_state``) commit in one InnoDB transaction.
MariaDB's DDL is not transactional (it commits by itself), so shape changes run on a side
connection and the applier declares ``transactional_ddl = False``: the apply runner then makes
everything before a shape change durable (with its state row) first, and the adaptation itself
is idempotent (it compares the standby's catalog with the new shape), so a crash between the
ALTER and the next state row finds nothing left to do. TRUNCATE is applied as DELETE (TRUNCATE
would commit too).

**Set-based where it pays** (:mod:`.runs`). A run (:mod:`.plan`) of at least ``set_threshold`` rows is applied with
multi-row statements: INSERTs batched by PyMySQL into one multi-row INSERT; DELETEs by key lists
(``(k) IN (...)``), their affected-row count checked; UPDATEs by a key count (every row must exist)
then one ``INSERT ... ON DUPLICATE KEY UPDATE``. Shorter runs go row by row, each UPDATE/DELETE
checked to match exactly one row (``CLIENT_FOUND_ROWS``: matched, not changed, rows).

**Read-only for others.** :meth:`MariaDBApplier.prepare` sets the server's ``read_only``: only users
with READ_ONLY ADMIN can write (since 10.11 SUPER does not include it), which is the applier's user and nobody
else's. For a stronger guard give readers a user with SELECT only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pymysql
from pymysql.constants import CLIENT

from common.engines.mariadb import IDENTITY_SQL, MariaDBStandby, identity_from_row
from common.errors import ArkError
from common.guard import TargetFacts
from common.identity import DatabaseIdentity
from common.settings import StandbySettings
from common.snapshot import TableRows
from consumers.base import Applier, ApplyState, Problem, StagedTable
from consumers.errors import ApplierRunning, StateMoved, TableNeedsResync
from consumers.mariadb import ddl, parts, runs, sequences, sql, state
from consumers.mariadb.errors import classify, code_of, message_of
from consumers.mariadb.plan import split_runs
from consumers.tables import TableState, staging_name
from schemas.entries import Column, Op, Position, RowChange, SchemaStep, SequenceValue, TableMeta, Value, ValuePart

log = logging.getLogger(__name__)

#: The applier's session: UTC; strict, but zero dates and explicit zeros in AUTO_INCREMENT columns kept as they come;
#: READ COMMITTED, because a transaction holding a REPEATABLE READ view cannot use a table created after that view
#: (error 1412), and MariaDB's DDL runs beside the transaction (a sync creates tables while it loads others).
SESSION = ("SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO',"
           " SESSION lock_wait_timeout = 60, SESSION innodb_lock_wait_timeout = 50,"
           " SESSION tx_isolation = 'READ-COMMITTED', SESSION group_concat_max_len = 4294967295")
_LOAD_BATCH = 1000  # rows per executemany of a bulk load (PyMySQL sends them as multi-row INSERTs)


class MariaDBApplier(Applier):
    """A MariaDB standby written only by Ark (see the module docstring)."""

    engine = "mariadb"
    transactional_ddl = False

    def __init__(self, settings: StandbySettings, *, set_threshold: int = 50) -> None:
        """Describe the standby; nothing connects until first use."""
        if not isinstance(settings, MariaDBStandby):
            raise TypeError(f"MariaDBApplier needs MariaDB settings, got {settings.engine}")
        self.settings: MariaDBStandby = settings
        self.set_threshold = max(1, set_threshold)
        self._conn: Any = None
        self._side: Any = None
        self._in_txn = False
        self._independent: dict[frozenset[str], bool] = {}
        self._ctx: dict[str, Any] = {}
        self._drop_after_commit: list[str] = []  # staging copies swapped in by the open transaction
        self._parts_ready = False  # the session's temporary table of large values' parts exists
        self._lock_name = ""  # the standby's applier lock, once taken
        self._missing_seqs: set[str] = set()  # sequences of the stream this standby lacks (said once)

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> Any:
        s = self.settings
        kwargs = s.connect_kwargs()
        kwargs.update(client_flag=CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS, init_command=SESSION)
        try:
            return pymysql.connect(**kwargs)
        except pymysql.err.Error as exc:
            raise classify(exc, what="connecting", settings=s) from None

    @property
    def conn(self) -> Any:
        """The applier's session (opened, or reopened after a loss, on demand; the standby's applier lock,
        once taken, is taken again on the new session)."""
        if self._conn is None or not self._conn.open:
            self._conn = self._connect()
            self._in_txn = False
            self._parts_ready = False
            log.info("connected to standby %s", self.settings.describe())
            if self._lock_name:
                self._take_lock(self._conn, self._lock_name)
        return self._conn

    def lock_standby(self, group: str, standby: str) -> None:
        """Hold the standby's applier lock (``GET_LOCK``, session-level) for the life of this instance."""
        self._lock_name = f"ark apply {group}/{standby}"[:64]
        self._take_lock(self.conn, self._lock_name)
        log.info("standby %s: this applier holds its lock (group %s)", standby, group)

    def _take_lock(self, conn: Any, name: str) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)", (name, name))
            got, holder = cur.fetchone()
            if got == 1:
                return
            cur.execute("SELECT user, host, time FROM information_schema.processlist WHERE id = %s", (holder,))
            row = cur.fetchone()
        who = f"connection {holder}" + (f" ({row[0]}@{row[1]}, for {row[2]} s)" if row else "")
        raise ApplierRunning(f"another applier holds standby {self.settings.name}: {who}",
                             fix=f"run one 'ark apply {self.settings.name}' at a time; stop the other one (or "
                                 f"KILL {holder} on the standby if its process is gone)")

    @property
    def side(self) -> Any:
        """The session that runs DDL (autocommit) beside the data transaction."""
        if self._side is None or not self._side.open:
            self._side = self._connect()
        return self._side

    @property
    def in_transaction(self) -> bool:
        """True between :meth:`begin` and :meth:`commit`/:meth:`rollback`."""
        return self._in_txn

    def _abort(self) -> None:
        self._in_txn = False
        self._drop_after_commit = []  # the swap rolled back: its staging copy stays (dropped by the next copy)
        conn = self._conn
        if conn is None:
            return
        if conn.open:
            try:
                conn.rollback()
                return
            except pymysql.err.Error as exc:
                log.info("rollback on standby %s failed (%s); reconnecting later", self.settings.name, exc)
        try:
            conn.close()
        except pymysql.err.Error:
            pass
        self._conn = None

    @contextmanager
    def _guard(self, what: str, **ctx: Any) -> Iterator[None]:
        """Roll back and raise a classified Ark error for anything that fails inside."""
        self._ctx = dict(ctx)
        try:
            yield
        except ArkError:
            self._abort()
            raise
        except pymysql.err.Error as exc:
            self._abort()
            raise classify(exc, what=what, settings=self.settings, **self._ctx) from exc

    def _require_txn(self) -> None:
        if not self._in_txn:
            raise RuntimeError("MariaDBApplier: call begin() before writing")

    def _exec(self, statement: str, params: Sequence[Any] | None = None, conn: Any = None) -> Any:
        cur = (conn or self.conn).cursor()
        cur.execute(statement, params)
        return cur

    # -- Applier -----------------------------------------------------------------------------------
    def check_prerequisites(self) -> list[Problem]:
        """Connectivity, a MariaDB server, and the privileges the applier needs."""
        try:
            with self._guard("checking prerequisites"):
                row = self._exec("SELECT VERSION(), CURRENT_USER(), @@global.log_bin, @@global.binlog_format"
                                 ).fetchone()
                grants = " ".join(str(r[0]) for r in self._exec("SHOW GRANTS").fetchall()).upper()
        except ArkError as exc:
            return [Problem(exc.message, exc.fix)]
        found = []
        if "MARIADB" not in str(row[0]).upper():
            found.append(Problem(f"standby {self.settings.name} runs {row[0]}, not MariaDB",
                                 "use engine: mariadb only for MariaDB standbys"))
        if "ALL PRIVILEGES ON *.*" not in grants and "READ_ONLY ADMIN" not in grants:  # 10.11: SUPER lacks it
            found.append(Problem(f"user {row[1]} on standby {self.settings.name} cannot write while read_only is ON",
                                 f"GRANT READ_ONLY ADMIN ON *.* TO {row[1]} (and ALL on the replicated schemas)"))
        if str(row[2]) == "1" and str(row[3]).upper() == "STATEMENT":
            found.append(Problem(f"standby {self.settings.name} logs its binlog as STATEMENT, which cannot log the "
                                 "applier's READ COMMITTED transactions",
                                 "SET GLOBAL binlog_format = 'ROW' (or MIXED) and put it in my.cnf"))
        return found

    def prepare(self) -> None:
        """Create database ark and its tables; set the server read-only for others. Idempotent."""
        with self._guard("preparing the standby"):
            for stmt in state.SCHEMA_DDL:
                self._exec(stmt, conn=self.side)
            self._exec(f"SET GLOBAL read_only = {'ON' if self.settings.read_only else 'OFF'}", conn=self.side)
        log.info("standby %s prepared (read-only for others: %s)", self.settings.name, self.settings.read_only)

    def _exists(self, schema: str, table: str) -> bool:
        row = self._exec("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                         [schema, table]).fetchone()
        return row is not None

    def identity(self) -> DatabaseIdentity:
        """Which server this really is (read-only; :data:`common.engines.mariadb.IDENTITY_SQL`)."""
        with self._guard("reading the server's identity"):
            row = self._exec(IDENTITY_SQL).fetchone()
        return identity_from_row(row)

    def inspect(self) -> TargetFacts:
        """Identity, Ark state rows, and who reads this server's binlog (read-only, creates nothing).

        A server whose binlog a replica or a capture is reading (a ``Binlog Dump`` connection, or a replica
        registered with it) is a replication source: what the applier writes would flow on into that stream.
        """
        ident = self.identity()
        with self._guard("inspecting the standby"):
            rows: dict[tuple[str, str], str] = {}
            if self._exists(state.STATE_DB, "apply_state"):
                for group, standby, recorded in self._exec(
                        f"SELECT `group`, standby, COALESCE(JSON_VALUE(extra, '$.identity'), '') "
                        f"FROM {state.STATE_DB}.apply_state").fetchall():
                    rows[(str(group), str(standby))] = str(recorded)
            sources = [f"a binlog reader ({user}@{host}, connection {cid})" for cid, user, host in self._exec(
                "SELECT ID, USER, HOST FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%%' "
                "ORDER BY ID", []).fetchall()]
            try:  # needs REPLICATION MASTER ADMIN: without it, the binlog dump connections above must do
                sources += [f"replica server id {r[0]} ({r[1]}:{r[2]})"
                            for r in self._exec("SHOW SLAVE HOSTS").fetchall()]
            except pymysql.err.Error as exc:
                log.debug("SHOW SLAVE HOSTS on standby %s: %s", self.settings.name, exc)
        return TargetFacts(ident, rows, sources)

    def occupied(self, tables: Collection[str]) -> dict[str, int]:
        """Existing tables among ``tables`` that hold rows, and how many (counted up to 1,000,001)."""
        out: dict[str, int] = {}
        with self._guard("counting rows on the standby"):
            for table in sorted(tables):
                if not self._exists(*sql.split_table(table)):
                    continue
                row = self._exec(f"SELECT COUNT(*) FROM (SELECT 1 FROM {sql.qualified(table)} LIMIT 1000001) s"
                                 ).fetchone()
                if row is not None and row[0]:
                    out[table] = int(row[0])
        return out

    def load_state(self, group: str, standby: str) -> ApplyState | None:
        """The saved state row, or None (also when database ark does not exist: nothing is created here)."""
        with self._guard("loading the apply state"):
            if not self._exists(state.STATE_DB, "apply_state"):
                return None
            row = self._exec(state.LOAD_STATE_SQL, [group, standby]).fetchone()
        return state.state_from_row(row) if row else None

    def load_table_metas(self, group: str) -> dict[str, TableMeta]:
        """The stored table shapes of ``group``."""
        with self._guard("loading table metadata"):
            rows = self._exec(state.LOAD_METAS_SQL, [group]).fetchall()
        return {str(r[0]): state.meta_from_json(r[1]) for r in rows}

    def begin(self) -> None:
        """Open a transaction (a no-op when one is open)."""
        if self._in_txn:
            return
        with self._guard("beginning a transaction"):
            self._exec("START TRANSACTION")
            self._in_txn = True

    def save_state(self, state_: ApplyState, previous: ApplyState | None = None) -> None:
        """Write the state row inside the open transaction: upsert, or with ``previous`` a compare-and-set
        that raises StateMoved (after rolling back) unless the row is still ``previous``."""
        self._require_txn()
        with self._guard("saving the apply state", position=state_.position):
            if previous is None:
                self._exec(state.SAVE_STATE_SQL, state.state_params(state_))
                return
            params = state.state_params(state_)
            cur = self._exec(state.CAS_STATE_SQL, [*params[2:], state_.group, state_.standby,
                                                   previous.next_offset, previous.epoch])
            changed = cur.rowcount if cur is not None else 1
        if changed != 1:
            self._abort()
            raise StateMoved(f"the state row of standby {state_.standby} changed under this applier (it read next "
                             f"offset {previous.next_offset}, epoch {previous.epoch}): another applier or 'ark sync' "
                             "wrote it; nothing of this transaction was committed",
                             fix=f"run one 'ark apply {state_.standby}' at a time")

    def commit(self) -> None:
        """Commit the open transaction (then drop the staging copies it swapped in)."""
        if not self._in_txn:
            return
        with self._guard("committing"):
            self.conn.commit()
            self._in_txn = False
        doomed, self._drop_after_commit = self._drop_after_commit, []
        for staging in doomed:
            self._drop_table(staging)

    def rollback(self) -> None:
        """Roll back; safe when nothing is open or the connection is gone."""
        self._abort()

    def close(self) -> None:
        """Roll back and close both sessions; safe to call twice."""
        self._abort()
        for conn in (self._conn, self._side):
            if conn is not None and conn.open:
                try:
                    conn.close()
                except pymysql.err.Error:
                    log.debug("closing a standby connection failed", exc_info=True)
        self._conn = self._side = None

    # -- shapes ------------------------------------------------------------------------------------
    def _standby_columns(self, table: str) -> tuple[list[ddl.StandbyColumn] | None, list[str]]:
        schema, name = sql.split_table(table)
        rows = self._exec("SELECT COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME, IS_NULLABLE, EXTRA FROM "
                          "information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                          "ORDER BY ORDINAL_POSITION", [schema, name], conn=self.side).fetchall()
        if not rows:
            return None, []
        cols = [ddl.StandbyColumn(str(r[0]), ddl.normalise(str(r[1]), r[2]), str(r[3]) == "NO",
                                  "auto_increment" in str(r[4] or "").lower()) for r in rows]
        pk = [str(r[0]) for r in self._exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND "
            "INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", [schema, name], conn=self.side).fetchall()]
        return cols, pk

    def _literal(self, col: Column, text: str) -> str:
        if col.type == "bytes" and text.startswith("\\x"):
            return "X'" + text[2:] + "'"
        value = sql.param_converter(col)(text)
        return str(self.side.escape(value))

    def _adapt(self, meta: TableMeta, previous: TableMeta | None = None) -> list[str]:
        """Create or adapt the standby table (side connection, idempotent); the statements run."""
        current, pk = self._standby_columns(meta.table)
        table = sql.qualified(meta.table)

        def has_rows() -> bool:
            return bool(self._exec(f"SELECT EXISTS (SELECT 1 FROM {table})", conn=self.side).fetchone()[0])

        steps = ddl.plan(meta, current, pk, has_rows=has_rows, literal=self._literal, previous=previous)
        for statement in steps.statements:
            log.info("standby DDL for %s: %s", meta.table, statement)
            try:
                self._exec(statement, conn=self.side)
            except pymysql.err.Error as exc:
                code = code_of(exc)
                if code in (1265, 1264, 1366, 1292, 1406, 1062, 1138, 1171, 1265, 1292, 4025, 1060, 1054, 1091):
                    raise TableNeedsResync(meta.table, f"the standby table cannot take version {meta.version}: "
                                           f"{message_of(exc)} [{statement}]", position=meta.position) from None
                raise
        return steps.statements

    def apply_table_meta(self, group: str, meta: TableMeta, previous: TableMeta | None) -> None:
        """Create or adapt the table (side connection), and store its shape in the open transaction."""
        self._require_txn()
        with self._guard("adapting the table", table=meta.table, position=meta.position):
            if previous is None or previous != meta:
                self._adapt(meta, previous)
            self._exec(state.SAVE_META_SQL, [group, meta.table, meta.version, state.meta_json(meta)])

    # -- schema changes of a primary of another engine ---------------------------------------------------
    def run_schema_step(self, group: str, step: SchemaStep, *, follow_drop: bool, what: str) -> bool:
        """One step of a primary's DDL. Only PostgreSQL's DDL hook sends steps, and their SQL is PostgreSQL's: a
        MariaDB standby follows the tables' shapes (``table`` steps, the loop's), renames and, with
        ``follow_drop``, dropped tables; types, indexes, constraints, functions and the like stay the
        primary's, as on any standby of another engine (README, "Across engines"). Never asks for a commit."""
        self._require_txn()
        if step.action == "drop-table" and follow_drop:
            with self._guard("dropping a table", table=step.object):
                self._exec(f"DROP TABLE IF EXISTS {sql.qualified(step.object)}", conn=self.side)
                self._exec(state.FORGET_META_SQL, [group, step.object])
                self._independent.clear()
            log.info("%s: dropped table %s on standby %s (follow_drop)", what, step.object, self.settings.name)
            return False
        if step.action in ("sql", "optional-sql"):
            log.warning("%s: not run on MariaDB standby %s: a %s step on %s in the primary's SQL dialect (only "
                        "table shapes cross engines)", what, self.settings.name, step.action, step.object)
        return False

    def rename_table(self, group: str, old: str, new: str) -> None:
        """The primary renamed ``old`` to ``new`` (or moved it to another schema): ``RENAME TABLE`` here (side
        connection: MariaDB's DDL commits by itself), and its stored shape in the open transaction."""
        self._require_txn()
        with self._guard("renaming a table", table=old):
            schema, name = sql.split_table(old)
            row = self._exec("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                             "TABLE_NAME = %s", [schema, name], conn=self.side).fetchone()
            if row is None or not row[0]:
                log.info("table %s does not exist on standby %s: nothing to rename", old, self.settings.name)
                return
            self._exec(f"CREATE DATABASE IF NOT EXISTS {sql.quote_ident(sql.split_table(new)[0])} "
                       "CHARACTER SET utf8mb4", conn=self.side)
            self._exec(f"RENAME TABLE {sql.qualified(old)} TO {sql.qualified(new)}", conn=self.side)
            self._exec(state.RENAME_META_SQL, [new, new, group, old])
            self._independent.clear()
        log.info("renamed table %s to %s on standby %s", old, new, self.settings.name)

    def independent_tables(self, tables: Collection[str]) -> bool:
        """True when no foreign key on the standby links any of ``tables`` (checked once per set)."""
        key = frozenset(tables)
        cached = self._independent.get(key)
        if cached is None:
            names = [sql.split_table(t) for t in key]
            cond = " OR ".join(["(TABLE_SCHEMA = %s AND TABLE_NAME = %s) OR "
                                "(REFERENCED_TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME = %s)"] * len(names))
            params = [p for s, t in names for p in (s, t, s, t)]
            row = self._exec(f"SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE WHERE "
                             f"REFERENCED_TABLE_NAME IS NOT NULL AND ({cond})", params, conn=self.side).fetchone()
            cached = bool(row is not None and row[0] == 0)
            self._independent[key] = cached
        return cached

    # -- rows --------------------------------------------------------------------------------------
    def store_part(self, part: ValuePart) -> None:
        """Keep one part of a large value in the open transaction (see :mod:`.parts`)."""
        self._require_txn()
        with self._guard("storing a part of a large value", table=part.table):
            cur = self.conn.cursor()
            if not self._parts_ready:
                cur.execute(parts.PARTS_DDL)  # a temporary table: no implicit commit
                self._parts_ready = True
            parts.store(cur, part)

    def apply_rows(self, metas: Mapping[str, TableMeta], changes: Sequence[RowChange], txn_id: str,
                   position: str) -> None:
        """Apply ``changes`` in order, run by run (rolls back and raises on any failure)."""
        self._require_txn()
        if any(c.parts for c in changes):  # rows with values that travelled in parts: one at a time, in order
            start = 0
            for i, change in enumerate(changes):
                if change.parts:
                    if start < i:
                        self.apply_rows(metas, changes[start:i], txn_id, position)
                    with self._guard("applying a row with a large value", txn_id=txn_id, position=position,
                                     table=change.table):
                        parts.apply_assembled(self.conn.cursor(), metas[change.table], change, self._params, txn_id,
                                              position)
                    start = i + 1
            if start < len(changes):
                self.apply_rows(metas, changes[start:], txn_id, position)
            return
        with self._guard("applying rows", txn_id=txn_id, position=position):
            writer = runs.RunWriter(self.conn.cursor(), self._convert, self.set_threshold, txn_id, position)
            for run in split_runs(metas, changes, txn_id, position):
                self._ctx["table"] = run.table
                keyed = metas[run.table].identity == "key" if run.table in metas else False
                self._ctx["key"] = list(run.keys[0]) if keyed and len(run) == 1 and run.keys else None
                if run.op is Op.TRUNCATE:
                    self._exec(f"DELETE FROM {sql.qualified(run.table)}")  # TRUNCATE would commit
                    continue
                writer.apply(metas[run.table], run)

    def _convert(self, meta: TableMeta, pairs: Iterable[tuple[int, Value]]) -> list[Any]:
        return runs.convert(meta, pairs, standby=self.settings.name, txn_id=self._ctx.get("txn_id", ""),
                            position=self._ctx.get("position", ""))

    def _params(self, meta: TableMeta, values: Sequence[Value], cols: Sequence[int]) -> list[Any]:
        return self._convert(meta, ((i, values[i]) for i in cols))

    def bulk_load(self, rows: TableRows, *, into: str | None = None, replace: bool = False,
                  progress: Callable[[int], None] | None = None) -> int:
        """Insert a snapshot's rows into the table (or the staging table ``into``) in the open transaction, in
        multi-row INSERTs; ``replace`` DELETEs the old rows first (readers keep them until the commit)."""
        self._require_txn()
        meta = rows.meta
        target = sql.qualified(into or meta.table)
        statement = sql.insert_sql(meta, range(len(meta.columns)), into=target)
        all_cols = range(len(meta.columns))
        count = 0
        batch: list[list[Any]] = []
        with self._guard("loading rows", table=meta.table):
            cur = self.conn.cursor()
            if replace:
                cur.execute(f"DELETE FROM {target}")
            for values in rows.values():
                batch.append(self._params(meta, values, all_cols))
                if len(batch) >= _LOAD_BATCH:
                    cur.executemany(statement, batch)
                    count += len(batch)
                    batch = []
                    if progress is not None:
                        progress(count)
            if batch:
                cur.executemany(statement, batch)
                count += len(batch)
            if progress is not None:
                progress(count)
        return count

    # -- table-level resync ------------------------------------------------------------------------
    def load_table_states(self, group: str, standby: str) -> dict[str, TableState]:
        """Rows of ``ark.table_state`` for this standby."""
        with self._guard("loading table states"):
            rows = self._exec(state.LOAD_TABLE_STATES_SQL, [group, standby]).fetchall()
        return {str(r[0]): state.table_state_from_row(r) for r in rows}

    def save_table_state(self, group: str, standby: str, state_: TableState) -> None:
        """Upsert one table's state inside the open transaction."""
        self._require_txn()
        with self._guard("saving a table state", table=state_.table):
            self._exec(state.SAVE_TABLE_STATE_SQL, state.table_state_params(group, standby, state_))

    def clear_table_states(self, group: str, standby: str) -> None:
        """Delete this standby's table states (open transaction) and every staging copy (side session)."""
        self._require_txn()
        with self._guard("clearing table states"):
            self._exec(state.CLEAR_TABLE_STATES_SQL, [group, standby])
            for (name,) in self._exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                                      [state.RESYNC_DB], conn=self.side).fetchall():
                self._exec(f"DROP TABLE IF EXISTS {sql.quote_ident(state.RESYNC_DB)}.{sql.quote_ident(name)}",
                           conn=self.side)

    def staging_table(self, table: str) -> str:
        """The staging copy's ``schema.table`` name (database ark_resync; MariaDB names are <= 64 chars)."""
        return staging_name(table, state.RESYNC_DB).replace("~", "_")[: len(state.RESYNC_DB) + 1 + 64]

    def _drop_table(self, staging: str) -> None:
        schema, name = staging.split(".", 1)
        with self._guard("dropping a staging copy", table=staging):
            self._exec(f"DROP TABLE IF EXISTS {sql.quote_ident(schema)}.{sql.quote_ident(name)}", conn=self.side)

    def stage_copy(self, rows: TableRows, position: Position, *,
                   on_rows: Callable[[int], None] | None = None) -> StagedTable:
        """(Re)create the table's staging copy (side session, no key: the swap's INSERT checks the rows against
        the table's own key), load the rows into it and commit (an applier instance of its own)."""
        if self._in_txn:
            raise RuntimeError("MariaDBApplier.stage_copy: use an applier instance of its own")
        meta = rows.meta
        staging = self.staging_table(meta.table)
        schema, name = staging.split(".", 1)
        self._drop_table(staging)
        with self._guard("creating a staging copy", table=meta.table):
            self._exec(sql.create_table_sql(meta, name=f"{sql.quote_ident(schema)}.{sql.quote_ident(name)}",
                                            keyed=False), conn=self.side)
        self.begin()
        count = self.bulk_load(rows, into=staging, progress=on_rows)
        self.commit()
        log.info("staged %s: %d rows from the snapshot at %s into %s", meta.table, count, position.text, staging)
        return StagedTable(table=meta.table, staging=staging, meta=meta, position=position, rows=count)

    def _reshape(self, meta: TableMeta) -> None:
        """Give the table ``meta``'s shape beside the transaction (MariaDB's DDL commits by itself); a table that
        cannot be reshaped in place is recreated. Before the transaction touches the table: DDL waits for the
        metadata lock of any transaction that did."""
        try:
            self._adapt(meta)
        except TableNeedsResync as exc:
            log.warning("%s cannot be reshaped in place (%s): recreating it", meta.table, exc.message)
            self._exec(f"DROP TABLE {sql.qualified(meta.table)}", conn=self.side)
            self._adapt(meta)

    def replace_table(self, group: str, rows: TableRows, *, progress: Callable[[int], None] | None = None,
                      created: bool = False) -> int:
        """Reshape (beside the transaction), then empty and reload one table from a snapshot and remember its shape,
        in the open transaction: readers see the old rows until the commit (see Applier). ``created`` never
        holds here: this applier creates no objects from a source's own definitions."""
        self._require_txn()
        meta = rows.meta
        with self._guard("replacing a table from the snapshot", table=meta.table):
            self._reshape(meta)
            self._exec(state.SAVE_META_SQL, [group, meta.table, meta.version, state.meta_json(meta)])
        return self.bulk_load(rows, replace=True, progress=progress)

    def advance_sequences(self, values: Sequence[SequenceValue]) -> int:
        """Move the standby's SEQUENCEs forward to the primary's values, in the open transaction (see
        :mod:`consumers.mariadb.sequences`); how many moved."""
        self._require_txn()
        with self._guard("advancing sequences"):
            return sequences.advance(lambda q, p: list(self._exec(q, p).fetchall()), values, self._missing_seqs)

    def swap_in_table(self, group: str, staged: StagedTable) -> None:
        """Give the table the copy's shape (side session: MariaDB's DDL commits by itself), then, in the open
        transaction: DELETE its rows, INSERT the copy's, store the shape. Readers see the old rows until the
        commit, which also drops the copy (a DROP inside the transaction would commit it)."""
        self._require_txn()
        schema, name = staged.staging.split(".", 1)
        quoted = f"{sql.quote_ident(schema)}.{sql.quote_ident(name)}"
        with self._guard("swapping in a resynced table", table=staged.table, position=staged.position.text):
            self._reshape(staged.meta)
            cols = ", ".join(sql.quote_ident(c.name) for c in staged.meta.columns)
            self._exec(f"DELETE FROM {sql.qualified(staged.table)}")
            self._exec(f"INSERT INTO {sql.qualified(staged.table)} ({cols}) SELECT {cols} FROM {quoted}")
            self._exec(state.SAVE_META_SQL, [group, staged.table, staged.meta.version, state.meta_json(staged.meta)])
        self._drop_after_commit.append(staged.staging)

    def drop_staging(self, table: str) -> None:
        """Drop ``table``'s staging copy if one exists (side session)."""
        self._drop_table(self.staging_table(table))
