"""MariaDB's replication protocol: a binlog dump over a PyMySQL connection, read event by event.

Why not ``mysql-replication`` (PyPI, module ``pymysqlreplication``)? It was tried (1.0.17) and it
reads the protocol well, but for MariaDB it only starts from a GTID state or from the first binlog
(its MariaDB dump command always sends position 4 and no file name), it decodes every value into a
Python object on the fly and turns zero dates, out-of-range datetimes and empty SETs into ``None``
(a silent change Ark must not make), and it opens a second connection to ``information_schema`` at
start. This module keeps PyMySQL (which that library builds on) for the connection, and does the
~200 lines of the protocol itself: the dump command (from a file and offset), the events Ark needs
(:class:`Event`), the binlog checksum (verified: a corrupt event is refused, never applied), and
heartbeats, which wake the reader when the source is idle so that it can report positions.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import pymysql

log = logging.getLogger(__name__)

COM_BINLOG_DUMP = 0x12

# event types (MariaDB's log_event.h)
QUERY, STOP, ROTATE, FORMAT_DESCRIPTION, XID, TABLE_MAP = 2, 3, 4, 15, 16, 19
WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1 = 23, 24, 25
HEARTBEAT, WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2 = 27, 30, 31, 32
ANNOTATE_ROWS, BINLOG_CHECKPOINT, GTID, GTID_LIST, START_ENCRYPTION = 160, 161, 162, 163, 164
QUERY_COMPRESSED, WRITE_ROWS_COMPRESSED_V1, UPDATE_ROWS_COMPRESSED_V1, DELETE_ROWS_COMPRESSED_V1 = 165, 169, 170, 171
ROW_EVENTS = frozenset({WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1, WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2})
COMPRESSED = frozenset({QUERY_COMPRESSED, WRITE_ROWS_COMPRESSED_V1, UPDATE_ROWS_COMPRESSED_V1,
                        DELETE_ROWS_COMPRESSED_V1, 166, 167, 168})

# GTID event flags
FL_STANDALONE, FL_GROUP_COMMIT_ID, FL_PREPARED_XA, FL_COMPLETED_XA = 1, 2, 64, 128

_HEADER = struct.Struct("<IBIIIH")
ARTIFICIAL = 0x20  # LOG_EVENT_ARTIFICIAL_F: a rotate/format event made up by the dump thread


class BinlogError(Exception):
    """The binlog stream failed (``code`` is the server's error number, 0 for a local failure)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Event:
    """One binlog event: header fields and the body (without header and checksum)."""

    timestamp: int
    type: int
    server_id: int
    next_pos: int  # position of the next event in the current file (0 for artificial events)
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Gtid:
    """A MariaDB GTID event: ``domain-server-seq`` and whether it opens a standalone statement (DDL)."""

    domain: int
    server_id: int
    seq: int
    flags: int

    @property
    def text(self) -> str:
        """``domain-server-seq``."""
        return f"{self.domain}-{self.server_id}-{self.seq}"

    @property
    def standalone(self) -> bool:
        """True for a statement without BEGIN/COMMIT (DDL, or a non-transactional statement)."""
        return bool(self.flags & FL_STANDALONE)

    @property
    def xa(self) -> bool:
        """True for an XA transaction's prepare or completion."""
        return bool(self.flags & (FL_PREPARED_XA | FL_COMPLETED_XA))


@dataclass(frozen=True, slots=True)
class Query:
    """A query event: the default database and the statement text."""

    schema: str
    sql: str


def parse_gtid(ev: Event) -> Gtid:
    """The GTID of a GTID event (the header's server id is the GTID's)."""
    seq, domain, flags = struct.unpack_from("<QIB", ev.body, 0)
    return Gtid(domain, ev.server_id, seq, flags)


def parse_query(body: bytes) -> Query:
    """The default schema and SQL of a query event."""
    _thread, _exec, schema_len, _err, status_len = struct.unpack_from("<IIBHH", body, 0)
    pos = 13 + status_len
    schema = body[pos:pos + schema_len].decode("utf-8", "replace")
    pos += schema_len + 1
    return Query(schema, body[pos:].decode("utf-8", "replace"))


def parse_rotate(body: bytes) -> tuple[str, int]:
    """(next file, position in it) of a rotate event."""
    return body[8:].decode(), struct.unpack_from("<Q", body, 0)[0]


def parse_gtid_list(body: bytes) -> list[tuple[int, int, int]]:
    """(domain, server, seq) of a GTID-list event (the last GTID of each domain before this file)."""
    count = struct.unpack_from("<I", body, 0)[0] & 0x0FFFFFFF
    return [struct.unpack_from("<IIQ", body, 4 + 16 * i) for i in range(count)]


class BinlogStream:
    """A binlog dump from ``file``:``pos``; :meth:`read` returns the next event (see the module docstring)."""

    def __init__(self, connect_kwargs: dict[str, Any], *, server_id: int, heartbeat_s: float,
                 read_timeout_s: float = 30.0) -> None:
        kwargs = dict(connect_kwargs)
        kwargs.update(read_timeout=read_timeout_s, write_timeout=read_timeout_s, autocommit=True)
        self.conn = pymysql.connect(**kwargs)
        self.server_id = server_id
        self.heartbeat_s = heartbeat_s
        self.checksum = False

    def start(self, file: str, pos: int) -> None:
        """Send the dump command; events follow from ``file``:``pos`` (an event boundary)."""
        cur = self.conn.cursor()
        try:
            cur.execute("SELECT @@global.binlog_checksum")
            row = cur.fetchone()
            self.checksum = bool(row and str(row[0]).upper() != "NONE")
            cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            cur.execute("SET @mariadb_slave_capability = 4")  # MARIA_SLAVE_CAPABILITY_GTID: GTID events
            cur.execute("SET @master_heartbeat_period = %s", (int(self.heartbeat_s * 1e9),))
        finally:
            cur.close()
        payload = struct.pack("<IHI", pos, 0, self.server_id) + file.encode()
        self.conn._execute_command(COM_BINLOG_DUMP, payload)  # noqa: SLF001 - PyMySQL has no public API for it

    def read(self) -> Event | None:
        """The next event (blocks until one arrives; heartbeats arrive while the source is idle).

        None when the server ends the stream. Raises :class:`BinlogError` with the server's error
        (1236: the requested binlog is gone), or pymysql's OperationalError when the connection is lost.
        """
        try:
            pkt = self.conn._read_packet()  # noqa: SLF001
        except (pymysql.err.InternalError, pymysql.err.OperationalError, pymysql.err.ProgrammingError) as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            if code in (1236, 1220, 1371, 1593):
                raise BinlogError(str(exc.args[1] if len(exc.args) > 1 else exc), code) from None
            raise
        data = pkt.get_all_data()
        if data[:1] == b"\xfe" and len(data) < 9:
            return None
        if data[:1] != b"\x00":
            raise BinlogError(f"unexpected binlog packet 0x{data[0]:02x}")
        timestamp, etype, server_id, size, next_pos, flags = _HEADER.unpack_from(data, 1)
        end = 1 + size
        if len(data) != end:
            raise BinlogError(f"binlog event of type {etype} is {len(data) - 1} bytes, its header says {size}")
        if self.checksum and etype != FORMAT_DESCRIPTION:
            want = struct.unpack_from("<I", data, end - 4)[0]
            if zlib.crc32(memoryview(data)[1:end - 4]) != want:
                raise BinlogError(f"binlog event of type {etype} ending at {next_pos} failed its CRC32 check")
            body = data[20:end - 4]
        elif etype == FORMAT_DESCRIPTION:
            body = data[20:end - (4 if self.checksum else 0)]
        else:
            body = data[20:end]
        return Event(timestamp, etype, server_id, next_pos, flags, body)

    def dry(self) -> bool:
        """True when nothing more of the stream is here yet: PyMySQL's read buffer is empty and the socket has
        nothing to read (a peek with the socket non-blocking for a moment; what it finds stays buffered)."""
        sock, rfile = self.conn._sock, self.conn._rfile  # noqa: SLF001 - PyMySQL has no public API for it
        if sock is None or rfile is None:
            return False
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            return not rfile.peek(1)
        except OSError:
            return False  # the next read says what is wrong with the connection
        finally:
            sock.settimeout(timeout)

    def close(self) -> None:
        """Close the connection (safe twice)."""
        try:
            self.conn.close()
        except pymysql.err.Error:
            log.debug("closing the binlog connection failed", exc_info=True)
