"""MariaDB's :class:`~common.verify.Verifier`: both sides of ``ark verify`` in SQL.

**Row text.** A row is printed by the server as ``QUOTE(v1),QUOTE(v2),...`` in utf8mb4 (``NULL``
unquoted), every value in a form that is exact for its type: binary strings, BIT and geometry as hex,
FLOAT as its exact double, DOUBLE in MariaDB's shortest round-trip form, the rest as MariaDB prints
them (both sessions in UTC). Two rows have the same text exactly when they hold the same values,
whatever the columns' collations (the text is compared bytewise: ``utf8mb4_bin``).

**Summaries.** A key range is summarised by ``COUNT(*)`` and the sums of two 64-bit halves of every
row text's MD5: an order-independent hash, so no row is sorted or concatenated to summarise a
range (keys are unique, so order carries nothing). A table without a unique key (identity
``full``) is a multiset: its rows fall into buckets by their hash, each bucket summarised the same way
(duplicates add up). Keys travel as text and come back as typed parameters (an integer, a decimal,
bytes), never compared as strings with numbers (which MariaDB would do in DOUBLE).

**The primary's side.** MariaDB cannot share a snapshot between sessions, so the verifier takes over
the snapshot's own session (:class:`common.engines.mariadb.SessionSnapshot`): it sees exactly the
transactions before the snapshot's position, and closing the snapshot leaves it open for the compare.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pymysql
import pymysql.converters

from common.engines.mariadb import MariaDBPrimary, MariaDBStandby, SessionSnapshot
from common.errors import ArkError, SourceError, TargetError
from common.settings import PrimarySettings, StandbySettings
from common.snapshot import Snapshot
from common.verify import Digest, Key, KeyRange, SourceSide, StandbySide, TableSpec, Verifier, format_key
from consumers.mariadb import ddl, sql, state
from consumers.mariadb.applier import SESSION
from consumers.mariadb.errors import message_of
from schemas.entries import Column

log = logging.getLogger(__name__)

#: Every value comes back as MariaDB's text (str, or bytes for binary results): nothing is decoded.
TEXT_RESULTS: dict[Any, Any] = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}

_INTS = ("tinyint", "smallint", "mediumint", "int", "bigint", "year")
_HEXED = ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point", "linestring",
          "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection")


def _base(col: Column) -> str:
    """The standby column's MariaDB type name (``decimal``, ``varchar``...)."""
    return sql.column_type(col).split("(")[0].split(" ")[0].lower()


def value_text(col: Column) -> str:
    """The SELECT expression of one column's exact text (see the module docstring)."""
    name, base = sql.quote_ident(col.name), _base(col)
    if base in _HEXED:
        return f"HEX({name})"
    if base == "bit":
        return f"CAST({name} AS UNSIGNED)"
    if base == "float":
        return f"CAST({name} AS DOUBLE)"
    return name


def value_param(col: Column) -> str:
    """The placeholder that stores one :func:`value_text` back into the column."""
    base = _base(col)
    if base in _HEXED:
        return "UNHEX(%s)"
    if base == "bit":
        return "CAST(%s AS UNSIGNED)"
    return "%s"


def key_param(col: Column, text: str) -> Any:
    """A key's text as a parameter of its own type (numbers are never compared as strings)."""
    base = _base(col)
    if base in _INTS:
        return int(text)
    if base == "decimal":
        return Decimal(text)
    if base in ("float", "double"):
        return float(text)
    if base in _HEXED:
        return bytes.fromhex(text)
    if base == "bit":
        return int(text)
    return text


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8")


