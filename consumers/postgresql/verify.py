"""PostgreSQL's :class:`~common.verify.Verifier`: both sides of ``ark verify`` in SQL.

A range is summarised by ``count(*)`` and an md5 over the md5 of every row's text in key order. Both
sessions use the same text settings (:data:`SESSION_OPTIONS`), so the server's text form compares
values exactly (numeric scale, timestamps, floats, bytea). Keys are compared with PostgreSQL's row
comparison on the key columns, and key values travel as text cast back to the column types.

The primary's side imports the snapshot the engine's snapshot source exported (its ``token``), so it
sees exactly the transactions before the snapshot's position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql as psql

from common.engines.postgresql import PostgresPrimary, PostgresStandby
from common.errors import SourceError, TargetError
from common.settings import PrimarySettings, StandbySettings
from common.snapshot import Snapshot
from common.verify import Digest, Key, KeyRange, SourceSide, StandbySide, TableSpec, Verifier, format_key
from consumers.postgresql.sql import pg_type, qualified, quote_ident
from consumers.postgresql.state import LOAD_STATE_SQL, state_from_row

Conn = psycopg.Connection[Any]

#: Session settings of both compare connections: one text form for every value.
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=1 "
                   "-c bytea_output=hex")

_ROW = "_ark_row"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _Sql:
    """The SQL of one table's compare."""

    def __init__(self, spec: TableSpec) -> None:
        meta = spec.meta
        self.name = qualified(meta.table)
        self.types = tuple(pg_type(c) for c in meta.columns)
        self.key_types = tuple(pg_type(c) for c in meta.key_columns)
        self.spec = spec

    def keys(self, prefix: str = "") -> str:
        return ", ".join(prefix + quote_ident(k) for k in self.spec.key)

    def keys_text(self, prefix: str = "") -> str:
        return ", ".join(f"{prefix}{quote_ident(k)}::text" for k in self.spec.key)

    def where(self, rng: KeyRange) -> tuple[str, list[str]]:
        parts: list[str] = []
        params: list[str] = []
        cast = ", ".join(f"%s::{t}" for t in self.key_types)
        if rng.lo is not None:
            parts.append(f"({self.keys()}) > ({cast})")
            params.extend(rng.lo)
        if rng.hi is not None:
            parts.append(f"({self.keys()}) <= ({cast})")
            params.extend(rng.hi)
        return (" AND ".join(parts) or "true"), params

    def select(self, rng: KeyRange) -> tuple[str, list[str]]:
        pred, params = self.where(rng)
        cols = ", ".join(quote_ident(c) for c in self.spec.columns)
        return f"SELECT {cols} FROM {self.name} WHERE {pred}", params

    def rows_of(self) -> str:
        """Every row of the table with the compared columns, as a subquery body."""
        return f"SELECT {', '.join(quote_ident(c) for c in self.spec.columns)} FROM {self.name}"

    def bucket_of(self, alias: str, buckets: int) -> str:
        """The hash bucket of a row: from the md5 of its text, so both sides agree whatever their version."""
        return f"mod(('x' || substr(md5({alias}::text), 1, 8))::bit(32)::bigint, {int(buckets)})"

    def key_match(self) -> str:
        return " AND ".join(f"{quote_ident(k)} = %s::{t}" for k, t in zip(self.spec.key, self.key_types, strict=True))


