"""The COPY BOTH framing of the streaming replication protocol, on psycopg2's own libpq connection.

Why not ``ReplicationCursor.read_message()``: psycopg2 (2.8+) moves its internal ``flush_lsn``
forward to the ``wal_end`` of every server keepalive whenever the last position passed to
``send_feedback(flush_lsn=...)`` is at or past the start of the last data message (which is also
true before any data arrived: 0 >= 0), and it sends that value on its periodic status updates and
keepalive replies. The slot would then advance without :meth:`PostgresCapture.confirm`, which
Ark forbids: only positions durable in Kafka may be confirmed.

So psycopg2 opens the connection and issues START_REPLICATION, and this module reads and writes the
CopyData messages itself through the same libpq (symbols resolved through psycopg2's extension
module, so it is the very library psycopg2 is linked against). The only status updates the server
ever receives are built here (see :meth:`PostgresCapture._send_status` for what they say).

:attr:`WalStream.received` is the highest WAL position the server said it sent (a keepalive's
``wal_end`` is the walsender's ``sentPtr``). Reporting it as the *write* position is what lets a
walsender finish at shutdown: it exits only when the client's flush (or, when the flush is invalid,
its write) equals ``sentPtr``.
"""

from __future__ import annotations

import ctypes
import struct
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

from producers.postgresql.pgoutput import PG_EPOCH_UNIX_US

_XLOGDATA = struct.Struct(">QQq")  # after the 'w': data_start, wal_end, send_time
_KEEPALIVE = struct.Struct(">QqB")  # after the 'k': wal_end, send_time, reply requested
_STATUS = struct.Struct(">cQQQqB")  # 'r', write, flush, apply, client time, reply requested
_HDR_W: Final = 25
#: Messages at least this large (a row with large values) are handed on as a view of the received bytes
#: instead of one more copy: the capture holds as few copies of a large value as it can.
LARGE_MESSAGE: Final = 1 << 20


class StreamError(Exception):
    """The replication stream failed or ended; the message comes from libpq / the server."""


@dataclass(frozen=True, slots=True)
class XLogData:
    """A 'w' message: one pgoutput message starting at ``data_start``."""

    data_start: int
    wal_end: int
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A 'k' message: the server stands at ``wal_end``; ``reply`` asks for a status update now."""

    wal_end: int
    reply: bool


_LIB: Any = None


def _libpq() -> Any:
    """libpq, as linked into psycopg2 (dlsym searches the extension's dependencies)."""
    global _LIB
    if _LIB is None:
        import psycopg2._psycopg as ext

        lib = ctypes.CDLL(ext.__file__)
        lib.PQgetCopyData.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        lib.PQgetCopyData.restype = ctypes.c_int
        lib.PQputCopyData.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.PQputCopyData.restype = ctypes.c_int
        lib.PQflush.argtypes = [ctypes.c_void_p]
        lib.PQflush.restype = ctypes.c_int
        lib.PQconsumeInput.argtypes = [ctypes.c_void_p]
        lib.PQconsumeInput.restype = ctypes.c_int
        lib.PQfreemem.argtypes = [ctypes.c_void_p]
        lib.PQfreemem.restype = None
        lib.PQerrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQerrorMessage.restype = ctypes.c_char_p
        lib.PQgetResult.argtypes = [ctypes.c_void_p]
        lib.PQgetResult.restype = ctypes.c_void_p
        lib.PQresultErrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQresultErrorMessage.restype = ctypes.c_char_p
        lib.PQclear.argtypes = [ctypes.c_void_p]
        lib.PQclear.restype = None
        _LIB = lib
    return _LIB


class WalStream:
    """Read XLogData / keepalive messages and send status updates on a connection in COPY BOTH."""

    def __init__(self, conn: Any) -> None:
        """``conn``: a psycopg2 replication connection on which START_REPLICATION has been issued."""
        self._conn = conn
        self._lib = lib = _libpq()
        self._pg = ctypes.c_void_p(conn.pgconn_ptr)
        self._buf = ctypes.c_void_p()
        self._bufref = ctypes.byref(self._buf)
        self._get, self._consume, self._free = lib.PQgetCopyData, lib.PQconsumeInput, lib.PQfreemem
        self.received = 0

    def fileno(self) -> int:
        """The socket, for ``select``."""
        return int(self._conn.fileno())

    def _error(self, what: str) -> StreamError:
        text = (self._lib.PQerrorMessage(self._pg) or b"").decode("utf-8", "replace").strip()
        return StreamError(f"{what}: {text or 'connection lost'}")

    def _ended(self) -> StreamError:
        messages = []
        while True:
            res = self._lib.PQgetResult(self._pg)
            if not res:
                break
            msg = (self._lib.PQresultErrorMessage(res) or b"").decode("utf-8", "replace").strip()
            if msg:
                messages.append(msg)
            self._lib.PQclear(res)
        return StreamError("; ".join(messages) or "the server ended the replication stream")

    def read(self) -> XLogData | Keepalive | None:
        """The next message, or None when nothing is buffered or readable right now (never blocks)."""
        get, pg, ref = self._get, self._pg, self._bufref
        n = get(pg, ref, 1)
        if n == 0:
            if not self._consume(pg):
                raise self._error("reading the replication stream")
            n = get(pg, ref, 1)
            if n == 0:
                return None
        if n == -1:
            raise self._ended()
        if n < 0:
            raise self._error("reading the replication stream")
        buf = self._buf
        if n >= LARGE_MESSAGE:
            return self._large(buf, n)
        try:
            data = ctypes.string_at(buf, n)  # one copy out of libpq's buffer
        finally:
            self._free(buf)
        kind = data[0]
        if kind == 119 and n >= _HDR_W:  # 'w'
            start, end, _ = _XLOGDATA.unpack_from(data, 1)
            if end > self.received:
                self.received = end
            return XLogData(start, end, data[_HDR_W:])
        if kind == 107 and n >= 18:  # 'k'
            end, _, reply = _KEEPALIVE.unpack_from(data, 1)
            if end > self.received:
                self.received = end
            return Keepalive(end, bool(reply))
        raise StreamError(f"unexpected replication message {data[:1]!r} of {n} bytes")

    def _large(self, buf: ctypes.c_void_p, n: int) -> XLogData:
        """A large message (a row with large values) without a copy: a view of the memory libpq handed
        over, freed when the last view of it is gone (the parsed row holds converted values, not views)."""
        address = buf.value
        assert address is not None
        block = (ctypes.c_char * n).from_address(address)
        weakref.finalize(block, self._free, address)
        view = memoryview(block).cast("B")
        if view[0] != 119 or n < _HDR_W:  # 'w': only data messages are ever this large
            raise StreamError(f"unexpected replication message {bytes(view[:1])!r} of {n} bytes")
        start, end, _ = _XLOGDATA.unpack_from(view, 1)
        if end > self.received:
            self.received = end
        return XLogData(start, end, view[_HDR_W:])

    def send_status(self, write: int, flush: int, apply: int, reply_requested: bool = False) -> None:
        """Send a Standby Status Update with exactly these positions (0 is InvalidXLogRecPtr)."""
        now_pg = int(time.time() * 1_000_000) - PG_EPOCH_UNIX_US
        msg = _STATUS.pack(b"r", write, flush, apply, now_pg, 1 if reply_requested else 0)
        if self._lib.PQputCopyData(self._pg, msg, len(msg)) != 1 or self._lib.PQflush(self._pg) != 0:
            raise self._error("sending replication feedback")
