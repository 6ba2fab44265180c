"""Errors of the apply side. Data errors name the source transaction, table, key and position."""

from __future__ import annotations

from common.errors import ArkError, TargetError
from common.exit_codes import ExitCode


class ApplyError(ArkError):
    """Root of apply failures that are not plain connectivity problems."""


class TransientApplyError(ApplyError):
    """Connection lost, deadlock, serialization failure, standby restarting: retry with backoff."""


class DataApplyError(ApplyError):
    """The standby's data disagrees with the stream (missing row, duplicate key, type mismatch).

    Never skipped: the standby stops (policy ``stop``) or the table is resynced.
    """

    exit_code = ExitCode.DATA_ERROR

    def __init__(self, message: str, *, fix: str = "", table: str = "", txn_id: str = "", position: str = "",
                 key: object = None) -> None:
        self.table = table
        self.txn_id = txn_id
        self.position = position
        self.key = key
        super().__init__(message, fix=fix)


class TableNeedsResync(ApplyError):
    """One table can no longer follow the stream (a DDL the applier cannot adapt, a data error under
    the ``resync-table`` policy): that table alone is set aside and resynced; the others go on.

    Raised by an :class:`~consumers.base.Applier` method; the apply runner catches it.
    """

    def __init__(self, table: str, reason: str, *, position: str = "") -> None:
        self.table = table
        self.reason = reason
        self.position = position
        super().__init__(f"table {table} needs a resync: {reason}", fix=f"Ark resyncs {table} by itself; "
                         f"'ark status' shows progress; 'ark resync <standby> --table {table}' forces one")


class SchemaChangeFailed(ApplyError):
    """A DDL of the primary cannot be applied on this standby (an extension that is not installed there, an
    object it lacks): the standby stops before it, with nothing of its transaction applied, and says which
    object, which statement and what to do. Never skipped."""

    exit_code = ExitCode.SCHEMA_CHANGE_FAILED

    def __init__(self, message: str, *, fix: str, table: str = "", position: str = "") -> None:
        self.table = table
        self.position = position
        super().__init__(message, fix=fix)


class ApplierRunning(ApplyError):
    """Another applier holds this standby (one applier per standby): this one exits without writing."""

    exit_code = ExitCode.APPLIER_RUNNING


class StateMoved(ApplyError):
    """The state row is no longer the one this applier read: someone else wrote it (compare-and-set failed).

    Nothing of the open transaction is committed; the runner starts a new session, which reads the state
    again under the standby's lock (or exits with :class:`ApplierRunning` when another applier holds it).
    """

    exit_code = ExitCode.APPLIER_RUNNING


class StaleEpochError(ApplyError):
    """An entry from an older epoch than the newest marker seen: it is rejected (fencing)."""


__all__ = ["ApplierRunning", "ApplyError", "DataApplyError", "SchemaChangeFailed", "StaleEpochError", "StateMoved",
           "TableNeedsResync", "TargetError", "TransientApplyError"]
