"""Secrets: read from the environment or a file, never logged, never put on a command line."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from common.errors import ConfigError


class SecretRef(BaseModel):
    """Where a secret comes from: ``env: NAME`` or ``file: /path``. Never the secret itself in YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def resolve(self, what: str) -> SecretStr:
        """Read the secret now. Raises ConfigError naming the variable or file, never the value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(
                    f"{what}: environment variable {self.env} is not set",
                    fix=f"export {self.env}=... before starting Ark, or use 'file:' instead",
                )
            return SecretStr(value)
        assert self.file is not None
        try:
            return SecretStr(self.file.read_text().rstrip("\n"))
        except OSError as exc:
            raise ConfigError(
                f"{what}: cannot read secret file {self.file}: {exc.strerror}",
                fix="check the path and that this user may read it (chmod 600, owned by the Ark user)",
            ) from None
