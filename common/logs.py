"""Logging set-up shared by every agent: one line per event, UTC timestamps, no secrets."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str | None = None, *, agent: str = "ark") -> None:
    """Configure the root logger once. ``ARK_LOG_LEVEL`` overrides the default INFO."""
    chosen = (level or os.environ.get("ARK_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {agent}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    # librdkafka and psycopg are chatty at DEBUG; keep them at WARNING unless asked.
    for noisy in ("confluent_kafka", "psycopg", "apscheduler", "watchdog"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
