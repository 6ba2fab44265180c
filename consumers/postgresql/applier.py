"""The PostgreSQL standby: :class:`PostgresApplier`, with psycopg 3.

Rows are applied in runs (:mod:`.plan`), each written by :mod:`.runs`: short runs as pipelined prepared
statements, runs of at least ``set_threshold`` rows COPYed into a staging table and applied set-based.

**Read-only for others.** :meth:`PostgresApplier.prepare` runs ``ALTER DATABASE <db> SET
default_transaction_read_only = on``; the applier's own session starts with it off and opens every
transaction ``READ WRITE``. This guards against accidental writes by people and tools; it is *not* a
security boundary (any session may ``SET default_transaction_read_only = off``). The stronger option is
to revoke INSERT/UPDATE/DELETE/TRUNCATE on the replicated tables from every role but Ark's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from common.engines.postgresql import IDENTITY_SQL, PostgresStandby, identity_from_row
from common.errors import ArkError
from common.guard import TargetFacts
from common.identity import DatabaseIdentity
from common.settings import StandbySettings
from common.snapshot import SchemaObjects, TableRows
from consumers.base import Applier, ApplyState, Problem, StagedTable
from consumers.errors import DataApplyError, TableNeedsResync
from consumers.postgresql import bulk, foreign, objects, parts, replica, schema_steps, sql, staging, state
from consumers.postgresql.ddl import apply_shape, standby_columns, stored_meta
from consumers.postgresql.errors import classify, connect_error
from consumers.postgresql.plan import merge_truncates, split_runs, without_columns
from consumers.postgresql.prereq import PREREQ_SQL, prerequisite_problems
from consumers.postgresql.runs import RunWriter
from consumers.tables import TableState
from schemas.entries import Op, Position, RowChange, SchemaStep, SequenceValue, TableMeta, ValuePart

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]

def _checked(rows: TableRows) -> TableRows:
    """``rows``, checked as they load when they come from another engine's table (consumers/postgresql/foreign.py)."""
    found = foreign.checks(rows.meta)
    return foreign.CheckedRows(rows, found) if found else rows


