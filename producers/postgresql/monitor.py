"""PostgreSQL's :class:`~common.monitor.DatabaseMonitor`: sessions, long transactions, lock waits, slots.

One short connection per sample (``application_name`` ark-monitor), closed at once: Ark never keeps an
idle session on a database, so a smart shutdown is never held up by monitoring. Everything read is
catalog statistics; no table is read and no value leaves the server.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import psutil
import psycopg

from common.config import ArkConfig
from common.monitor import LONG_TXN_S, DatabaseMonitor, DbSample, is_local
from common.settings import DatabaseSettings

_ACTIVITY_SQL = """
SELECT count(*) FILTER (WHERE backend_type = 'client backend'),
       count(*) FILTER (WHERE backend_type = 'client backend' AND state NOT IN ('idle')),
       count(*) FILTER (WHERE backend_type = 'client backend' AND xact_start < now() - make_interval(secs => %s)),
       coalesce(extract(epoch FROM now() - min(xact_start) FILTER (WHERE backend_type = 'client backend'
                                                                   AND pid <> pg_backend_pid())), 0)::float8,
       count(*) FILTER (WHERE wait_event_type = 'Lock'),
       current_setting('max_connections')::int,
       pg_backend_pid()
FROM pg_stat_activity"""

_SLOTS_SQL = """
SELECT slot_name,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
                       restart_lsn)::bigint
FROM pg_replication_slots"""


class PostgresMonitor(DatabaseMonitor):
    """Samples one PostgreSQL database (the primary for the capture, a standby for its applier)."""

    def __init__(self, cfg: ArkConfig, db: DatabaseSettings) -> None:
        self.db = db
        slot_for = getattr(db, "slot_for", None)
        self.slot = slot_for(cfg.group) if callable(slot_for) else None
        self.local = is_local(db.host)

    def _connect(self) -> Any:
        kwargs: dict[str, Any] = dict(self.db.connect_kwargs())  # type: ignore[attr-defined]
        kwargs.update(application_name="ark-monitor", connect_timeout=min(5, self.db.connect_timeout_s))
        return psycopg.connect(**kwargs, autocommit=True)

    def sample(self) -> DbSample:
        out = DbSample(metrics={"db.up": 0.0})
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            out.message = f"{self.db.name}: database unreachable ({_first_line(exc)})"
            return out
        try:
            sessions, active, long_txns, oldest, lock_waits, max_conn, backend = conn.execute(
                _ACTIVITY_SQL, (LONG_TXN_S,)).fetchone()
            out.metrics.update({"db.up": 1.0, "db.sessions": float(sessions), "db.active_sessions": float(active),
                                "db.long_txns": float(long_txns), "db.oldest_txn_s": float(oldest),
                                "db.lock_waits": float(lock_waits), "db.max_connections": float(max_conn)})
            slots = {name: retained for name, retained in conn.execute(_SLOTS_SQL).fetchall()}
            out.metrics["db.slots"] = float(len(slots))
            retained = slots.get(self.slot) if self.slot else max((r for r in slots.values() if r is not None),
                                                                  default=None)
            if retained is not None:
                out.metrics["db.slot_retained_bytes"] = float(retained)
            if self.local:
                self._local_facts(conn, int(backend), out)
        except psycopg.Error as exc:
            out.message = f"{self.db.name}: {_first_line(exc)}"
        finally:
            conn.close()
        return out

    def _local_facts(self, conn: Any, backend: int, out: DbSample) -> None:
        """The server's process, data directory and log file, when the server runs on this host."""
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(backend).parent()
            if parent is not None and "postgres" in parent.name():
                out.server_pid = parent.pid
        if out.server_pid is None:
            return  # the address is local but this backend is not ours to see (a container, another namespace)
        with contextlib.suppress(psycopg.Error):
            out.data_dir = conn.execute("SELECT current_setting('data_directory', true)").fetchone()[0]
        with contextlib.suppress(psycopg.Error):  # superuser or an explicit grant only
            current = conn.execute("SELECT pg_current_logfile()").fetchone()[0]
            if current:
                out.log_file = current if current.startswith("/") else os.path.join(out.data_dir or "", current)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