class _Side:
    """The compare queries, on a connection inside its snapshot."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def boundaries(self, spec: TableSpec, every: int) -> list[Key]:
        q = _Sql(spec)
        query = (f"SELECT {q.keys_text('s.')} FROM (SELECT {q.keys()}, row_number() OVER (ORDER BY "
                 f"{q.keys()}) AS _ark_rn FROM {q.name}) s WHERE s._ark_rn %% %s = 0 ORDER BY s._ark_rn")
        return [tuple(r) for r in self.conn.execute(query, [every]).fetchall()]

    def digest(self, spec: TableSpec, rng: KeyRange) -> Digest:
        q = _Sql(spec)
        body, params = q.select(rng)
        query = (f"SELECT count(*), coalesce(md5(string_agg(md5({_ROW}::text), '' ORDER BY "
                 f"{q.keys(_ROW + '.')})), '') FROM ({body}) {_ROW}")
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return Digest(int(row[0]), str(row[1]))

    def middle_key(self, spec: TableSpec, rng: KeyRange, rows: int) -> Key:
        q = _Sql(spec)
        pred, params = q.where(rng)
        # ORDER BY the table's columns, not the text output columns of the same names (text order).
        query = (f"SELECT {q.keys_text()} FROM {q.name} _ark_t WHERE {pred} ORDER BY {q.keys('_ark_t.')} "
                 "OFFSET %s LIMIT 1")
        row = self.conn.execute(query, [*params, max(0, rows // 2 - 1)]).fetchone()
        if row is None:
            raise RuntimeError(f"{spec.table}: range {rng.describe()} changed while being split")
        return tuple(row)

    def keyed_rows(self, spec: TableSpec, rng: KeyRange) -> list[tuple[Key, str]]:
        q = _Sql(spec)
        body, params = q.select(rng)
        n = len(spec.key)
        query = (f"SELECT {q.keys_text(_ROW + '.')}, {_ROW}::text FROM ({body}) {_ROW} "
                 f"ORDER BY {q.keys(_ROW + '.')}")
        return [(tuple(r[:n]), str(r[n])) for r in self.conn.execute(query, params).fetchall()]

    def bucket_digests(self, spec: TableSpec, buckets: int) -> dict[int, Digest]:
        q = _Sql(spec)
        # An order-independent hash of a multiset: the sum of 60 bits of each row's md5 (duplicates add up).
        query = (f"SELECT {q.bucket_of(_ROW, buckets)} AS b, count(*), "
                 f"sum(('x' || substr(md5({_ROW}::text), 9, 15))::bit(60)::bigint)::text "
                 f"FROM ({q.rows_of()}) {_ROW} GROUP BY 1")
        return {int(b): Digest(int(n), str(h)) for b, n, h in self.conn.execute(query).fetchall()}

    def bucket_rows(self, spec: TableSpec, bucket: int, buckets: int) -> dict[str, int]:
        q = _Sql(spec)
        query = (f"SELECT {_ROW}::text, count(*) FROM ({q.rows_of()}) {_ROW} "
                 f"WHERE {q.bucket_of(_ROW, buckets)} = %s GROUP BY 1")
        return {str(r): int(n) for r, n in self.conn.execute(query, [bucket]).fetchall()}

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()  # rolls back whatever is open


class PostgresSourceSide(_Side, SourceSide):
    """The primary, inside the exported snapshot."""

    def row_values(self, spec: TableSpec, keys: Sequence[Key]) -> list[list[str | None]]:
        q = _Sql(spec)
        cols = ", ".join(f"{quote_ident(c)}::text" for c in spec.columns)
        out = []
        for key in keys:
            row = self.conn.execute(f"SELECT {cols} FROM {q.name} WHERE {q.key_match()}", list(key)).fetchone()
            if row is None:
                raise RuntimeError(f"{spec.table}: key {format_key(key)} vanished from the primary snapshot")
            out.append(list(row))
        return out

    def bucket_values(self, spec: TableSpec, bucket: int, buckets: int) -> list[list[str | None]]:
        q = _Sql(spec)
        cols = ", ".join(f"{_ROW}.{quote_ident(c)}::text" for c in spec.columns)
        query = f"SELECT {cols} FROM ({q.rows_of()}) {_ROW} WHERE {q.bucket_of(_ROW, buckets)} = %s"
        return [list(r) for r in self.conn.execute(query, [bucket]).fetchall()]


class PostgresStandbySide(_Side, StandbySide):
    """A standby, in a REPEATABLE READ transaction (read-write past the guard for a repair)."""

    def __init__(self, conn: Conn, write: bool) -> None:
        super().__init__(conn)
        self.write = write

    def held_state(self, group: str, standby: str) -> tuple[int, str, bytes]:
        row = self.conn.execute(LOAD_STATE_SQL + (" FOR UPDATE NOWAIT" if self.write else ""),
                                [group, standby]).fetchone()
        if row is None:
            raise TargetError(f"standby {standby} has no state row", fix=f"run 'ark sync {standby}' first")
        st = state_from_row(row)
        return st.next_offset, st.position, st.position_key

    def shape_problem(self, spec: TableSpec) -> str:
        q = _Sql(spec)
        row = self.conn.execute("SELECT to_regclass(%s)::oid", [q.name]).fetchone()
        if row is None or row[0] is None:
            return f"{spec.table} does not exist on the standby"
        have = dict(self.conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s "
            "AND attnum > 0 AND NOT attisdropped", [row[0]]).fetchall())
        for name, typ in zip(spec.columns, q.types, strict=True):
            if name not in have:
                return f"column {name} of {spec.table} is missing on the standby"
            if have[name] != typ:
                return f"column {name} of {spec.table} is {typ} on the primary but {have[name]} on the standby"
        return ""

    def rewrite(self, spec: TableSpec, doomed: Sequence[Key], rows: Sequence[Sequence[str | None]]) -> None:
        q = _Sql(spec)
        with self.conn.cursor() as cur:
            if doomed:
                cur.executemany(f"DELETE FROM {q.name} WHERE {q.key_match()}", [list(k) for k in doomed])
            if rows:
                values = ", ".join(f"%s::{t}" for t in q.types)
                names = ", ".join(quote_ident(c) for c in spec.columns)
                cur.executemany(f"INSERT INTO {q.name} ({names}) VALUES ({values})", [list(r) for r in rows])

    def rewrite_bucket(self, spec: TableSpec, bucket: int, buckets: int,
                       rows: Sequence[Sequence[str | None]]) -> None:
        q = _Sql(spec)
        with self.conn.cursor() as cur:
            row = "ROW(" + ", ".join(f"t.{quote_ident(c)}" for c in spec.columns) + ")"  # the text rows_of() gives
            cur.execute(f"DELETE FROM {q.name} WHERE ctid IN (SELECT t.ctid FROM {q.name} t "
                        f"WHERE {q.bucket_of(row, buckets)} = %s)", [bucket])
            if rows:
                values = ", ".join(f"%s::{t}" for t in q.types)
                names = ", ".join(quote_ident(c) for c in spec.columns)
                cur.executemany(f"INSERT INTO {q.name} ({names}) VALUES ({values})", [list(r) for r in rows])

    def commit(self) -> None:
        self.conn.execute("COMMIT")


class PostgresVerifier(Verifier):
    """Opens both sides (see the module docstring)."""

    def open_source(self, primary: PrimarySettings, snapshot: Snapshot) -> PostgresSourceSide:
        if not isinstance(primary, PostgresPrimary):
            raise TypeError(f"PostgresVerifier needs a PostgreSQL primary, got {primary.engine}")
        kwargs = {**primary.connect_kwargs(), "application_name": "ark-verify", "options": SESSION_OPTIONS}
        try:
            conn: Conn = psycopg.connect(autocommit=True, **kwargs)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(psql.SQL("SET TRANSACTION SNAPSHOT {}").format(psql.Literal(snapshot.token)))
        except psycopg.Error as exc:
            raise SourceError(f"cannot open the primary snapshot for verify: {_first_line(exc)}",
                              fix="check the primary's connection settings ('ark check')") from None
        return PostgresSourceSide(conn)

    def open_standby(self, standby: StandbySettings, *, write: bool) -> PostgresStandbySide:
        if not isinstance(standby, PostgresStandby):
            raise TypeError(f"PostgresVerifier needs a PostgreSQL standby, got {standby.engine}")
        # The applier's own way past the read-only guard: a session default of read-write, set only here.
        # A repair writes as the applier does: as a replica (the standby's triggers and FK actions do not fire).
        options = SESSION_OPTIONS + (" -c default_transaction_read_only=off -c lock_timeout=5s "
                                     "-c session_replication_role=replica" if write else "")
        kwargs = {**standby.connect_kwargs(), "application_name": "ark-verify", "options": options}
        try:
            conn: Conn = psycopg.connect(autocommit=True, **kwargs)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ " + ("READ WRITE" if write else "READ ONLY"))
        except psycopg.Error as exc:
            raise TargetError(f"cannot open standby {standby.name} for verify: {_first_line(exc)}",
                              fix="check the standby's connection settings ('ark check')") from None
        return PostgresStandbySide(conn, write)