class PostgresApplier(Applier):
    """A PostgreSQL standby written only by Ark (see the module docstring)."""

    engine = "postgresql"

    def __init__(self, settings: StandbySettings, *, set_threshold: int = 200,
                 temp_buffers: str = "256MB") -> None:
        """Describe the standby; nothing connects until first use."""
        if not isinstance(settings, PostgresStandby):
            raise TypeError(f"PostgresApplier needs PostgreSQL settings, got {settings.engine}")
        self.settings: PostgresStandby = settings
        self.set_threshold = max(1, set_threshold)
        self.temp_buffers = temp_buffers
        self._conn: Conn | None = None
        self._ever_connected = False
        self._in_txn = False
        self._runs = RunWriter(set_threshold)
        self._independent: dict[frozenset[str], bool] = {}
        self._foreign: dict[tuple[str, str], list[tuple[int, foreign.Check]]] = {}  # checks of other engines' values
        #: Per table: its columns GENERATED ALWAYS AS IDENTITY on the standby (an UPDATE may not set them).
        self._always: dict[str, frozenset[str]] = {}
        self._parts_ready = False  # the session's temporary table of large values' parts exists
        self._ctx: dict[str, Any] = {}
        self._replica: Problem | None = None  # why the session could not become a replica (see .replica)
        self._is_replica = False
        self._lock: tuple[str, str, int] | None = None  # (group, standby, key) of the standby's applier lock

    # -- connection ------------------------------------------------------------------------------
    @property
    def conn(self) -> Conn:
        """The applier's session, opened (or reopened after a loss) on demand."""
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    @property
    def in_transaction(self) -> bool:
        """True between :meth:`begin` and :meth:`commit`/:meth:`rollback`."""
        return self._in_txn

    def _connect(self) -> Conn:
        kwargs = self.settings.connect_kwargs()
        # Session settings: writable despite the database default; room for staging tables in memory;
        # no merge joins (a staged chunk joined by merge scans the target's key index from its start)
        # and index lookups priced for cached data, so a staged chunk is joined by key lookups.
        kwargs["options"] = (f"-c default_transaction_read_only=off -c temp_buffers={self.temp_buffers} "
                             "-c enable_mergejoin=off -c random_page_cost=1.1")
        kwargs["application_name"] = replica.application_name(self.settings.name)  # names a lock's holder
        try:
            conn: Conn = psycopg.connect(autocommit=True, **kwargs)
            self._become_replica(conn)
            if self._lock is not None:
                self._take_lock(conn, *self._lock)  # a new session: the standby's lock must be taken again
        except ArkError:
            conn.close()
            raise
        except psycopg.Error as exc:
            raise connect_error(exc, self.settings, ever_connected=self._ever_connected) from None
        self._ever_connected = True
        self._in_txn = False
        self._parts_ready = False
        self._runs.forget_stages()
        log.info("connected to standby %s", self.settings.describe())
        return conn

    def _become_replica(self, conn: Conn) -> None:
        """``session_replication_role = replica`` for this session, or remember why not (see :mod:`.replica`)."""
        try:
            conn.execute(replica.SET_REPLICA_SQL)
            self._replica, self._is_replica = None, True
        except psycopg.errors.InsufficientPrivilege:
            row = conn.execute("SELECT current_user, current_database(), "
                               "current_setting('server_version_num')::int").fetchone()
            assert row is not None
            self._replica = replica.replica_problem(self.settings.name, str(row[0]), str(row[1]), int(row[2]))
            self._is_replica = False

    def _take_lock(self, conn: Conn, group: str, standby: str, key: int) -> None:
        """Take the standby's applier lock on ``conn``'s session, or raise ApplierRunning naming the holder."""
        row = conn.execute(replica.TRY_LOCK_SQL, [key]).fetchone()
        if row is not None and row[0]:
            return
        holder = conn.execute(replica.HOLDER_SQL, list(replica.lock_halves(key))).fetchone()
        raise replica.holder_error(standby, group, holder)

    def lock_standby(self, group: str, standby: str) -> None:
        """Hold the standby's applier lock for the life of this instance (taken again on every reconnect)."""
        key = replica.lock_key(group, standby)
        with self._guard("taking the standby's applier lock"):
            self._take_lock(self.conn, group, standby, key)
        self._lock = (group, standby, key)
        log.info("standby %s: this applier holds its lock (group %s)", standby, group)

    def _abort(self) -> None:
        """Roll back whatever is open; drop the session when it is broken."""
        self._in_txn = False
        self._runs.forget_stages()
        self._parts_ready = False  # a rollback also undoes the temporary table created in that transaction
        conn = self._conn
        if conn is None:
            return
        if not conn.closed and not conn.broken:
            try:
                conn.execute("ROLLBACK")
                return
            except psycopg.Error as exc:
                log.info("rollback on standby %s failed (%s); reconnecting later", self.settings.name, exc)
        conn.close()
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
        except psycopg.Error as exc:
            self._abort()
            raise classify(exc, what=what, **self._ctx) from exc

    def _require_txn(self) -> None:
        if not self._in_txn:
            raise RuntimeError("PostgresApplier: call begin() before writing")

    # -- Applier ---------------------------------------------------------------------------------
    def check_prerequisites(self) -> list[Problem]:
        """Connectivity, server version, a writable primary, privileges for schema ark and temp tables."""
        try:
            with self._guard("checking prerequisites"):
                row = self.conn.execute(PREREQ_SQL).fetchone()
        except ArkError as exc:
            return [Problem(exc.message, exc.fix)]
        assert row is not None
        return prerequisite_problems(row, self.settings) + ([self._replica] if self._replica else [])

    def server_version(self) -> str:
        """The standby's ``server_version`` text."""
        with self._guard("reading the server version"):
            row = self.conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def identity(self) -> DatabaseIdentity:
        """The cluster's system identifier and the database's oid (read-only)."""
        with self._guard("reading the database's identity"):
            row = self.conn.execute(IDENTITY_SQL).fetchone()
        assert row is not None
        return identity_from_row(row)

    def inspect(self) -> TargetFacts:
        """Identity, Ark state rows and replication sources of this database (read-only, creates nothing)."""
        ident = self.identity()
        with self._guard("inspecting the standby"):
            rows: dict[tuple[str, str], str] = {}
            if self.conn.execute("SELECT to_regclass('ark.apply_state')").fetchone() != (None,):
                for group, standby, recorded in self.conn.execute(
                        "SELECT \"group\", standby, coalesce(extra->>'identity', '') FROM ark.apply_state"):
                    rows[(str(group), str(standby))] = str(recorded)
            sources = [f"logical replication slot {name}{' (in use)' if active else ''}" for name, active in
                       self.conn.execute("SELECT slot_name, active FROM pg_replication_slots "
                                         "WHERE database = current_database() ORDER BY slot_name")]
            sources += [f"publication {name}" for (name,) in
                        self.conn.execute("SELECT pubname FROM pg_publication ORDER BY pubname")]
        return TargetFacts(ident, rows, sources)

    def occupied(self, tables: Collection[str]) -> dict[str, int]:
        """Existing tables among ``tables`` that hold rows, and how many (counted up to 1,000,001)."""
        out: dict[str, int] = {}
        with self._guard("counting rows on the standby"):
            for table in sorted(tables):
                if self.conn.execute("SELECT to_regclass(%s)", [sql.qualified(table)]).fetchone() == (None,):
                    continue
                row = self.conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {sql.qualified(table)} "
                                        "LIMIT 1000001) s").fetchone()
                if row is not None and row[0]:
                    out[table] = int(row[0])
        return out

    def prepare(self) -> None:
        """Create schema ark and its tables; make the database read-only for other sessions. Idempotent."""
        with self._guard("preparing the standby"):
            conn = self.conn
            conn.execute("BEGIN READ WRITE")
            self._in_txn = True
            for stmt in state.SCHEMA_DDL:
                conn.execute(stmt)
            row = conn.execute("SELECT current_database()").fetchone()
            assert row is not None
            db = sql.quote_ident(str(row[0]))
            if self.settings.read_only:
                conn.execute(f"ALTER DATABASE {db} SET default_transaction_read_only = on")
            else:
                conn.execute(f"ALTER DATABASE {db} RESET default_transaction_read_only")
            conn.execute("COMMIT")
            self._in_txn = False
        log.info("standby %s prepared (read-only for others: %s)", self.settings.name, self.settings.read_only)

    def load_state(self, group: str, standby: str) -> ApplyState | None:
        """The saved state row, or None (also when schema ark does not exist: nothing is created here)."""
        with self._guard("loading the apply state"):
            if self.conn.execute("SELECT to_regclass('ark.apply_state')").fetchone() == (None,):
                return None
            row = self.conn.execute(state.LOAD_STATE_SQL, [group, standby]).fetchone()
        return state.state_from_row(row) if row else None

    def load_table_metas(self, group: str) -> dict[str, TableMeta]:
        """The stored table shapes of ``group``."""
        with self._guard("loading table metadata"):
            rows = self.conn.execute(state.LOAD_METAS_SQL, [group]).fetchall()
        return {str(r[0]): state.meta_from_json(r[1]) for r in rows}

    def begin(self) -> None:
        """Open a READ WRITE transaction (a no-op when one is open)."""
        if self._in_txn:
            return
        with self._guard("beginning a transaction"):
            conn = self.conn
            if self._replica is not None:
                raise replica.replica_refusal(self._replica)  # never write with the standby's triggers firing
            conn.execute(f"BEGIN READ WRITE; {replica.DEFER_SQL}")  # one round trip
            self._in_txn = True

    def save_state(self, state_: ApplyState, previous: ApplyState | None = None) -> None:
        """Write the state row inside the open transaction: UPSERT, or with ``previous`` a compare-and-set
        that raises StateMoved (after rolling back) unless the row is still ``previous``."""
        self._require_txn()
        with self._guard("saving the apply state", position=state_.position):
            params = state.state_params(state_)
            if previous is None:
                self.conn.execute(state.SAVE_STATE_SQL, params)
                return
            cur = self.conn.execute(replica.CAS_STATE_SQL, replica.cas_params(state_, previous, params))
            if cur.rowcount != 1:
                found = self.conn.execute(replica.CURRENT_STATE_SQL, [state_.group, state_.standby]).fetchone()
                raise replica.state_moved(state_.standby, previous, found)

    def commit(self) -> None:
        """Commit the open transaction."""
        if not self._in_txn:
            return
        with self._guard("committing"):
            self.conn.execute("COMMIT")
            self._in_txn = False
            self._runs.forget_stages()

    def rollback(self) -> None:
        """Roll back; safe when nothing is open or the connection is gone."""
        self._abort()

    def close(self) -> None:
        """Roll back and close the session; safe to call twice."""
        self._abort()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def apply_table_meta(self, group: str, meta: TableMeta, previous: TableMeta | None) -> None:
        """Create or adapt the table (see :mod:`.ddl`) and store its shape, in the open transaction.

        Raises TableNeedsResync (after rolling back) when the table cannot follow the change.
        """
        self._require_txn()
        with self._guard("adapting the table", table=meta.table, position=meta.position):
            with self.conn.cursor() as cur:
                if previous is None or previous != meta:
                    apply_shape(cur, meta, previous)
                cur.execute(state.SAVE_META_SQL, [group, meta.table, meta.version, Jsonb(stored_meta(meta))])
            self._forget(meta.table)

    def _forget(self, table: str) -> None:
        """Drop what this session cached about ``table`` (its shape or its objects changed)."""
        self._runs.forget_stages(table)
        self._always.pop(table, None)
        self._runs.forget_uniques(table)
        self._independent.clear()

    def _always_identity(self, table: str) -> frozenset[str]:
        """Columns of ``table`` that are GENERATED ALWAYS AS IDENTITY on the standby (cached)."""
        found = self._always.get(table)
        if found is None:
            rows = self.conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                                     "AND attidentity = 'a' AND NOT attisdropped", [sql.qualified(table)]).fetchall()
            found = self._always[table] = frozenset(str(r[0]) for r in rows)
        return found

    def run_schema_step(self, group: str, step: SchemaStep, *, follow_drop: bool, what: str) -> bool:
        """One step of a primary's DDL, in the open transaction (see :mod:`.schema_steps`)."""
        self._require_txn()
        with self._guard(f"applying {what}", table=step.object):
            commit_after = schema_steps.run_step(self.conn, group, step, follow_drop=follow_drop, what=what,
                                                 standby=self.settings.name)
            self._runs.forget_stages()  # a shape may have changed under a cached staging table
            self._independent.clear()  # foreign keys may have come or gone
        return commit_after

    def rename_table(self, group: str, old: str, new: str) -> None:
        """The primary renamed ``old`` to ``new``: the same here, with its stored shape (open transaction)."""
        self._require_txn()
        with self._guard("renaming a table", table=old):
            schema_steps.rename(self.conn, group, old, new, self.settings.name)
            self._runs.forget_stages()

    def independent_tables(self, tables: Collection[str]) -> bool:
        """True when no foreign key on the standby links any of ``tables`` (checked once per set)."""
        if self._is_replica:
            return True  # foreign-key triggers do not fire in a replica session: no order between tables matters
        key = frozenset(tables)
        cached = self._independent.get(key)
        if cached is None:
            names = [sql.qualified(t) for t in key]
            row = self.conn.execute(
                "WITH t AS (SELECT to_regclass(n) AS oid FROM unnest(%s::text[]) n) "
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND "
                "(conrelid IN (SELECT oid FROM t) OR confrelid IN (SELECT oid FROM t))", [names]).fetchone()
            cached = bool(row is not None and row[0] == 0)
            self._independent[key] = cached
        return cached

    def store_part(self, part: ValuePart) -> None:
        """Keep one part of a large value in the open transaction (see :mod:`.parts`)."""
        self._require_txn()
        with self._guard("storing a part of a large value"):
            if not self._parts_ready:
                self.conn.execute(parts.PARTS_DDL)
                self._parts_ready = True
            parts.store(self.conn, part)

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
                        foreign.check_changes(metas, self._foreign, [change], txn_id, position)
                        parts.apply_assembled(self.conn, metas[change.table], change, txn_id, position,
                                              self._always_identity(change.table))
                    start = i + 1
            if start < len(changes):
                self.apply_rows(metas, changes[start:], txn_id, position)
            return
        with self._guard("applying rows", txn_id=txn_id, position=position):
            foreign.check_changes(metas, self._foreign, changes, txn_id, position)
            ordered = {t for t in {c.table for c in changes} if self._runs.other_unique(self.conn, t)}
            runs = split_runs(metas, changes, txn_id, position, ordered)
            for item in merge_truncates(runs):
                if isinstance(item, list):
                    self._ctx["table"] = ", ".join(item)
                    self.conn.execute(sql.truncate_sql(item))
                    continue
                self._ctx["table"] = item.table
                self._ctx["key"] = item.keys[0] if len(item) == 1 and item.keys and item.keys[0] else None
                meta = metas[item.table]
                if meta.identity == "none" and item.op is not Op.INSERT:
                    raise DataApplyError(f"{item.op.value} of {item.table}, a table without a replica identity (its "
                                         "updates and deletes are not published), in source transaction "
                                         f"{txn_id} at {position}", table=item.table,
                                         fix=f"resync the table (ark resync --table {item.table})")
                if item.op is Op.UPDATE and (always := self._always_identity(item.table)):
                    # An UPDATE may set a GENERATED ALWAYS identity column only to DEFAULT; its value never
                    # changes on the primary but through DEFAULT (a new value), which a row image cannot say.
                    item = without_columns(meta, item, always)
                self._runs.write(self.conn, meta, item, txn_id, position)

    # -- table-level resync (see consumers/postgresql/resync.py) ---------------------------------
    def load_table_states(self, group: str, standby: str) -> dict[str, TableState]:
        """Rows of ``ark.table_state`` for this standby."""
        with self._guard("loading table states"):
            rows = self.conn.execute(state.LOAD_TABLE_STATES_SQL, [group, standby]).fetchall()
        return {str(r[0]): state.table_state_from_row(r) for r in rows}

    def save_table_state(self, group: str, standby: str, state_: TableState) -> None:
        """UPSERT one table's state inside the open transaction."""
        self._require_txn()
        with self._guard("saving a table state", table=state_.table):
            self.conn.execute(state.SAVE_TABLE_STATE_SQL, state.table_state_params(group, standby, state_))

    def clear_table_states(self, group: str, standby: str) -> None:
        """Delete this standby's table states and every staging copy, inside the open transaction."""
        self._require_txn()
        with self._guard("clearing table states"):
            self.conn.execute(state.CLEAR_TABLE_STATES_SQL, [group, standby])
            for stmt in staging.drop_all_staging_sql():
                self.conn.execute(stmt)

    def bulk_load(self, rows: TableRows, *, into: str | None = None, replace: bool = False,
                  progress: Callable[[int], None] | None = None) -> int:
        """COPY a snapshot's rows into the table (or ``into``), in the open transaction (see :mod:`.bulk`)."""
        self._require_txn()
        with self._guard("loading rows", table=rows.meta.table):
            return bulk.load(self.conn, _checked(rows), into or rows.meta.table, replace=replace, progress=progress)

    def stage_copy(self, rows: TableRows, position: Position, *,
                   on_rows: Callable[[int], None] | None = None) -> StagedTable:
        """Copy the rows into the table's staging table and commit (an instance of its own, see Applier)."""
        if self._in_txn:
            raise RuntimeError("PostgresApplier.stage_copy: use an applier instance of its own")
        meta = rows.meta
        name = staging.staging_table(meta.table)
        self.begin()
        with self._guard("copying a table for its resync", table=meta.table):
            for stmt in staging.staging_ddl(meta, name):
                self.conn.execute(stmt)
            count = bulk.load(self.conn, _checked(rows), name, replace=False, progress=on_rows)
        self.commit()
        log.info("staged %s: %d rows from the snapshot at %s into %s", meta.table, count, position.text, name)
        return StagedTable(table=meta.table, staging=name, meta=meta, position=position, rows=count)

    def _reshape_empty(self, cur: psycopg.Cursor[tuple[Any, ...]], meta: TableMeta) -> None:
        """Empty the table (DELETE, MVCC-safe) and give it ``meta``'s shape; recreate it when an ALTER cannot."""
        if standby_columns(cur, meta.table) is not None:
            # DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe, so a reader whose snapshot is
            # older would see the table empty; with DELETE it sees the old rows until we commit.
            cur.execute(f"DELETE FROM {sql.qualified(meta.table)}")
        cur.execute("SAVEPOINT ark_reshape")
        try:
            apply_shape(cur, meta)  # an empty table takes most ALTERs...
        except (TableNeedsResync, DataApplyError) as exc:
            # ... but not a type change that needs USING (text to integer): recreate the table.
            log.warning("%s cannot be reshaped in place (%s): recreating it", meta.table, exc.message)
            cur.execute("ROLLBACK TO SAVEPOINT ark_reshape")
            cur.execute(f"DROP TABLE {sql.qualified(meta.table)}")
            apply_shape(cur, meta)
        cur.execute("RELEASE SAVEPOINT ark_reshape")

    def replace_table(self, group: str, rows: TableRows, *, progress: Callable[[int], None] | None = None,
                      created: bool = False) -> int:
        """Empty, reshape and reload one table from a snapshot, in the open transaction (see Applier)."""
        self._require_txn()
        meta = rows.meta
        with self._guard("replacing a table from the snapshot", table=meta.table):
            with self.conn.cursor() as cur:
                if created:
                    objects.check_created(standby_columns(cur, meta.table), meta)
                else:
                    self._reshape_empty(cur, meta)
                cur.execute(state.SAVE_META_SQL, [group, meta.table, meta.version, Jsonb(stored_meta(meta))])
            self._forget(meta.table)
            return bulk.load(self.conn, _checked(rows), meta.table, replace=False, progress=progress)

    # -- the primary's other objects and its sequences (see consumers/postgresql/objects.py) ------------
    def create_objects(self, objects_: SchemaObjects, *, after_rows: bool) -> set[str]:
        """Create the objects the standby lacks, before or after the rows (see Applier and :mod:`.objects`)."""
        self._require_txn()
        if objects_.engine != self.engine:
            return set()
        with self._guard("creating the primary's objects"):
            done = objects.create(self.conn, objects_, after_rows=after_rows, standby=self.settings.name)
        for table in done.tables:
            self._forget(table)
        self._independent.clear()  # foreign keys may have appeared
        self._always.clear()
        self._runs.forget_uniques()
        return done.tables

    def advance_sequences(self, values: Sequence[SequenceValue]) -> int:
        """Move the standby's sequences forward to the primary's values (see :mod:`.objects`)."""
        self._require_txn()
        with self._guard("advancing sequences"):
            return objects.advance_sequences(self.conn, values)

    def swap_in_table(self, group: str, staged: StagedTable) -> None:
        """Empty the table, give it the snapshot's shape, refill it from the staging copy, drop the copy."""
        self._require_txn()
        created: set[str] = set()
        if staged.objects is not None:  # the table's objects the standby lacks (the table itself, if it is new)
            created = self.create_objects(staged.objects, after_rows=False)
        with self._guard("swapping in a resynced table", table=staged.table, position=staged.position.text):
            with self.conn.cursor() as cur:
                if staged.table in created:
                    objects.check_created(standby_columns(cur, staged.table), staged.meta)
                else:
                    self._reshape_empty(cur, staged.meta)
                for stmt in staging.refill_sql(staged):
                    cur.execute(stmt)
                cur.execute(state.SAVE_META_SQL, [group, staged.table, staged.meta.version,
                                                  Jsonb(stored_meta(staged.meta))])
            self._forget(staged.table)
        if staged.objects is not None:
            self.create_objects(staged.objects, after_rows=True)

    def drop_staging(self, table: str) -> None:
        """Drop ``table``'s staging copy (autocommit; no transaction may be open on this instance)."""
        if self._in_txn:
            raise RuntimeError("PostgresApplier.drop_staging: no transaction may be open")
        with self._guard("dropping a staging copy", table=table):
            self.conn.execute(staging.drop_staging_sql(table))
