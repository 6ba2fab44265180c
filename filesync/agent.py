"""filesync's long-running roles as Ark agents: the sender (``ark files send|watch``) and a target's
receiver (``ark files receive``), supervised by the common skeleton (:mod:`common.agent`).

So a file set's agents publish signed heartbeats like the capture and the appliers (``ark status`` and
the console see them), and a broker or a target that goes away is retried with backoff instead of
ending the process. A missing set or target, or a bad config, stops the agent with its error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from common.agent import AgentBody, Retry
from common.config import ArkConfig
from common.control import ControlChannel, ControlRecord
from common.errors import ConfigError
from filesync.errors import FilesyncError, SourceMissing, UnknownFileSet

log = logging.getLogger(__name__)


class FilesAgent(AgentBody):
    """One role of one file set: ``run(stop)`` is the role's own loop (it returns when ``stop`` is set)."""

    kind = "filesync"

    def __init__(self, cfg: ArkConfig, file_set: str, role: str, run: Callable[[threading.Event], None],
                 target: str = "") -> None:
        super().__init__()
        self.cfg = cfg
        self.role = role
        self.name = f"{file_set}/{target}" if target else file_set
        self._run = run
        self.started = 0.0

    def attach(self, channel: ControlChannel, backlog: list[ControlRecord]) -> None:
        """The role follows its own control records (filesync/delay.py); nothing to take here."""

    def session(self, channel: ControlChannel) -> None:
        self.state, self.message = "running", ""
        self.started = time.monotonic()
        self.beat_now()
        self._run(self.stopping)

    def recover(self, exc: Exception) -> Retry | Exception:
        if isinstance(exc, ConfigError | UnknownFileSet | SourceMissing):
            return exc
        if isinstance(exc, FilesyncError):
            log.warning("file set %s: %s", self.name, exc)
        return Retry.LATER

    def heartbeat(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message,
                "metrics": {"uptime_s": time.monotonic() - self.started if self.started else 0.0}}
