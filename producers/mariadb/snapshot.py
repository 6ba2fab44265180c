"""MariaDB's snapshot source: a consistent snapshot at a known binlog position, while the primary serves.

``START TRANSACTION WITH CONSISTENT SNAPSHOT`` opens an InnoDB read view, and MariaDB reports the
binlog position consistent with it (``Binlog_snapshot_file`` / ``Binlog_snapshot_position``): every
transaction whose GTID event starts before that position P is in the snapshot, every later one is
not. ``BINLOG_GTID_POS`` gives the GTID state at P. The stream's commit positions are where a
transaction starts (:mod:`.capture`), so a standby loaded from this snapshot skips every entry at or
below ``just_before(P)``, exactly as after a PostgreSQL exported snapshot. (Only InnoDB tables are
consistent: a MyISAM or Aria table is read as it is at that moment.)

:meth:`MariaDBSnapshot.tables` builds each table's TableMeta with the same function as the stream
(:func:`.catalog.table_meta`) from the same :class:`~.types.ColumnType`, and :meth:`MariaDBTableRows.values`
converts each value with the same :meth:`~.types.ColumnType.from_text` the binlog path uses, so a standby
built from a snapshot and one built from the stream hold the same shapes and values.

MariaDB cannot share a snapshot with another session (there is no exported snapshot), so the snapshot's
``token`` is empty; the MariaDB verifier takes the snapshot's own session over instead
(:meth:`MariaDBSnapshot.take_session`, :class:`common.engines.mariadb.SessionSnapshot`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pymysql
import pymysql.cursors

from common.engines.mariadb import IDENTITY_SQL, MariaDBPrimary, identity_from_row
from common.errors import SourceError
from common.identity import DatabaseIdentity
from common.settings import PrimarySettings
from common.snapshot import Snapshot, SnapshotSource, TableRows
from producers.mariadb import catalog
from producers.mariadb.types import ColumnType
from schemas.entries import Position, TableMeta, Value
from schemas.positions import mariadb_position

log = logging.getLogger(__name__)

_FETCH = 2000


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quoted_table(table: str) -> str:
    """``schema.table`` as a quoted MariaDB name."""
    schema, _, name = table.partition(".")
    return f"{_quote(schema)}.{_quote(name)}"


def _converter(ct: ColumnType) -> Callable[[Any], Value]:
    if ct.neutral == "string":
        return lambda v: v  # already text in the connection's utf8mb4
    from_text = ct.from_text
    return lambda v: from_text(v if isinstance(v, bytes) else v.encode())


class MariaDBTableRows(TableRows):
    """``SELECT`` of one table in the snapshot, streamed (an unbuffered cursor: bounded memory)."""

    def __init__(self, snapshot: MariaDBSnapshot, meta: TableMeta, shape: catalog.Shape) -> None:
        super().__init__(meta)
        self._snapshot = snapshot
        self._shape = shape

    def values(self) -> Iterator[list[Value]]:
        types = dict(zip(self._shape.names, self._shape.types, strict=True))
        cols = [c.name for c in self.meta.columns]
        missing = [c for c in cols if c not in types]
        if missing:
            raise SourceError(f"{self.meta.table} has no column {missing[0]} in the snapshot",
                              fix="the table changed shape: take a new snapshot")
        convs = [_converter(types[c]) for c in cols]
        select = ", ".join(types[c].text_expr(_quote(c)) for c in cols)
        snap = self._snapshot
        with snap.conn.cursor(pymysql.cursors.SSCursor) as cur:
            try:
                cur.execute(f"SELECT {select} FROM {quoted_table(self.meta.table)}")
                while True:
                    batch = cur.fetchmany(_FETCH)
                    if not batch:
                        break
                    for row in batch:
                        yield [None if v is None else conv(v) for conv, v in zip(convs, row, strict=True)]
            except pymysql.err.Error as exc:
                raise catalog.source_error(snap.settings, exc) from None


class MariaDBSnapshot(Snapshot):
    """One open snapshot (see the module docstring); :meth:`close` ends it."""

    def __init__(self, conn: Any, settings: MariaDBPrimary) -> None:
        self.conn: Any = conn
        self.settings = settings
        self._owned = True  # False once the verifier took the session over
        rows = catalog.query(conn, "SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
        status = {str(k).lower(): str(v) for k, v in rows}
        file, pos = status.get("binlog_snapshot_file", ""), int(status.get("binlog_snapshot_position", "0") or 0)
        if not file:
            raise SourceError(f"MariaDB {catalog.where(settings)} reports no binlog position for the snapshot",
                              fix="start the server with log_bin and binlog_format=ROW")
        gtid = catalog.query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))[0][0]
        #: The snapshot's consistent point: transactions starting before it are in the snapshot.
        self.position: Position = mariadb_position(file, pos, str(gtid or ""))
        self.token = ""
        self._shapes: dict[str, catalog.Shape] = {}
        log.info("snapshot of %s at %s", settings.describe(), self.position.text)

    def _shape(self, schema: str, table: str) -> catalog.Shape | None:
        try:
            return catalog.catalog_shape(self.conn, schema, table)
        except ValueError as exc:
            raise SourceError(f"cannot copy {exc}", fix="change the column's type, or leave the table out of "
                              "primary.tables") from None
        except pymysql.err.Error as exc:
            raise catalog.source_error(self.settings, exc) from None

    def tables(self, patterns: Sequence[str]) -> list[TableMeta]:
        """The TableMeta of every table matching ``patterns`` (the same the stream would carry)."""
        out = []
        try:
            found = catalog.matched_tables(self.conn, patterns)
        except pymysql.err.Error as exc:
            raise catalog.source_error(self.settings, exc) from None
        for schema, table in found:
            shape = self._shape(schema, table)
            if shape is None:
                continue
            self._shapes[shape.table] = shape
            out.append(catalog.table_meta(shape))
        return out

    def rows(self, meta: TableMeta) -> MariaDBTableRows:
        """The table's rows as of :attr:`position`, in ``meta``'s column order."""
        shape = self._shapes.get(meta.table)
        if shape is None:
            schema, _, table = meta.table.partition(".")
            shape = self._shape(schema, table)
            if shape is None:
                raise SourceError(f"table {meta.table} is not in the snapshot of {catalog.where(self.settings)}",
                                  fix="check the table name (schema.table) and primary.tables")
            self._shapes[meta.table] = shape
        return MariaDBTableRows(self, meta, shape)

    def take_session(self) -> Any:
        """The snapshot's connection, handed over (see :class:`common.engines.mariadb.SessionSnapshot`)."""
        if not self._owned:
            raise RuntimeError("the snapshot's session was taken over already")
        self._owned = False
        return self.conn

    def close(self) -> None:
        """End the snapshot transaction and close the connection, unless it was taken over (safe twice)."""
        if not self._owned:
            return
        self._owned = False
        try:
            self.conn.close()
        except pymysql.err.Error:
            log.debug("closing the snapshot connection failed", exc_info=True)


class MariaDBSnapshotSource(SnapshotSource):
    """Opens consistent snapshots of a MariaDB primary."""

    def __init__(self, primary: PrimarySettings) -> None:
        if not isinstance(primary, MariaDBPrimary):
            raise TypeError(f"MariaDBSnapshotSource needs MariaDB settings, got {primary.engine}")
        self.primary = primary

    def identity(self) -> DatabaseIdentity:
        """Which server the primary really is (SourceError when unreachable)."""
        conn = catalog.connect(self.primary, role="the primary")
        try:
            return identity_from_row(catalog.query(conn, IDENTITY_SQL)[0])
        except pymysql.err.Error as exc:
            raise catalog.source_error(self.primary, exc) from None
        finally:
            conn.close()

    def open(self) -> MariaDBSnapshot:
        """A snapshot at a known position (the primary keeps serving)."""
        conn = catalog.connect(self.primary, role="the primary (snapshot)", conv=catalog.TEXT_RESULTS)
        try:
            catalog.query(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            catalog.query(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            return MariaDBSnapshot(conn, self.primary)
        except pymysql.err.Error as exc:
            conn.close()
            raise catalog.source_error(self.primary, exc) from None
        except BaseException:
            conn.close()
            raise
