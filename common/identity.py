"""Which database a connection really reaches, whatever address led to it.

Host strings cannot tell databases apart: ``localhost``, ``127.0.0.1``, a DNS alias and a service IP can
all name the same server. Each engine reports a :class:`DatabaseIdentity` instead (PostgreSQL: the
cluster's ``system_identifier`` and the database's oid; MariaDB: the server's identity and the schema).
Two settings blocks name the same database exactly when their identities are equal; the same server
with another database (a "loopback" standby) is a different database.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatabaseIdentity:
    """A database's identity: its engine, its server (cluster), and the database within that server."""

    engine: str
    server: str
    database: str
    #: For people: what the identity is made of ("cluster 7312... database bank (oid 16384)").
    label: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        """The identity as one string (what is recorded on the control topic and in state rows)."""
        return f"{self.engine}:{self.server}:{self.database}"

    @classmethod
    def parse(cls, key: str, label: str = "") -> DatabaseIdentity | None:
        """The identity of a recorded ``key`` (None for an empty or malformed one)."""
        engine, sep, rest = key.partition(":")
        server, sep2, database = rest.rpartition(":")
        if not (sep and sep2 and engine and server and database):
            return None
        return cls(engine, server, database, label)

    def same_server(self, other: DatabaseIdentity) -> bool:
        """True when both databases live in the same server (cluster)."""
        return self.engine == other.engine and self.server == other.server

    def __str__(self) -> str:
        return self.label or self.key
