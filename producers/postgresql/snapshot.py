"""PostgreSQL's snapshot source: an exported snapshot at a known LSN, tables described as the stream does.

A temporary logical replication slot created with ``EXPORT_SNAPSHOT`` gives both at once: the snapshot
sees exactly the transactions that committed before the slot's ``consistent_point`` P, and every later
transaction commits after it. The snapshot stays importable while that replication connection stays
open and idle, so it lives as long as the :class:`PostgresSnapshot`. A second connection imports it
(``SET TRANSACTION SNAPSHOT``) with the capture's session settings, so that values read from it have
exactly the text the stream carries (DateStyle ISO, UTC, bytea as hex, shortest exact floats).

Rows: ``COPY ... TO STDOUT``, streamed. :meth:`PostgresTableRows.native_blocks` hands the COPY text over
as it is (a PostgreSQL standby loads it with COPY FROM: the fast path); :meth:`PostgresTableRows.values`
parses it with the stream's own per-column converters.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras
from psycopg import sql as psql

from common.engines.postgresql import IDENTITY_SQL, PG_COPY_TEXT, PostgresPrimary, identity_from_row
from common.errors import SourceError
from common.identity import DatabaseIdentity
from common.settings import PrimarySettings
from common.snapshot import SchemaObjects, Snapshot, SnapshotSource, TableRows
from producers.postgresql.catalog import SESSION_OPTIONS
from producers.postgresql.describe import describe_rels
from producers.postgresql.dump import schema_objects
from producers.postgresql.relations import Rel
from schemas.entries import Position, TableMeta, Value
from schemas.positions import pg_lsn

log = logging.getLogger(__name__)

#: Bytes per block handed to a native bulk load.
BLOCK_BYTES = 1 << 20

_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(field: str) -> str:
    """One field of COPY text output, unescaped (COPY TO writes only these escapes)."""
    if "\\" not in field:
        return field
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m[1], m[1]), field)


def parse_copy_line(line: str) -> list[str | None]:
    """The raw text values of one COPY text line (``\\N`` is NULL)."""
    return [None if f == "\\N" else _unescape(f) for f in line.rstrip("\n").split("\t")]


class _Exported:
    """The replication connection that exports the snapshot; the snapshot lives while it is open."""

    def __init__(self, primary: PostgresPrimary) -> None:
        self.slot = f"ark_sync_{uuid.uuid4().hex[:12]}"
        try:
            self.conn = psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                         **primary.connect_kwargs())
        except psycopg2.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"cannot open a replication connection to {primary.describe()}: {first}",
                              fix="check that the primary runs, the password source, and that the user has "
                                  "REPLICATION and a pg_hba.conf entry allowing replication") from None
        try:
            cur = self.conn.cursor()
            cur.execute(f"CREATE_REPLICATION_SLOT {self.slot} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT")
            row = cur.fetchone()
        except psycopg2.Error as exc:
            self.conn.close()
            raise SourceError(f"{primary.describe()} refused to export a snapshot: {' '.join(str(exc).split())}",
                              fix="check max_replication_slots (one more slot is needed while the copy runs)"
                              ) from None
        if row is None:
            self.conn.close()
            raise SourceError("the primary returned no snapshot for CREATE_REPLICATION_SLOT", fix="check the primary")
        _slot, consistent_point, self.name, _plugin = row
        self.position = pg_lsn(consistent_point)

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()  # a temporary slot disappears with its connection


def import_snapshot(primary: PostgresPrimary, token: str, *, application_name: str = "ark-snapshot"
                    ) -> psycopg.Connection[Any]:
    """A connection inside ``REPEATABLE READ READ ONLY`` on the exported snapshot ``token``, with the capture's
    session settings (so values read here have the stream's text)."""
    kwargs = primary.connect_kwargs()
    kwargs.update(application_name=application_name, options=SESSION_OPTIONS)
    try:
        conn: psycopg.Connection[Any] = psycopg.connect(autocommit=True, **kwargs)
    except psycopg.Error as exc:
        lines = str(exc).strip().splitlines()
        raise SourceError(f"cannot connect to {primary.describe()} to read a snapshot: "
                          f"{lines[-1] if lines else type(exc).__name__}",
                          fix="check the primary's host, port, user and password") from None
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(psql.SQL("SET TRANSACTION SNAPSHOT {}").format(psql.Literal(token)))
    except psycopg.Error as exc:
        conn.close()
        raise SourceError(f"cannot use exported snapshot {token!r}: {exc.diag.message_primary or exc}",
                          fix="the session that exported it ended; run the command again") from None
    return conn


class PostgresTableRows(TableRows):
    """``COPY table (columns) TO STDOUT`` in the snapshot."""

    native_format = PG_COPY_TEXT

    def __init__(self, conn: psycopg.Connection[Any], rel: Rel) -> None:
        super().__init__(rel.meta)
        self._conn = conn
        self._rel = rel
        schema, _, name = rel.meta.table.partition(".")
        kind = conn.execute("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = %s AND c.relname = %s", [schema, name]).fetchone()
        self._partitioned = kind is not None and kind[0] == "p"

    def _copy_sql(self) -> psql.Composed:
        schema, _, name = self.meta.table.partition(".")
        cols = psql.SQL(", ").join(psql.Identifier(c.name) for c in self.meta.columns)
        table = psql.Identifier(schema, name)
        if self._partitioned:  # COPY reads a partitioned table only through a query (its rows are its partitions')
            return psql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, table)
        return psql.SQL("COPY {} ({}) TO STDOUT").format(table, cols)

    def _chunks(self) -> Iterator[bytes]:
        with self._conn.cursor() as cur, cur.copy(self._copy_sql()) as copy:
            for data in copy:  # libpq hands COPY OUT data over one row at a time
                yield bytes(data)

    def native_blocks(self) -> Iterator[bytes]:
        block = bytearray()
        for data in self._chunks():
            block += data
            if len(block) >= BLOCK_BYTES:
                yield bytes(block)
                block = bytearray()
        if block:
            yield bytes(block)

    def values(self) -> Iterator[list[Value]]:
        convs = self._rel.convs
        for data in self._chunks():
            raw = parse_copy_line(data.decode("utf-8"))
            yield [None if v is None else conv(v.encode("utf-8")) for conv, v in zip(convs, raw, strict=True)]


