"""MariaDB's settings: defaults, the capture's replica identity on the primary, PyMySQL connection arguments.

Only the settings live here (they are part of the configuration model, which every agent loads); the
capture, snapshot source and probe are in ``producers/mariadb/``, the applier and verifier in
``consumers/mariadb/``. A MariaDB connection is not bound to one schema: tables are named
``schema.table`` (the schema is a MariaDB database), and ``dbname`` is unused.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field

from common.identity import DatabaseIdentity
from common.settings import DatabaseSettings, PrimarySettings, StandbySettings

#: Session settings of every Ark connection to MariaDB: TIMESTAMP values read and written in UTC.
SESSION_TIME_ZONE = "SET time_zone = '+00:00'"


def _pymysql_kwargs(db: DatabaseSettings) -> dict[str, Any]:
    """PyMySQL keyword arguments, the password resolved now (never put these in a log)."""
    kwargs: dict[str, Any] = {"host": db.host, "port": db.port, "user": db.user,
                              "connect_timeout": db.connect_timeout_s, "charset": "utf8mb4", "autocommit": True,
                              "init_command": SESSION_TIME_ZONE}
    password = db.resolved_password()
    if password is not None:
        kwargs["password"] = password
    return kwargs


class MariaDBPrimary(PrimarySettings):
    """A MariaDB primary whose binlog Ark captures.

    The capture reads the binlog as a replica with its own ``replication_server_id``, which must differ
    from every server's and every other replica's.
    """

    engine: Literal["mariadb"]
    port: int = Field(default=3306, ge=1, le=65535)
    dbname: str = ""
    user: str = "root"
    tables: tuple[str, ...] = Field(description="schema.table patterns (fnmatch), e.g. [bank.*]")
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

    def connect_kwargs(self) -> dict[str, Any]:
        """PyMySQL keyword arguments (the password resolved now; never log them)."""
        return _pymysql_kwargs(self)


class MariaDBStandby(StandbySettings):
    """A MariaDB standby written by Ark's applier.

    Read-only for others: ``read_only: true`` sets the server's global ``read_only`` (users without
    the READ_ONLY ADMIN privilege cannot write: since 10.11 SUPER does not include it); Ark's applier user
    needs that privilege.
    """

    engine: Literal["mariadb"]
    port: int = Field(default=3306, ge=1, le=65535)
    dbname: str = ""
    user: str = "root"

    def describe(self) -> str:
        """Where this database is, for messages (never includes the password)."""
        return f"mariadb {self.name} ({self.user}@{self.host}:{self.port})"

    def connect_kwargs(self) -> dict[str, Any]:
        """PyMySQL keyword arguments (the password resolved now; never log them)."""
        return _pymysql_kwargs(self)


@runtime_checkable
class SessionSnapshot(Protocol):
    """What a MariaDB snapshot offers the MariaDB verifier (the handshake between ``producers/mariadb`` and
    ``consumers/mariadb``, which may not import each other).

    MariaDB cannot share a consistent snapshot between sessions (there is no exported snapshot as in
    PostgreSQL): the only session inside it is the one that opened it. So the verifier takes that
    session over, and from then on closing the snapshot leaves it open; the verifier closes it.
    """

    def take_session(self) -> Any:
        """The snapshot's own connection (a PyMySQL connection inside the snapshot's transaction, returning
        every value as text), now owned by the caller. Raises RuntimeError when it was taken already."""


#: One row: host name, data directory, server id, and when the server's system tables were created (its
#: installation). MariaDB has no server UUID: these together tell servers apart, whatever address reaches them,
#: and a server reinstalled or restored from a file backup behind the same address gets a new creation time.
IDENTITY_SQL = """
SELECT @@hostname, @@datadir, @@server_id,
       COALESCE((SELECT DATE_FORMAT(CREATE_TIME, '%Y%m%dT%H%i%S') FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'innodb_table_stats'), '')
"""

#: The "database" of a MariaDB identity: Ark replicates a MariaDB server's schemas (``schema.table``) as one
#: database, so a second standby in another schema of the same server cannot exist.
SERVER_DATABASE = "server"


def identity_from_row(row: Any) -> DatabaseIdentity:
    """The identity of a row of :data:`IDENTITY_SQL`."""
    host, datadir, server_id, installed = (str(v.decode() if isinstance(v, bytes) else v) for v in row)
    server = f"{host}:{datadir.rstrip('/')}#{server_id}@{installed}"
    return DatabaseIdentity("mariadb", server, SERVER_DATABASE,
                            f"MariaDB server {host} (datadir {datadir.rstrip('/')}, server id {server_id}, "
                            f"installed {installed or 'unknown'})")
