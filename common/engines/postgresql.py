"""PostgreSQL's settings: defaults, the slot and publication of a primary, libpq connection arguments.

Only the settings live here (they are part of the configuration model, which every agent loads); the
capture and snapshot source are in ``producers/postgresql/``, the applier in ``consumers/postgresql/``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from common.identity import DatabaseIdentity
from common.settings import DatabaseSettings, PrimarySettings, StandbySettings


def _libpq_kwargs(db: DatabaseSettings) -> dict[str, Any]:
    """libpq-style keyword arguments, the password resolved now (never put these in a log)."""
    kwargs: dict[str, Any] = {"host": db.host, "port": db.port, "dbname": db.dbname, "user": db.user,
                              "connect_timeout": db.connect_timeout_s, "application_name": "ark"}
    password = db.resolved_password()
    if password is not None:
        kwargs["password"] = password
    return kwargs


def _default_name(prefix: str, group: str) -> str:
    """``ark_<group>``, lower case, as a PostgreSQL identifier (slot names allow [a-z0-9_] only)."""
    return f"{prefix}_{group}".lower().replace("-", "_")


class PostgresPrimary(PrimarySettings):
    """A PostgreSQL primary, read through logical decoding (pgoutput)."""

    engine: Literal["postgresql"]
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = "postgres"
    user: str = "postgres"
    tables: tuple[str, ...] = Field(default=("public.*",), description="schema.table patterns (fnmatch)")
    slot: str | None = Field(default=None, description="replication slot; default ark_<group>")
    publication: str | None = Field(default=None, description="publication; default ark_<group>")
    keyless: Literal["full", "insert-only", "skip"] = Field(
        default="full", description="tables without a usable key (no primary key, no replica identity index): "
        "'full' sets REPLICA IDENTITY FULL (every change replicated; the standby matches whole rows), "
        "'insert-only' publishes their INSERTs and TRUNCATEs only (a second publication, <publication>_inserts), "
        "'skip' leaves them out. The primary's UPDATE and DELETE never fail either way")

    def slot_for(self, group: str) -> str:
        """The replication slot the capture of ``group`` reads (one per group)."""
        return self.slot or _default_name("ark", group)

    def publication_for(self, group: str) -> str:
        """The publication the capture of ``group`` reads."""
        return self.publication or _default_name("ark", group)

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq keyword arguments (the password resolved now; never log them)."""
        return _libpq_kwargs(self)


class PostgresStandby(StandbySettings):
    """A PostgreSQL standby, written by the applier with psycopg 3."""

    engine: Literal["postgresql"]
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = "postgres"
    user: str = "postgres"

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq keyword arguments (the password resolved now; never log them)."""
        return _libpq_kwargs(self)


#: The native bulk format of a PostgreSQL snapshot (``TableRows.native_format``): COPY text, written by a
#: session with the capture's settings (ISO dates, UTC, hex bytea). A PostgreSQL standby loads it as it is.
PG_COPY_TEXT = "postgresql-copy-text"


#: One row: the cluster's system identifier, the database's oid and name, the cluster's name (may be empty).
#: pg_control_system() needs superuser or pg_monitor (PostgreSQL 15 grants it to pg_monitor).
IDENTITY_SQL = """
SELECT (SELECT system_identifier::text FROM pg_control_system()), d.oid::text, d.datname,
       coalesce(current_setting('cluster_name', true), '')
FROM pg_database d WHERE d.datname = current_database()
"""


def identity_from_row(row: tuple[Any, ...]) -> DatabaseIdentity:
    """The identity of a row of :data:`IDENTITY_SQL`."""
    system, oid, name, cluster = (str(v) for v in row)
    where = f"cluster {system}" + (f" ({cluster})" if cluster else "")
    return DatabaseIdentity("postgresql", system, oid, f"PostgreSQL {where}, database {name} (oid {oid})")
