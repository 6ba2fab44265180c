"""Connections to the source and the catalog queries of capture: settings, tables, slot, publication.

Every connection error becomes a one-line :class:`common.errors.SourceError` that names
``user@host:port/dbname`` and the fix, and never the password.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2.extras import LogicalReplicationConnection

from common.config import ArkConfig
from common.engines.postgresql import PostgresPrimary
from common.errors import SourceError
from producers.errors import SourceDown

#: Session settings that make the text of values canonical (see types.py).
SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=3 -c IntervalStyle=postgres"
)


def pg_primary(cfg: ArkConfig) -> PostgresPrimary:
    """The group's primary as PostgreSQL settings (the registry only hands PostgreSQL configs to this engine)."""
    if not isinstance(cfg.primary, PostgresPrimary):
        raise TypeError(f"the PostgreSQL capture got a {cfg.primary.engine} primary")
    return cfg.primary


def slot_of(cfg: ArkConfig) -> str:
    """The replication slot the group's capture reads (one per group)."""
    return pg_primary(cfg).slot_for(cfg.group)


def publication_of(cfg: ArkConfig) -> str:
    """The publication the group's capture reads."""
    return pg_primary(cfg).publication_for(cfg.group)


def _password_source(cfg: ArkConfig) -> str:
    ref = cfg.primary.password
    if ref is None:
        return "no password is configured: set primary.password: {env: NAME} (or {file: PATH})"
    if ref.env is not None:
        return f"check the password source {{env: {ref.env}}}"
    return f"check the password source {{file: {ref.file}}}"


def source_error(cfg: ArkConfig, exc: BaseException, secret: str | None = None) -> SourceError:
    """Translate a driver error into a one-line SourceError with its fix (password scrubbed)."""
    p = cfg.primary
    where = f"{p.user}@{p.host}:{p.port}/{p.dbname}"
    text = " ".join(str(exc).split())
    if secret:
        text = text.replace(secret, "***")
    low = text.lower()
    reason = text.split("FATAL:")[-1].strip() or type(exc).__name__
    if any(s in low for s in _NOT_ACCEPTING):
        state = "starting up" if "starting up" in low or "recovery" in low or "not yet" in low else "shutting down"
        return SourceDown(f"PostgreSQL at {p.host}:{p.port} is {state} ({reason}): capture resumes by itself "
                           "once it accepts connections again",
                           fix=f"nothing to do while PostgreSQL restarts; otherwise start it at {p.host}:{p.port}")
    if "password authentication failed" in low or "no password supplied" in low:
        return SourceError(f"PostgreSQL {where}: password authentication failed", fix=_password_source(cfg))
    if any(s in low for s in ("connection refused", "could not connect", "timeout expired",
                              "could not translate host name", "no route to host", "server closed")):
        return SourceDown(f"cannot reach PostgreSQL at {p.host}:{p.port} (user {p.user}, "
                           f"database {p.dbname})", fix=f"is PostgreSQL running at {p.host}:{p.port}?")
    if "no pg_hba.conf entry" in low:
        return SourceError(f"PostgreSQL {where}: {reason}",
                           fix=f"add a pg_hba.conf line for user {p.user} and database {p.dbname} "
                               "from this host, then SELECT pg_reload_conf()")
    if "superuser or replication role" in low or "permission denied to start" in low:
        return SourceError(f"PostgreSQL {where}: the user may not start replication",
                           fix=f'ALTER ROLE "{p.user}" REPLICATION')
    if "database" in low and "does not exist" in low:
        return SourceError(f"PostgreSQL {where}: {reason}", fix="create the database or correct primary.dbname")
    if "role" in low and "does not exist" in low:
        return SourceError(f"PostgreSQL {where}: {reason}", fix="create the role or correct primary.user")
    return SourceError(f"PostgreSQL {where}: {reason}", fix="see the PostgreSQL server log for details")


#: What PostgreSQL answers a new connection while it stops or starts (SQLSTATE 57P03, cannot_connect_now).
_NOT_ACCEPTING = ("the database system is shutting down", "the database system is starting up",
                  "the database system is in recovery mode", "the database system is not yet accepting")
#: The probe's answer when nothing listens: the postmaster is gone (crashed, or stopped).
_NOBODY_LISTENS = ("connection refused", "no such file or directory")
PROBE_TIMEOUT_S = 2


