"""MariaDB's :class:`SourceProbe`: where the binlog stands, and how much of it the primary holds.

MariaDB has no replication slot: it keeps its binlog by age (``binlog_expire_logs_seconds``) whoever
still needs it, so the probe reports what is held (files, bytes, the oldest file and its GTID state)
and how long it is kept. Byte distances between two positions are summed over ``SHOW BINARY LOGS``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pymysql

from common.config import ArkConfig
from common.errors import ArkError
from common.probe import SourceLog, SourceProbe
from producers.mariadb import catalog
from producers.mariadb.gaps import gtid_state_text, oldest_gtid_list
from schemas.positions import mariadb_position, parse_mariadb


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _kept(seconds: str) -> str:
    if seconds in ("", "0"):
        return "kept until purged by hand (binlog_expire_logs_seconds=0)"
    secs = int(seconds)
    return f"kept {secs / 86400:.1f} days" if secs >= 86400 else f"kept {secs / 3600:.1f} hours"


def distance(sizes: list[tuple[str, int]], older: tuple[str, int], newer: tuple[str, int]) -> int | None:
    """Bytes of binlog from ``older`` to ``newer`` (file, offset), given every file and its size in order;
    None when a file is not among them (purged, or a reset binlog)."""
    names = [name for name, _size in sizes]
    if older[0] not in names or newer[0] not in names:
        return None
    i, j = names.index(older[0]), names.index(newer[0])
    if i > j or (i == j and older[1] > newer[1]):
        return 0
    if i == j:
        return newer[1] - older[1]
    between = sum(size for _name, size in sizes[i + 1:j])
    return max(0, sizes[i][1] - older[1]) + between + newer[1]


class _Binlog(NamedTuple):
    sizes: list[tuple[str, int]]  # every binlog file held, oldest first, with its size
    master: list[tuple[Any, ...]]  # SHOW MASTER STATUS
    gtid: str  # @@gtid_binlog_pos
    expire: str  # binlog_expire_logs_seconds
    oldest_gtid: str  # the GTID state where the oldest file starts


class MariaDBProbe(SourceProbe):
    """The primary's binlog (``SHOW MASTER STATUS``, ``SHOW BINARY LOGS``) and its retention."""

    def __init__(self, cfg: ArkConfig) -> None:
        self.cfg = cfg
        self._sizes: list[tuple[str, int]] | None = None

    def _read(self) -> _Binlog:
        conn = catalog.connect(self.cfg.primary)
        try:
            sizes = [(str(r[0]), int(r[1])) for r in catalog.query(conn, "SHOW BINARY LOGS")]
            master = catalog.query(conn, "SHOW MASTER STATUS")
            gtid = str(catalog.query(conn, "SELECT @@gtid_binlog_pos")[0][0] or "")
            expire = catalog.variables(conn, ["binlog_expire_logs_seconds"]).get("binlog_expire_logs_seconds", "")
            oldest = gtid_state_text(oldest_gtid_list(conn, sizes[0][0])) if sizes else ""
        except pymysql.err.Error as exc:
            raise catalog.source_error(self.cfg.primary, exc) from None
        finally:
            conn.close()
        self._sizes = sizes
        return _Binlog(sizes, master, gtid, expire, oldest)

    def source_log(self) -> SourceLog:
        out = SourceLog(node=self.cfg.primary.name, details={"binlog_files": 0})
        try:
            sizes, master, gtid, expire, oldest_gtid = self._read()
        except ArkError as exc:
            out.message = exc.message
            return out
        if not master or not sizes:
            out.message = "the primary writes no binary log (log_bin is off): nothing can be captured"
            return out
        out.current_position = mariadb_position(str(master[0][0]), int(master[0][1]), gtid).text
        out.retained_bytes = sum(size for _name, size in sizes)
        oldest = mariadb_position(sizes[0][0], 4, oldest_gtid).text
        out.details.update(binlog_files=len(sizes), oldest_binlog=oldest, current_position=out.current_position,
                           binlog_bytes=out.retained_bytes, binlog_expire_logs_seconds=expire)
        out.summary = (f"binlog now at {out.current_position}, {len(sizes)} files held from {oldest} "
                       f"({_bytes(out.retained_bytes)}), {_kept(expire)}; MariaDB keeps its binlog by time, "
                       "not for the capture")
        return out

    def bytes_between(self, older: str, newer: str) -> int | None:
        try:
            a = parse_mariadb(older.removeprefix("<"))
            b = parse_mariadb(newer.removeprefix("<"))
        except ValueError:
            return None
        if self._sizes is None:
            try:
                self._read()
            except ArkError:
                return None
        assert self._sizes is not None
        return distance(self._sizes, (a[0], a[1]), (b[0], b[1]))
