"""The one configuration model of an Ark process: one YAML file per replication group.

The model is frozen and validated when it is loaded; cross-field checks (unique standby names,
retention long enough for the longest delay) fail at start-up, not in the middle of the night.
Secrets are references (``{env: NAME}`` or ``{file: PATH}``) and are resolved only when a
connection is opened; they never appear in logs, process arguments or error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.config_files import FileSetConfig
from common.errors import ConfigError
from common.secrets import SecretRef
from schemas.topics import validate_name

Engine = Literal["postgresql", "mariadb", "oracle", "sqlserver"]

#: Safety margin added to the longest delay when checking redo retention (ARCHITECTURE.md).
RETENTION_MARGIN_HOURS = 24.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    """How to reach the Kafka cluster, and how the group's topics are created."""

    bootstrap: str = "127.0.0.1:9092"
    client: dict[str, str] = Field(default_factory=dict, description="extra librdkafka properties (no secrets)")
    sasl_username: str | None = None
    sasl_password: SecretRef | None = None
    redo_retention_hours: float = Field(default=168.0, gt=0)
    retention_margin_hours: float = Field(default=RETENTION_MARGIN_HOURS, ge=0,
                                          description="retention must exceed the longest delay by this much")
    replication_factor: int = Field(default=1, ge=1)
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "lz4"

    @property
    def redo_retention_ms(self) -> int:
        """The redo topic's retention.ms (the archive of shipped logs)."""
        return int(self.redo_retention_hours * 3_600_000)

    @field_validator("client")
    @classmethod
    def _no_secrets_in_client(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if "password" in key or "secret" in key:
                raise ValueError(f"kafka.client.{key} looks like a secret: use kafka.sasl_password: {{env: NAME}}")
        return value


class DatabaseSettings(_Frozen):
    """Where a database is and how to log in to it."""

    name: str = Field(description="node name, unique in the group")
    engine: Engine = "postgresql"
    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = "postgres"
    user: str = "postgres"
    password: SecretRef | None = None
    connect_timeout_s: int = Field(default=10, ge=1)

    def describe(self) -> str:
        """Where this database is, for messages (never includes the password)."""
        return f"{self.engine} {self.name} ({self.user}@{self.host}:{self.port}/{self.dbname})"

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq-style keyword arguments, the password resolved now (never put these in a log)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "connect_timeout": self.connect_timeout_s,
            "application_name": "ark",
        }
        if self.password is not None:
            kwargs["password"] = self.password.resolve(f"password of {self.name}").get_secret_value()
        return kwargs


class PrimarySettings(DatabaseSettings):
    """The source database and how its log is captured."""

    slot: str | None = Field(default=None, description="replication slot; default ark_<group>")
    publication: str | None = Field(default=None, description="publication; default ark_<group>")
    tables: tuple[str, ...] = Field(default=("public.*",), description="schema.table patterns (fnmatch)")


class CaptureSettings(_Frozen):
    """Batching and chunking of the capture producer."""

    chunk_rows: int = Field(default=5000, ge=1, description="rows per Kafka message of a large transaction")
    batch_max_txns: int = Field(default=500, ge=1, description="source transactions per Kafka transaction")
    batch_max_ms: int = Field(default=100, ge=1, description="longest wait before a Kafka commit")
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    retransmit_window_s: float = Field(
        default=900.0, ge=0, description="confirm to the source only positions older than this, so that a corrupt "
        "entry can be re-read (PostgreSQL keeps that much more WAL); 0 disables retransmission")


class StandbySettings(DatabaseSettings):
    """One standby and how it applies."""

    delay_seconds: float = Field(default=0.0, ge=0, description="apply no earlier than commit + delay")
    on_data_error: Literal["stop", "resync-table"] = "stop"
    batch_max_txns: int = Field(default=1000, ge=1, description="source transactions per target transaction")
    batch_max_rows: int = Field(default=20000, ge=1)
    read_only: bool = Field(default=True, description="make the standby read-only for everyone but the applier")


class ArkConfig(_Frozen):
    """Everything one replication group needs; loaded once per process."""

    group: str
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    primary: PrimarySettings
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    standbys: tuple[StandbySettings, ...] = ()
    files: dict[str, FileSetConfig] = Field(default_factory=dict)
    source_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _engine_models(cls, data: Any) -> Any:
        """Validate the primary and each standby with their engine's own model (``engine:`` selects it)."""
        from common.engines.mariadb import MariaDBPrimary, MariaDBStandby

        if not isinstance(data, dict):
            return data
        data = dict(data)
        primary = data.get("primary")
        if isinstance(primary, dict) and primary.get("engine") == "mariadb":
            data["primary"] = MariaDBPrimary.model_validate(primary)
        standbys = data.get("standbys")
        if isinstance(standbys, (list, tuple)):
            data["standbys"] = [MariaDBStandby.model_validate(s) if isinstance(s, dict) and s.get("engine") == "mariadb"
                                else s for s in standbys]
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
        for standby in self.standbys:
            if standby.engine != self.primary.engine:
                # Cross-engine apply is planned; today a standby must match its primary's engine.
                raise ValueError(
                    f"standby {standby.name} is {standby.engine} but the primary is {self.primary.engine}"
                )
        return self

    @property
    def slot_name(self) -> str:
        """The replication slot the capture reads (one per group)."""
        return self.primary.slot or f"ark_{self.group}".lower().replace("-", "_")

    @property
    def publication_name(self) -> str:
        """The publication the capture reads."""
        return self.primary.publication or f"ark_{self.group}".lower().replace("-", "_")

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


def _format_validation(exc: ValidationError, path: Path) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{loc}: {err['msg']}")
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
