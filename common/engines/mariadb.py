"""MariaDB's settings: the engine-neutral database settings with MariaDB's defaults and its own fields.

Selected by ``engine: mariadb`` on the primary or a standby (see :func:`common.config.parse_config`).
"""

from __future__ import annotations

import zlib
from typing import Literal

from pydantic import Field

from common.config import PrimarySettings, StandbySettings


class MariaDBPrimary(PrimarySettings):
    """A MariaDB primary whose binlog Ark captures.

    ``dbname`` is not used to connect (a MariaDB connection is not bound to one schema); tables are
    named ``schema.table`` in ``tables``. The capture reads the binlog as a replica with its own
    ``replication_server_id``, which must differ from every server's and every other replica's.
    """

    engine: Literal["mariadb"] = "mariadb"
    port: int = Field(default=3306, ge=1, le=65535)
    dbname: str = ""
    user: str = "root"
    tables: tuple[str, ...] = Field(default=(), description="schema.table patterns (fnmatch), e.g. bank.*")
    replication_server_id: int | None = Field(
        default=None, ge=1, le=4294967295,
        description="server id of the capture's binlog connection; default: derived from the group name")
    heartbeat_s: float = Field(default=0.1, gt=0, le=60,
                               description="how often an idle primary sends a heartbeat to the capture")

    def server_id_for(self, group: str) -> int:
        """The capture's replication server id (explicit, or derived from the group: 1e9 + crc32 % 1e9)."""
        if self.replication_server_id is not None:
            return self.replication_server_id
        return 1_000_000_000 + zlib.crc32(group.encode()) % 1_000_000_000

    def describe(self) -> str:
        """Where this database is, for messages (never includes the password)."""
        return f"mariadb {self.name} ({self.user}@{self.host}:{self.port})"


class MariaDBStandby(StandbySettings):
    """A MariaDB standby written by Ark's applier.

    Read-only for others: ``read_only: true`` sets the server's global ``read_only`` (users without
    the READ_ONLY ADMIN / SUPER privilege cannot write); Ark's applier user needs that privilege.
    """

    engine: Literal["mariadb"] = "mariadb"
    port: int = Field(default=3306, ge=1, le=65535)
    dbname: str = ""
    user: str = "root"

    def describe(self) -> str:
        """Where this database is, for messages (never includes the password)."""
        return f"mariadb {self.name} ({self.user}@{self.host}:{self.port})"