class PostgresSnapshot(Snapshot):
    """An exported snapshot and a session inside it (see the module docstring)."""

    def __init__(self, primary: PostgresPrimary) -> None:
        self._primary = primary
        self._exported = _Exported(primary)
        try:
            self.conn = import_snapshot(primary, self._exported.name)
        except BaseException:
            self._exported.close()
            raise
        self.position: Position = self._exported.position
        self.token = self._exported.name
        self._rels: dict[str, Rel] = {}
        self._skip_keyless = primary.keyless == "skip"
        log.info("snapshot %s of %s at %s", self.token, primary.describe(), self.position.text)

    def tables(self, patterns: Sequence[str]) -> list[TableMeta]:
        rels = describe_rels(self.conn, patterns)
        if self._skip_keyless:  # primary.keyless: skip: a table without a replica identity is not replicated
            rels = [r for r in rels if r.meta.identity != "none"]
        self._rels.update((r.table, r) for r in rels)
        return [r.meta for r in rels]

    def rows(self, meta: TableMeta) -> TableRows:
        rel = self._rels.get(meta.table)
        if rel is None or rel.meta != meta:
            found = [r for r in describe_rels(self.conn, [meta.table]) if r.table == meta.table]
            if not found:
                raise SourceError(f"table {meta.table} is not in the snapshot (dropped, or not an ordinary logged "
                                  "table)", fix="check the table name (schema.table) and primary.tables")
            rel = found[0]
        return PostgresTableRows(self.conn, rel)

    def objects(self, tables: Sequence[TableMeta]) -> SchemaObjects:
        """The schema copy of ``tables`` as of this snapshot (see :mod:`producers.postgresql.dump`)."""
        return schema_objects(self.conn, self._primary, self.token, [m.table for m in tables])

    def close(self) -> None:
        try:
            if not self.conn.closed:
                self.conn.close()
        finally:
            self._exported.close()


class PostgresSnapshotSource(SnapshotSource):
    """Snapshots of a PostgreSQL primary."""

    def __init__(self, primary: PrimarySettings) -> None:
        if not isinstance(primary, PostgresPrimary):
            raise TypeError(f"PostgresSnapshotSource needs PostgreSQL settings, got {primary.engine}")
        self.primary = primary

    def open(self) -> PostgresSnapshot:
        return PostgresSnapshot(self.primary)

    def identity(self) -> DatabaseIdentity:
        kwargs = {**self.primary.connect_kwargs(), "application_name": "ark-identity"}
        try:
            with psycopg.connect(autocommit=True, **kwargs) as conn:
                row = conn.execute(IDENTITY_SQL).fetchone()
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines()
            raise SourceError(f"cannot read the identity of {self.primary.describe()}: "
                              f"{lines[-1] if lines else type(exc).__name__}",
                              fix="check the primary's connection settings ('ark check')") from None
        assert row is not None
        return identity_from_row(row)
