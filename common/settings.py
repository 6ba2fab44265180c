"""Engine-neutral settings: Kafka, the capture's batching, and the bases of every database's settings.

Each engine extends :class:`PrimarySettings` and :class:`StandbySettings` with its own model in
``common/engines/<engine>.py`` (its defaults, such as the port, and its own fields, such as a
PostgreSQL slot); :mod:`common.config` picks the model by the ``engine:`` key. Nothing here knows an
engine: no port, user or database defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.secrets import SecretRef

#: Safety margin added to the longest delay when checking redo retention (ARCHITECTURE.md).
RETENTION_MARGIN_HOURS = 24.0


class Frozen(BaseModel):
    """A validated, immutable settings block that refuses unknown keys (a typo fails at load time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Frozen):
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


class DatabaseSettings(Frozen):
    """Where a database is and how to log in to it. Engines subclass it with their defaults."""

    name: str = Field(description="node name, unique in the group")
    engine: str
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    dbname: str
    user: str
    password: SecretRef | None = None
    connect_timeout_s: int = Field(default=10, ge=1)
    server_log: str | None = Field(default=None, description="the database server's log file on this host: its "
                                   "PANIC/FATAL/ERROR lines are counted and shown (the console, ark report, /metrics); "
                                   "default: what the server says when it runs here (PostgreSQL: pg_current_logfile())")

    def describe(self) -> str:
        """Where this database is, for messages (never includes the password)."""
        return f"{self.engine} {self.name} ({self.user}@{self.host}:{self.port}/{self.dbname})"

    def resolved_password(self) -> str | None:
        """The password, read now from its source (never log it)."""
        if self.password is None:
            return None
        return self.password.resolve(f"password of {self.name}").get_secret_value()


class PrimarySettings(DatabaseSettings):
    """The source database: which tables are replicated. Engines add how their log is read."""

    tables: tuple[str, ...] = Field(description="schema.table patterns (fnmatch)")


class StandbySettings(DatabaseSettings):
    """One standby and how it applies."""

    delay_seconds: float = Field(default=0.0, ge=0, description="apply no earlier than commit + delay")
    on_data_error: Literal["stop", "resync-table"] = "stop"
    batch_max_txns: int = Field(default=1000, ge=1, description="source transactions per target transaction")
    batch_max_rows: int = Field(default=20000, ge=1)
    read_only: bool = Field(default=True, description="make the standby read-only for everyone but the applier")
    follow_drop: bool = Field(default=False, description="follow DROP TABLE (and DROP SCHEMA) of the primary; "
                              "by default the standby keeps the dropped table and its data")
    chain: bool = Field(default=False, description="this standby is itself the source of another group (a chain): "
                        "its replication slots and publications are expected, not a mistake")


class CaptureSettings(Frozen):
    """Batching and chunking of the capture producer."""

    chunk_rows: int = Field(default=5000, ge=1, description="rows per Kafka message of a large transaction")
    chunk_bytes: int = Field(default=0, ge=0, description="bytes of values per Kafka message; 0: a quarter of the "
                             "message limit the redo topic and the broker allow (a larger value travels in parts)")
    batch_max_txns: int = Field(default=500, ge=1, description="source transactions per Kafka transaction")
    batch_max_ms: int = Field(default=100, ge=1, description="longest wait before a Kafka commit")
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    retransmit_window_s: float = Field(
        default=900.0, ge=0, description="confirm to the source only positions older than this, so that a corrupt "
        "entry can be re-read (the source keeps that much more log); 0 disables retransmission")

