"""The group's control key: a random secret, written readable by its owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from common.errors import ConfigError


def write_key(path: Path) -> None:
    """Write a new 256-bit key as 64 hex characters to ``path``, mode 0600 from the first byte."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write the control key to {path}: {exc.strerror}",
                          fix="choose a directory Ark's user may write to") from None
