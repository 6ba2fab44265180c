"""Classification of PostgreSQL errors on the standby, in one place.

* :class:`~consumers.errors.TransientApplyError` — the connection was lost, the server is shutting down
  or starting, a deadlock, a serialization failure, a lock timeout, a cancelled statement, too many
  connections: retry with backoff.
* :class:`~consumers.errors.DataApplyError` — the standby's data or shape disagrees with the stream
  (duplicate key, NOT NULL/foreign key/check violations, a value that does not parse or fit, a missing
  table or column): never retried, never skipped; it names table, key, transaction and position.
* :class:`~common.errors.TargetError` — the standby refuses us (cannot connect, wrong password,
  missing database, privileges, a read-only server): the operator must act.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pge

from common.errors import ArkError, TargetError
from common.settings import StandbySettings
from consumers.errors import DataApplyError, TransientApplyError

_TRANSIENT = (
    pge.AdminShutdown, pge.CrashShutdown, pge.CannotConnectNow, pge.SerializationFailure,
    pge.DeadlockDetected, pge.LockNotAvailable, pge.QueryCanceled, pge.TooManyConnections,
    pge.IdleInTransactionSessionTimeout, pge.ConnectionException,
)
_DATA = (
    pge.UniqueViolation, pge.NotNullViolation, pge.ForeignKeyViolation, pge.CheckViolation,
    pge.ExclusionViolation, pge.InvalidTextRepresentation, pge.NumericValueOutOfRange,
    pge.StringDataRightTruncation, pge.DatatypeMismatch, pge.UndefinedTable, pge.UndefinedColumn,
    pge.InvalidDatetimeFormat, pge.DatetimeFieldOverflow, pge.CharacterNotInRepertoire,
    pge.UntranslatableCharacter, pge.InvalidBinaryRepresentation, pge.CannotCoerce,
)
_TARGET = (pge.InsufficientPrivilege, pge.ReadOnlySqlTransaction, pge.DiskFull, pge.InvalidAuthorizationSpecification,
           pge.InvalidCatalogName)

_FIXES: list[tuple[type[Exception], str]] = [
    (pge.UniqueViolation, "the row already exists on the standby: it diverged from the primary; resync the "
     "table (ark resync --table) or check that nothing else writes to the standby"),
    (pge.NotNullViolation, "the standby's table is stricter than the primary's; resync the table"),
    (pge.ForeignKeyViolation, "drop the foreign keys on the standby (the primary enforces them) or resync"),
    (pge.CheckViolation, "the standby's check constraint disagrees with the primary's; align or drop it"),
    (pge.UndefinedTable, "the table is missing on the standby; resync it (ark resync --table)"),
    (pge.UndefinedColumn, "the standby's table shape differs from the primary's; resync the table"),
    (pge.DataError, "a value does not fit the standby's column type; align the column type with the "
     "primary's (ALTER TABLE ... TYPE) or resync the table"),
    (pge.DatatypeMismatch, "the standby's column type differs from the primary's; resync the table"),
]


def _sqlstate_line(exc: psycopg.Error) -> str:
    diag = exc.diag
    lines = str(exc).strip().splitlines()
    text = diag.message_primary or (lines[0] if lines else type(exc).__name__)
    detail = diag.message_detail
    return f"{text} ({detail})" if detail else text


def _table_of(exc: psycopg.Error, default: str) -> str:
    diag = exc.diag
    if diag.table_name:
        return f"{diag.schema_name}.{diag.table_name}" if diag.schema_name else diag.table_name
    return default


def is_connection_lost(exc: BaseException, conn: psycopg.Connection[object] | None) -> bool:
    """True when ``exc`` means the session is gone (the connection must be reopened)."""
    if conn is not None and conn.closed:
        return True
    return isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) in (None, "57P01",
                                                                                          "57P02", "57P03")


def classify(exc: psycopg.Error, *, what: str, table: str = "", txn_id: str = "", position: str = "",
             key: object = None) -> ArkError:
    """The Ark error for a psycopg error raised while applying (the caller rolls back first)."""
    line = _sqlstate_line(exc)
    if isinstance(exc, _TARGET):
        return TargetError(f"the standby refused {what}: {line}",
                           fix="give Ark's standby user ownership of the replicated tables and schema ark, "
                               "and make sure the standby is a writable primary server (not in recovery)")
    if isinstance(exc, _TRANSIENT) or (isinstance(exc, psycopg.OperationalError) and not isinstance(exc, _DATA)):
        return TransientApplyError(f"transient failure during {what}: {line}",
                                   fix="none needed: Ark retries with backoff")
    if isinstance(exc, (*_DATA, pge.IntegrityError, pge.DataError, pge.ProgrammingError)):
        fix = next((f for cls, f in _FIXES if isinstance(exc, cls)), "resync the table (ark resync --table)")
        tbl = _table_of(exc, table)
        key_text = f", key {key!r}" if key is not None else ""
        return DataApplyError(f"{what} failed on {tbl or '?'}{key_text}, source transaction {txn_id or '?'} "
                              f"at {position or '?'}: {line}", fix=fix, table=tbl, txn_id=txn_id,
                              position=position, key=key)
    return TargetError(f"the standby failed during {what}: {line}",
                       fix="look at the standby's server log for this error")


_PW_RE = re.compile(r"password=\S+", re.IGNORECASE)


def connect_error(exc: psycopg.Error, settings: StandbySettings, *, ever_connected: bool) -> ArkError:
    """The error for a failed connect: a one-line TargetError naming host, port and user (no secret).

    An unreachable or restarting server after we were connected once is transient (the runner
    retries); bad credentials or a missing database never are.
    """
    raw = str(exc).strip()
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    reason = _PW_RE.sub("password=***", lines[-1] if lines else type(exc).__name__)
    reason = re.sub(r"^(connection failed: )?(connection to server at [^:]+ failed: )?", "", reason)
    reason = reason.removeprefix("FATAL:").strip()
    where = f"{settings.user}@{settings.host}:{settings.port}/{settings.dbname}"
    low = raw.lower()
    if "password" in low or "authentication" in low:
        fix = (f"check the password of user {settings.user} (the secret named in standby {settings.name}'s "
               "'password:' setting) and pg_hba.conf")
    elif "does not exist" in low:
        fix = f"create the database/user on the standby, or correct dbname/user of standby {settings.name}"
    else:
        fix = (f"start the standby database, or correct host/port of standby {settings.name}; "
               "check listen_addresses and firewalls")
        if ever_connected:
            return TransientApplyError(f"cannot reach standby {settings.name} ({where}): {reason}",
                                       fix="none needed: Ark retries with backoff")
    return TargetError(f"cannot connect to standby {settings.name} ({where}): {reason}", fix=fix)
