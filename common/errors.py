"""The root of Ark's runtime errors. A user error carries its fix; the CLI prints it without a traceback."""

from __future__ import annotations

from common.exit_codes import ExitCode


class ArkError(Exception):
    """Root of every error Ark raises on purpose.

    ``fix`` tells the operator what to do. The CLI prints ``<message>`` and ``fix: <fix>`` on one
    or two lines and exits non-zero; it never shows a traceback for an ArkError.
    """

    exit_code = ExitCode.ERROR

    def __init__(self, message: str, *, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} (fix: {fix})")


class ConfigError(ArkError):
    """The configuration file is missing, malformed or inconsistent."""

    exit_code = ExitCode.CONFIG


class KafkaUnavailable(ArkError):
    """The Kafka cluster cannot be reached, or refused an operation."""

    exit_code = ExitCode.KAFKA


class SourceError(ArkError):
    """The source (primary) database is unreachable, misconfigured, or refused us."""

    exit_code = ExitCode.SOURCE


class TargetError(ArkError):
    """A standby database is unreachable, misconfigured, or refused us."""

    exit_code = ExitCode.TARGET


class PrerequisiteError(ArkError):
    """A prerequisite of the source or a standby is not met (wal_level, keys, logging)."""

    exit_code = ExitCode.PREREQUISITE


class FencedError(ArkError):
    """This process was fenced: a newer producer or epoch owns the group now."""

    exit_code = ExitCode.FENCED


class NotPrimary(ArkError):
    """A capture (or a primary-only action) was started on a node that is not the primary of the current epoch."""

    exit_code = ExitCode.NOT_PRIMARY


class HandoverRefused(ArkError):
    """A switchover or failover was refused before anything changed."""

    exit_code = ExitCode.HANDOVER_REFUSED


class HandoverFailed(ArkError):
    """A switchover or failover stopped part-way (the message names the step and how to complete it)."""

    exit_code = ExitCode.HANDOVER_FAILED