def going_down(cfg: ArkConfig) -> bool:
    """True when the primary refuses a new connection because it is shutting down, or nothing listens.

    One short connection, closed at once: an open session would hold up a smart shutdown. A timeout (a
    paused server, a cut network) is not "going down". The server's message is matched in English
    (lc_messages C or en*, the default of initdb in those locales): under another language only
    "nothing listens" is recognised.
    """
    kwargs = pg_primary(cfg).connect_kwargs()
    kwargs.update(connect_timeout=PROBE_TIMEOUT_S, application_name="ark-capture-probe")
    try:
        psycopg2.connect(**kwargs).close()
    except psycopg2.Error as exc:
        low = str(exc).lower()
        return "shutting down" in low or any(s in low for s in _NOBODY_LISTENS)
    return False


def connect(cfg: ArkConfig, *, replication: bool = False) -> Any:
    """Open a psycopg2 connection to the primary (autocommit), or a logical replication connection."""
    kwargs = pg_primary(cfg).connect_kwargs()
    kwargs.update(options=SESSION_OPTIONS, client_encoding="UTF8", application_name="ark-capture")
    try:
        if replication:
            return psycopg2.connect(connection_factory=LogicalReplicationConnection, **kwargs)
        conn = psycopg2.connect(**kwargs)
        conn.autocommit = True
        return conn
    except psycopg2.Error as exc:
        raise source_error(cfg, exc, kwargs.get("password")) from None


