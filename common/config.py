"""The one configuration model of an Ark process: one YAML file per replication group.

The model is frozen and validated when it is loaded; cross-field checks (unique standby names,
retention long enough for the longest delay) fail at start-up, not in the middle of the night.
Secrets are references (``{env: NAME}`` or ``{file: PATH}``) and are resolved only when a
connection is opened; they never appear in logs, process arguments or error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from common import engines
from common.automation_settings import AlertSettings, ControllerSettings, lease_problems
from common.config_files import FileSetConfig
from common.errors import ConfigError
from common.secrets import SecretRef
from common.service_address import ServiceAddressSettings
from common.settings import (
    CaptureSettings,
    DatabaseSettings,
    Frozen,
    KafkaSettings,
    PrimarySettings,
    StandbySettings,
)
from schemas.topics import validate_name

#: The shortest control key accepted (``ark keygen`` writes 64 hex characters: 256 bits).
MIN_CONTROL_KEY_CHARS = 32

__all__ = ["ArkConfig", "CaptureSettings", "DatabaseSettings", "KafkaSettings", "PrimarySettings",
           "StandbySettings", "load_config", "parse_config"]


def _engine_model(role: str, where: str, data: Any) -> Any:
    """Validate one database block with its engine's model (chosen by its ``engine:`` key)."""
    if not isinstance(data, dict):
        return data  # an already-built model, or a type error pydantic reports
    name = data.get("engine")
    if name is None:
        raise ValueError(f"{where}.engine is missing: say which database this is (one of {', '.join(engines.names())})")
    try:
        spec = engines.engine(str(name))
    except ConfigError as exc:
        raise ValueError(f"{where}.engine: {exc.message} ({exc.fix})") from None
    model = spec.primary if role == "primary" else spec.standby
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{where}." + ".".join(str(p) for p in e["loc"]) + f": {e['msg']}"
                             for e in exc.errors())
        raise ValueError(problems) from None


class ArkConfig(Frozen):
    """Everything one replication group needs; loaded once per process."""

    group: str
    #: The group's control key: every control record and heartbeat is signed with it (HMAC-SHA256), and
    #: agents refuse what is not. A secret like a password: ``{env: NAME}`` or ``{file: PATH}``.
    control_key: SecretRef
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    primary: PrimarySettings
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    standbys: tuple[StandbySettings, ...] = ()
    files: dict[str, FileSetConfig] = Field(default_factory=dict)
    #: The address clients use, moved with the primary role by the node agents (common/service_address.py).
    service_address: ServiceAddressSettings | None = None
    #: ``ark controller``'s ttl and anti-flapping window (automatic failover).
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    #: The command the active controller runs once per event of the configured kinds (failover/alerts.py).
    alerts: AlertSettings | None = None
    source_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _engine_models(cls, data: Any) -> Any:
        """Each database block becomes its engine's model (PostgreSQL's, MariaDB's...)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "primary" in data:
            data["primary"] = _engine_model("primary", "primary", data["primary"])
        if isinstance(data.get("standbys"), list | tuple):
            data["standbys"] = [_engine_model("standby", f"standbys.{i}", s) for i, s in enumerate(data["standbys"])]
        return data

    @field_validator("group")
    @classmethod
    def _group_name(cls, value: str) -> str:
        return validate_name("group", value)

    @model_validator(mode="after")
    def _cross_checks(self) -> ArkConfig:
        names = [self.primary.name] + [s.name for s in self.standbys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"node names must be unique in the group; repeated: {', '.join(dupes)}")
        # A standby may be of another engine than its primary (cross-engine apply: README "Cross-engine apply").
        problems = lease_problems([self.primary, *self.standbys], self.controller.ttl_s)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def control_key_bytes(self) -> bytes:
        """The control key, read now from its source (ConfigError when missing or too short; never log it)."""
        text = self.control_key.resolve("control_key").get_secret_value().strip()
        if len(text) < MIN_CONTROL_KEY_CHARS:
            raise ConfigError(f"control_key is {len(text)} characters long; it must have at least "
                              f"{MIN_CONTROL_KEY_CHARS}", fix="generate one with 'ark keygen FILE' and point "
                              "control_key: {file: FILE} at it (the same key on every node of the group)")
        return text.encode()

    @property
    def max_delay_seconds(self) -> float:
        """The longest configured apply delay of any standby."""
        return max((s.delay_seconds for s in self.standbys), default=0.0)

    def retention_warning(self, retention_hours: float | None = None) -> str | None:
        """A warning sentence when redo retention is shorter than the longest delay plus the margin."""
        hours = self.kafka.redo_retention_hours if retention_hours is None else retention_hours
        margin = self.kafka.retention_margin_hours
        needed = self.max_delay_seconds / 3600 + margin
        if hours < needed:
            return (
                f"redo retention is {hours:g} h but the longest delay plus a {margin:g} h margin "
                f"needs {needed:g} h: raise kafka.redo_retention_hours (or the topic's retention.ms)"
            )
        return None

    def standby(self, name: str) -> StandbySettings:
        """The standby called ``name``; ConfigError listing the known names otherwise."""
        for standby in self.standbys:
            if standby.name == name:
                return standby
        known = ", ".join(s.name for s in self.standbys) or "(none)"
        raise ConfigError(f"no standby named {name!r} in group {self.group}", fix=f"use one of: {known}")


#: Better words for some pydantic errors, by location.
_MISSING = {
    "control_key": "missing: every control record and heartbeat of the group is signed with it. Make one with "
                   "'ark keygen /etc/ark/GROUP.control-key' and add control_key: {file: /etc/ark/GROUP.control-key} "
                   "(the same key on every node)",
}


def _format_validation(exc: ValidationError, path: Path) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing" and loc in _MISSING:
            msg = _MISSING[loc]
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"{path}: " + "; ".join(lines)


def parse_config(data: Any, path: Path = Path("<config>")) -> ArkConfig:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level", fix="start from 'ark init'")
    try:
        return ArkConfig.model_validate({**data, "source_path": path})
    except ValidationError as exc:
        raise ConfigError(
            _format_validation(exc, path), fix="correct those keys; 'ark init' writes a commented example"
        ) from None


def load_config(path: Path | str) -> ArkConfig:
    """Load and validate one group's YAML file. Raises ConfigError with the key and the fix."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist", fix="run 'ark init' to write an example, or pass -c PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", fix="check the path and permissions"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path} is not valid YAML{where}", fix="fix the syntax there (indentation, quotes, colons)"
        ) from None
    return parse_config(data, path)
