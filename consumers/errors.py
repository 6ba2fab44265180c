"""Errors of the apply side. Data errors name the source transaction, table, key and position."""

from __future__ import annotations

from common.errors import ArkError, TargetError


class ApplyError(ArkError):
    """Root of apply failures that are not plain connectivity problems."""


class TransientApplyError(ApplyError):
    """Connection lost, deadlock, serialization failure, standby restarting: retry with backoff."""


class DataApplyError(ApplyError):
    """The standby's data disagrees with the stream (missing row, duplicate key, type mismatch).

    Never skipped: the standby stops (policy ``stop``) or the table is resynced.
    """

    exit_code = 9

    def __init__(self, message: str, *, fix: str = "", table: str = "", txn_id: str = "", position: str = "",
                 key: object = None) -> None:
        self.table = table
        self.txn_id = txn_id
        self.position = position
        self.key = key
        super().__init__(message, fix=fix)


class StaleEpochError(ApplyError):
    """An entry from an older epoch than the newest marker seen: it is rejected (fencing)."""


__all__ = ["ApplyError", "DataApplyError", "StaleEpochError", "TargetError", "TransientApplyError"]
