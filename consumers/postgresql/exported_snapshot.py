"""An exported snapshot of the primary for online initial sync, with the LSN it corresponds to.

A temporary logical replication slot created with ``EXPORT_SNAPSHOT`` gives both at once: the
snapshot sees exactly the transactions that committed before the slot's ``consistent_point``, and
every later transaction commits after it. The snapshot stays importable while the replication
connection stays open and idle, so this object must outlive the copy.
"""

from __future__ import annotations

import logging
import uuid
from types import TracebackType

import psycopg2
import psycopg2.extras

from common.config import PrimarySettings
from common.errors import SourceError
from schemas.entries import Position
from schemas.positions import pg_lsn

log = logging.getLogger(__name__)


class ExportedSnapshot:
    """Context manager: ``with ExportedSnapshot(primary) as snap: copy using snap.name``."""

    def __init__(self, primary: PrimarySettings) -> None:
        self._primary = primary
        self._conn: psycopg2.extensions.connection | None = None
        self.slot = f"ark_sync_{uuid.uuid4().hex[:12]}"
        self.name = ""
        self.position: Position | None = None

    def __enter__(self) -> ExportedSnapshot:
        try:
            self._conn = psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                          **self._primary.connect_kwargs())
        except psycopg2.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"cannot open a replication connection to {self._primary.describe()}: {first}",
                              fix="check that the primary runs, the password source, and that the user has "
                                  "REPLICATION and a pg_hba.conf entry allowing replication") from None
        cur = self._conn.cursor()
        cur.execute(f"CREATE_REPLICATION_SLOT {self.slot} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT")
        row = cur.fetchone()
        if row is None:
            raise SourceError("the primary returned no snapshot for CREATE_REPLICATION_SLOT", fix="check the primary")
        _slot, consistent_point, snapshot_name, _plugin = row
        self.name = snapshot_name
        self.position = pg_lsn(consistent_point)
        log.info("exported snapshot %s at %s", self.name, self.position.text)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._conn is not None:
            self._conn.close()  # a temporary slot disappears with its connection
            self._conn = None