def query(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` and return all rows."""
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        return list(cur.fetchall()) if cur.description else []


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A user table of the source with what capture needs to know about it."""

    oid: int
    schema: str
    name: str
    persistence: str  # p permanent, u unlogged
    replica_identity: str  # d default, n nothing, f full, i index
    has_pk: bool
    has_unique_not_null: bool
    relkind: str = "r"  # r table, p partitioned table
    has_identity_index: bool = False  # a valid REPLICA IDENTITY USING INDEX index exists

    @property
    def keyless(self) -> bool:
        """True when publishing the table for UPDATE and DELETE would make them fail on the primary: no
        replica identity it can use (no primary key under DEFAULT, NOTHING, or a dropped identity index).
        Only ordinary logged tables count (a partitioned table's partitions are published, not itself)."""
        if self.relkind != "r" or self.persistence != "p":
            return False
        return ((self.replica_identity == "d" and not self.has_pk) or self.replica_identity == "n"
                or (self.replica_identity == "i" and not self.has_identity_index))

    @property
    def qualified(self) -> str:
        """``schema.table`` (unquoted, as in patterns and entries)."""
        return f"{self.schema}.{self.name}"

    @property
    def sql_name(self) -> str:
        """The quoted SQL identifier."""
        return '"{}"."{}"'.format(self.schema.replace('"', '""'), self.name.replace('"', '""'))


_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relpersistence, c.relreplident,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND i.indimmediate),
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indimmediate
                 AND i.indpred IS NULL AND i.indexprs IS NULL
                 AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                 WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)),
       c.relkind,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident AND i.indisvalid),
       CASE WHEN c.relispartition THEN ARRAY(
         SELECT an.nspname || '.' || ac.relname FROM pg_partition_ancestors(c.oid) a
         JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
         WHERE a.relid <> c.oid) ELSE '{}'::text[] END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('information_schema', 'ark_capture') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname, c.relname
"""


def matched_tables(conn: Any, patterns: tuple[str, ...]) -> list[TableInfo]:
    """User tables whose ``schema.table`` matches one of the fnmatch ``patterns``, less the partitions of a
    matching partitioned table (they are part of it: the publication publishes them as their root)."""
    out = []
    for row in query(conn, _TABLES_SQL):
        info = TableInfo(*row[:9])
        if any(fnmatch.fnmatchcase(info.qualified, pat) for pat in patterns) and not any(
                fnmatch.fnmatchcase(a, pat) for a in row[9] or () for pat in patterns):
            out.append(info)
    return out


def schema_patterns(patterns: tuple[str, ...]) -> list[str]:
    """Schemas named by patterns of exactly the form ``schema.*`` (no wildcard in the schema)."""
    out = []
    for pat in patterns:
        schema, sep, rest = pat.rpartition(".")
        if sep and rest == "*" and schema and not any(ch in schema for ch in "*?[]") and schema not in out:
            out.append(schema)
    return out


@dataclass(frozen=True, slots=True)
class SlotState:
    """A row of pg_replication_slots."""

    plugin: str | None
    database: str | None
    confirmed_flush_lsn: str | None
    restart_lsn: str | None
    active: bool
    active_pid: int | None
    wal_status: str | None
    slot_type: str


def slot_state(conn: Any, slot: str) -> SlotState | None:
    """The slot's row, or None when it does not exist."""
    rows = query(conn, "SELECT plugin, database, confirmed_flush_lsn::text, restart_lsn::text, active, "
                       "active_pid, wal_status, slot_type FROM pg_replication_slots WHERE slot_name = %s",
                 (slot,))
    return SlotState(*rows[0]) if rows else None


def settings(conn: Any) -> dict[str, str]:
    """The replication-related server settings."""
    rows = query(conn, "SELECT name, setting FROM pg_settings WHERE name IN "
                       "('wal_level', 'max_replication_slots', 'max_wal_senders', 'server_version_num')")
    return {name: value for name, value in rows}


def role_flags(conn: Any) -> tuple[bool, bool]:
    """(superuser, replication) of the connected user."""
    rows = query(conn, "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")
    return (bool(rows[0][0]), bool(rows[0][1])) if rows else (False, False)


def publication_tables(conn: Any, publication: str) -> set[str] | None:
    """``schema.table`` of every table the publication covers now, or None when it does not exist."""
    if not query(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)):
        return None
    rows = query(conn, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                 (publication,))
    return {f"{s}.{t}" for s, t in rows}


@dataclass(frozen=True, slots=True)
class ColumnDetails:
    """What pgoutput's Relation message lacks: nullability, declared type, the real key, and for DDL:
    each column's attnum, default expression and missing value.

    ``missing`` is PostgreSQL's ``attmissingval`` (canonical text): the value rows that existed
    before a fast ``ADD COLUMN ... DEFAULT`` hold without a row change in the WAL. A volatile default
    rewrites the table instead (per-row values, no missing value).
    """

    not_null: dict[str, bool]
    declared: dict[str, str]
    key: tuple[str, ...]
    attnums: dict[str, int] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def trusted(self, columns: list[str]) -> set[str]:
        """Names of ``columns`` (in the decoded order) whose catalog details apply.

        The catalog is read *now*, while the Relation message being decoded may be older (capture
        lagging, or restarted and re-reading): a column is trusted when the catalog still has it
        under that name (attnums survive type changes). If those columns are not in attnum order, a
        column was dropped and re-added since under its old name: nothing is trusted.
        """
        names = [n for n in columns if n in self.attnums]
        nums = [self.attnums[n] for n in names]
        return set(names) if nums == sorted(nums) else set()


_COLUMN_DETAILS_SQL = """
SELECT a.attnum, a.attname, a.attnotnull, format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
       CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END,
       a.attgenerated <> ''
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def column_details(conn: Any, relid: int) -> ColumnDetails | None:
    """Catalog details of relation ``relid`` now (None when it no longer exists).

    The key is the primary key, else the first unique index on NOT NULL columns, else empty.
    Generated columns (which pgoutput does not send) are left out of ``attnums``.
    """
    cols = query(conn, _COLUMN_DETAILS_SQL, (relid,))
    if not cols:
        return None
    names = {r[0]: r[1] for r in cols}
    not_null = {r[1]: bool(r[2]) for r in cols}
    # Only immediate (non-deferrable) unique indexes: a DEFERRABLE key may hold duplicates until commit, so it
    # cannot find a row inside a transaction (PostgreSQL does not take it as a replica identity either).
    indexes = query(conn, "SELECT indisprimary, indkey::int2[] FROM pg_index WHERE indrelid = %s "
                          "AND indisunique AND indisvalid AND indimmediate AND indpred IS NULL AND indexprs IS NULL "
                          "ORDER BY indisprimary DESC, indexrelid", (relid,))
    key: tuple[str, ...] = ()
    for primary, attnums in indexes:
        cand = tuple(names.get(n, "") for n in attnums)
        if all(cand) and (primary or all(not_null[c] for c in cand)):
            key = cand
            break
    plain = [r for r in cols if not r[6]]
    return ColumnDetails(
        not_null, {r[1]: r[3] for r in cols}, key,
        attnums={r[1]: int(r[0]) for r in plain},
        defaults={r[1]: r[4] for r in plain if r[4] is not None},
        missing={r[1]: r[5] for r in plain if r[5] is not None},
    )