class _Sql:
    """The SQL of one table's compare."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.name = sql.qualified(spec.table)
        self.key_cols = spec.meta.key_columns

    def row_text(self) -> str:
        parts = [f"CONVERT(QUOTE({value_text(c)}) USING utf8mb4)" for c in self.spec.meta.columns]
        return f"CONCAT_WS(',', {', '.join(parts)}) COLLATE utf8mb4_bin"

    def keys(self) -> str:
        return ", ".join(sql.quote_ident(c.name) for c in self.key_cols)

    def keys_text(self) -> str:
        return ", ".join(value_text(c) for c in self.key_cols)

    def where(self, rng: KeyRange) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        many = len(self.key_cols) > 1
        marks = "(" + ", ".join(["%s"] * len(self.key_cols)) + ")" if many else "%s"
        names = f"({self.keys()})" if many else self.keys()
        for bound, op in ((rng.lo, ">"), (rng.hi, "<=")):
            if bound is not None:
                parts.append(f"{names} {op} {marks}")
                params.extend(key_param(c, t) for c, t in zip(self.key_cols, bound, strict=True))
        return (" AND ".join(parts) or "TRUE"), params

    def key_match(self, key: Key) -> tuple[str, list[Any]]:
        cond = " AND ".join(f"{sql.quote_ident(c.name)} = %s" for c in self.key_cols)
        return cond, [key_param(c, t) for c, t in zip(self.key_cols, key, strict=True)]

    def bucket_of(self, hashed: str, buckets: int) -> str:
        """The hash bucket of a row, from the first 32 bits of the MD5 of its text."""
        return f"MOD(CAST(CONV(SUBSTR({hashed}, 1, 8), 16, 10) AS UNSIGNED), {int(buckets)})"

    def insert(self) -> str:
        names = ", ".join(sql.quote_ident(c.name) for c in self.spec.meta.columns)
        values = ", ".join(value_param(c) for c in self.spec.meta.columns)
        return f"INSERT INTO {self.name} ({names}) VALUES ({values})"


#: Sums of two 64-bit halves of the MD5s (exact: SUM of integers is a DECIMAL in MariaDB).
_HALVES = ("COALESCE(SUM(CAST(CONV(SUBSTR(h, 1, 16), 16, 10) AS UNSIGNED)), 0), "
           "COALESCE(SUM(CAST(CONV(SUBSTR(h, 17, 16), 16, 10) AS UNSIGNED)), 0)")


class _Side:
    """The compare queries, on a connection inside its snapshot."""

    def __init__(self, conn: Any, error: Callable[[str], ArkError]) -> None:
        self.conn = conn
        self._error = error

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        try:
            with self.conn.cursor() as cur:
                yield cur
        except pymysql.err.Error as exc:
            raise self._error(message_of(exc)) from None

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            cur.execute(query, list(params) or None)
            return list(cur.fetchall())

    def boundaries(self, spec: TableSpec, every: int) -> list[Key]:
        q = _Sql(spec)
        n = len(q.key_cols)
        query = (f"SELECT * FROM (SELECT {q.keys_text()}, ROW_NUMBER() OVER (ORDER BY {q.keys()}) AS _ark_rn "
                 f"FROM {q.name}) s WHERE s._ark_rn %% %s = 0 ORDER BY s._ark_rn")
        return [tuple(str(_text(v)) for v in r[:n]) for r in self._all(query, [every])]

    def digest(self, spec: TableSpec, rng: KeyRange) -> Digest:
        q = _Sql(spec)
        pred, params = q.where(rng)
        query = f"SELECT COUNT(*), {_HALVES} FROM (SELECT MD5({q.row_text()}) h FROM {q.name} WHERE {pred}) x"
        count, a, b = self._all(query, params)[0]
        return Digest(int(count), f"{_text(a)}:{_text(b)}")

    def middle_key(self, spec: TableSpec, rng: KeyRange, rows: int) -> Key:
        q = _Sql(spec)
        pred, params = q.where(rng)
        query = f"SELECT {q.keys_text()} FROM {q.name} WHERE {pred} ORDER BY {q.keys()} LIMIT 1 OFFSET %s"
        found = self._all(query, [*params, max(0, rows // 2 - 1)])
        if not found:
            raise RuntimeError(f"{spec.table}: range {rng.describe()} changed while being split")
        return tuple(str(_text(v)) for v in found[0])

    def keyed_rows(self, spec: TableSpec, rng: KeyRange) -> list[tuple[Key, str]]:
        q = _Sql(spec)
        pred, params = q.where(rng)
        n = len(q.key_cols)
        query = f"SELECT {q.keys_text()}, {q.row_text()} FROM {q.name} WHERE {pred} ORDER BY {q.keys()}"
        return [(tuple(str(_text(v)) for v in r[:n]), str(_text(r[n]))) for r in self._all(query, params)]

    def bucket_digests(self, spec: TableSpec, buckets: int) -> dict[int, Digest]:
        q = _Sql(spec)
        query = (f"SELECT {q.bucket_of('h', buckets)} AS b, COUNT(*), {_HALVES} "
                 f"FROM (SELECT MD5({q.row_text()}) h FROM {q.name}) x GROUP BY b")
        return {int(str(_text(b))): Digest(int(n), f"{_text(x)}:{_text(y)}") for b, n, x, y in self._all(query)}

    def bucket_rows(self, spec: TableSpec, bucket: int, buckets: int) -> dict[str, int]:
        q = _Sql(spec)
        query = (f"SELECT r, COUNT(*) FROM (SELECT {q.row_text()} r FROM {q.name}) x "
                 f"WHERE {q.bucket_of('MD5(r)', buckets)} = %s GROUP BY r")
        return {str(_text(r)): int(n) for r, n in self._all(query, [bucket])}

    def close(self) -> None:
        try:
            if self.conn.open:
                self.conn.close()  # rolls back whatever is open
        except pymysql.err.Error:
            log.debug("closing a verify connection failed", exc_info=True)


class MariaDBSourceSide(_Side, SourceSide):
    """The primary, inside the snapshot (its own session, taken over)."""

    def row_values(self, spec: TableSpec, keys: Sequence[Key]) -> list[list[str | None]]:
        q = _Sql(spec)
        cols = ", ".join(value_text(c) for c in spec.meta.columns)
        out: list[list[str | None]] = []
        for key in keys:
            cond, params = q.key_match(key)
            found = self._all(f"SELECT {cols} FROM {q.name} WHERE {cond}", params)
            if not found:
                raise RuntimeError(f"{spec.table}: key {format_key(key)} vanished from the primary snapshot")
            out.append([_text(v) for v in found[0]])
        return out

    def bucket_values(self, spec: TableSpec, bucket: int, buckets: int) -> list[list[str | None]]:
        q = _Sql(spec)
        cols = ", ".join(value_text(c) for c in spec.meta.columns)
        query = f"SELECT {cols} FROM {q.name} WHERE {q.bucket_of('MD5(' + q.row_text() + ')', buckets)} = %s"
        return [[_text(v) for v in r] for r in self._all(query, [bucket])]


class MariaDBStandbySide(_Side, StandbySide):
    """A standby in a consistent-snapshot transaction (read-write past the read-only guard for a repair)."""

    def __init__(self, conn: Any, error: Callable[[str], ArkError], write: bool) -> None:
        super().__init__(conn, error)
        self.write = write

    def held_state(self, group: str, standby: str) -> tuple[int, str, bytes]:
        # A locking read sees the newest committed row (not the snapshot's): the applier is held, so they agree.
        found = self._all(state.LOAD_STATE_SQL + (" FOR UPDATE NOWAIT" if self.write else ""), [group, standby])
        if not found:
            raise TargetError(f"standby {standby} has no state row", fix=f"run 'ark sync {standby}' first")
        row = found[0]
        return int(str(_text(row[4]))), str(_text(row[5])), bytes(row[6])  # varbinary: bytes

    def shape_problem(self, spec: TableSpec) -> str:
        schema, name = sql.split_table(spec.table)
        rows = self._all("SELECT COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME FROM information_schema.COLUMNS "
                         "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", [schema, name])
        if not rows:
            return f"{spec.table} does not exist on the standby"
        have = {str(_text(r[0])).casefold(): ddl.normalise(str(_text(r[1])), _text(r[2])) for r in rows}
        for col in spec.meta.columns:
            want = sql.catalog_form(sql.column_type(col, identity=spec.meta.identity))
            got = have.get(col.name.casefold())
            if got is None:
                return f"column {col.name} of {spec.table} is missing on the standby"
            if got != want:
                return f"column {col.name} of {spec.table} is {want} on the primary but {got} on the standby"
        return ""

    def rewrite(self, spec: TableSpec, doomed: Sequence[Key], rows: Sequence[Sequence[str | None]]) -> None:
        q = _Sql(spec)
        with self._cursor() as cur:
            for key in doomed:
                cond, params = q.key_match(key)
                cur.execute(f"DELETE FROM {q.name} WHERE {cond}", params)
            if rows:
                cur.executemany(q.insert(), [list(r) for r in rows])

    def rewrite_bucket(self, spec: TableSpec, bucket: int, buckets: int,
                       rows: Sequence[Sequence[str | None]]) -> None:
        q = _Sql(spec)
        with self._cursor() as cur:
            cur.execute(f"DELETE FROM {q.name} WHERE {q.bucket_of('MD5(' + q.row_text() + ')', buckets)} = %s",
                        [bucket])
            if rows:
                cur.executemany(q.insert(), [list(r) for r in rows])

    def commit(self) -> None:
        try:
            self.conn.commit()
        except pymysql.err.Error as exc:
            raise self._error(message_of(exc)) from None


class MariaDBVerifier(Verifier):
    """Opens both sides (see the module docstring)."""

    def open_source(self, primary: PrimarySettings, snapshot: Snapshot) -> MariaDBSourceSide:
        if not isinstance(primary, MariaDBPrimary):
            raise TypeError(f"MariaDBVerifier needs a MariaDB primary, got {primary.engine}")
        if not isinstance(snapshot, SessionSnapshot):
            raise TypeError(f"MariaDBVerifier needs a MariaDB snapshot, got {type(snapshot).__name__}")
        where = primary.describe()

        def error(message: str) -> ArkError:
            return SourceError(f"verify on {where}: {message}", fix="check the primary ('ark check'); run verify "
                               "again")

        return MariaDBSourceSide(snapshot.take_session(), error)

    def open_standby(self, standby: StandbySettings, *, write: bool) -> MariaDBStandbySide:
        if not isinstance(standby, MariaDBStandby):
            raise TypeError(f"MariaDBVerifier needs a MariaDB standby, got {standby.engine}")
        where = standby.describe()

        def error(message: str) -> ArkError:
            return TargetError(f"verify on {where}: {message}", fix="check the standby's connection settings "
                               "('ark check'); run verify again")

        kwargs = standby.connect_kwargs()
        # The applier's session settings (UTC, zero dates allowed, NO_AUTO_VALUE_ON_ZERO): values written
        # back by a repair are stored as the applier would store them. Its user passes the read_only guard.
        kwargs.update(conv=TEXT_RESULTS, init_command=SESSION + (", SESSION innodb_lock_wait_timeout = 5"
                                                                  if write else ""))
        try:
            conn = pymysql.connect(**kwargs)
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, " + ("READ WRITE" if write else "READ ONLY"))
        except pymysql.err.Error as exc:
            raise TargetError(f"cannot open standby {standby.name} for verify: {message_of(exc)}",
                              fix="check the standby's connection settings ('ark check')") from None
        return MariaDBStandbySide(conn, error, write)
