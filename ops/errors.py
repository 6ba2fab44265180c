"""Errors of the operator tools."""

from __future__ import annotations

from common.errors import ArkError
from common.exit_codes import ExitCode


class OpsError(ArkError):
    """Root of errors raised by the CLI and the console themselves."""


class DelayTooLong(OpsError):
    """``ark delay``: the redo topic's retention cannot hold the delay (``--force`` overrides)."""

    exit_code = ExitCode.CONFIG


class CheckFailed(OpsError):
    """``ark check`` found problems that must be fixed before replication is safe."""

    exit_code = ExitCode.CHECK_FAILED
