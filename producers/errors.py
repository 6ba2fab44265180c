"""Errors of the capture side."""

from __future__ import annotations

from common.errors import ArkError, SourceError
from common.exit_codes import ExitCode


class CaptureError(ArkError):
    """Root of capture failures that are not plain source connectivity problems."""


class SlotGapError(CaptureError):
    """The source can no longer give us what Kafka does not yet hold (slot recreated, log purged).

    Capture refuses to continue: resuming would silently lose transactions.
    """

    exit_code = ExitCode.SOURCE_LOG_LOST


class EntryTooLarge(CaptureError):
    """An entry would exceed the redo log's message limit even after cutting its values into parts (the
    limit is smaller than an entry's fixed cost, or an old key of a table without a unique key is huge)."""

    exit_code = ExitCode.ENTRY_TOO_LARGE


class SourceDown(SourceError):
    """The source database is stopping, restarting or not listening (a DBA's restart, a crash): the
    capture tries again within seconds (``Retry.SOON``), so it resumes as soon as the source is back."""


class UnsupportedChange(CaptureError):
    """The log holds a change the adapter cannot express as an entry."""


__all__ = ["CaptureError", "EntryTooLarge", "SlotGapError", "SourceDown", "SourceError", "UnsupportedChange"]
