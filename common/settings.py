"""Engine-neutral settings: Kafka, the capture's batching, and the bases of every database's settings.

Each engine extends :class:`PrimarySettings` and :class:`StandbySettings` with its own model in
``common/engines/<engine>.py`` (its defaults, such as the port, and its own fields, such as a
PostgreSQL slot); :mod:`common.config` picks the model by the ``engine:`` key. Nothing here knows an
engine: no port, user or database defaults.
"""

from __future__ import annotations

import shlex
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    compression: Literal["auto", "none", "lz4", "zstd", "snappy", "gzip"] = Field(
        default="lz4", description="the redo producer's codec; 'auto' (opt-in, README 'Compression that follows the "
        "link') follows the measured link: lz4 on a LAN, zstd on a slow link (common/link.py)")

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


def command_argv(value: str | list[str] | None) -> tuple[str, ...] | None:
    """A command as its argv: a list as given, a string split like a shell would (no shell runs it)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments ({exc}): check its quotes") from None
    else:
        argv = list(value)
    if not argv or not argv[0]:
        raise ValueError("is empty: give the program and its arguments, or leave the key out")
    return tuple(argv)


class ServiceSettings(Frozen):
    """An application process or port on the node that the node agent checks (and restarts)."""

    name: str = Field(min_length=1, description="what the heartbeat and the logs call it")
    process: str | None = Field(default=None, description="a process whose name (or command line) contains this "
                                "must be running")
    port: int | None = Field(default=None, ge=1, le=65535, description="a TCP port that must accept connections")
    host: str = Field(default="127.0.0.1", description="where the port listens")
    restart_command: tuple[str, ...] | None = Field(default=None, description="starts the service again (a string "
                                                    "split like a shell would, or a list); no shell runs it")

    @field_validator("restart_command", mode="before")
    @classmethod
    def _split(cls, value: str | list[str] | None) -> tuple[str, ...] | None:
        return command_argv(value)

    @model_validator(mode="after")
    def _something_to_check(self) -> ServiceSettings:
        if self.process is None and self.port is None:
            raise ValueError(f"service {self.name}: give process:, port: or both (what the agent checks)")
        return self


class NodeAgentSettings(Frozen):
    """How ``ark agent NODE`` checks its node and restarts it locally before it reports it failed (README,
    "Node agent"). Every key has a default; without ``restart_command`` a failed check is reported at once."""

    restart_command: tuple[str, ...] | None = Field(
        default=None, description="starts the database again after a failed check (e.g. 'systemctl restart "
        "postgresql@15-main' or 'pg_ctl -D DIR -w start'); split like a shell would, no shell runs it")
    restart_tries: int = Field(default=3, ge=0, le=100, description="local restarts before the node is 'failed'")
    restart_backoff_s: float = Field(default=2.0, gt=0, le=600,
                                     description="wait before the second try; doubles with each further try")
    restart_timeout_s: float = Field(default=60.0, gt=0, description="longest a restart command may run")
    stable_s: float = Field(default=60.0, ge=0, description="healthy this long: the restart count starts over")
    failures_before_restart: int = Field(default=2, ge=1, le=100, description="consecutive failed checks before the "
                                         "first restart (a single slow answer restarts nothing)")
    check_interval_s: float = Field(default=1.0, gt=0, le=60)
    check_timeout_s: float = Field(default=3.0, gt=0, le=60, description="longest a login + SELECT 1 may take")
    disk_min_free_pct: float = Field(default=5.0, ge=0, lt=100,
                                     description="warn when the data or WAL directory's disk has less free")
    data_dir: str | None = Field(default=None, description="the database's data directory on this host: its "
                                 "server process (pid file) and disk are checked; default: what the server says")
    wal_dir: str | None = Field(default=None, description="the WAL (redo log) directory when on another disk")
    self_fence: bool = Field(default=True, description="on the primary: make the database read-only when Kafka "
                             "cannot be reached for fence_lease_s (a controller may promote a standby meanwhile)")
    fence_lease_s: float = Field(default=3.0, gt=0, description="how long the primary's agent may be cut off from "
                                 "Kafka before it fences its database; with check_interval_s and a second for the "
                                 "fence, at most the controller's ttl (controller.ttl_s, 5 s; checked at load)")
    services: tuple[ServiceSettings, ...] = ()

    @field_validator("restart_command", mode="before")
    @classmethod
    def _split(cls, value: str | list[str] | None) -> tuple[str, ...] | None:
        return command_argv(value)

    @model_validator(mode="after")
    def _unique_services(self) -> NodeAgentSettings:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"service names must be unique; repeated: {', '.join(dupes)}")
        return self


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
    agent: NodeAgentSettings = Field(default_factory=NodeAgentSettings,
                                     description="the node agent's checks and local restarts ('ark agent NODE')")

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

