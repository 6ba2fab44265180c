"""PostgreSQL's :class:`SourceProbe`: the capture's replication slot and the WAL it holds back."""

from __future__ import annotations

from common.config import ArkConfig
from common.errors import ArkError
from common.probe import SourceLog, SourceProbe
from producers.postgresql import catalog
from producers.postgresql.pgoutput import lsn_from_text

_SLOT_SQL = """
SELECT s.active, s.confirmed_flush_lsn::text, s.restart_lsn::text, s.wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint
FROM pg_replication_slots s WHERE s.slot_name = %s"""


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


class PostgresProbe(SourceProbe):
    """The group's slot on the primary (pg_replication_slots) and the server's current WAL position."""

    def __init__(self, cfg: ArkConfig) -> None:
        self.cfg = cfg

    def source_log(self) -> SourceLog:
        slot = catalog.slot_of(self.cfg)
        out = SourceLog(node=self.cfg.primary.name, details={"slot": slot, "slot_exists": False})
        try:
            conn = catalog.connect(self.cfg)
            try:
                rows = catalog.query(conn, _SLOT_SQL, (slot,))
                out.current_position = str(catalog.query(conn, "SELECT pg_current_wal_lsn()::text")[0][0])
            finally:
                conn.close()
        except ArkError as exc:
            out.message = exc.message
            return out
        if not rows:
            out.message = f"replication slot {slot} does not exist (run 'ark check')"
            return out
        active, flushed, restart, wal_status, lag, retained = rows[0]
        out.retained_bytes = None if retained is None else int(retained)
        out.details.update(slot_exists=True, active=bool(active), confirmed_flush_lsn=flushed, restart_lsn=restart,
                           wal_status=wal_status, current_wal_lsn=out.current_position, lag_bytes=lag,
                           retained_wal_bytes=out.retained_bytes)
        out.summary = (f"slot {slot} {'active' if active else 'inactive'}, confirmed {flushed}, WAL now "
                       f"{out.current_position}, capture lag {_bytes(lag)}, WAL held {_bytes(out.retained_bytes)}"
                       + (f", WAL status {wal_status}" if wal_status not in (None, "reserved") else ""))
        return out

    def bytes_between(self, older: str, newer: str) -> int | None:
        try:
            return max(0, lsn_from_text(newer) - lsn_from_text(older.removeprefix("<")))
        except ValueError:
            return None
