"""Configuration of filesync file sets: the ``files:`` section of a group's YAML file.

Example::

    files:
      pacs:
        source: {host: node1, path: /srv/pacs}
        targets:
          - {name: dr, host: node2, path: /srv/pacs}
          - {name: undo, host: node3, path: /srv/pacs, delay_seconds: 3600}   # keeps deletions 1 h
        exclude: ["*.tmp", "cache/"]
        include: ["cache/keep.me"]
        schedule: {interval_s: 300}        # or {cron: "*/5 * * * *"}
        watch: true
        debounce_ms: 500
        consistency_points: true           # each pass records the redo topic's offsets (start, end)

Every pattern is validated at load time (gitignore syntax, via pathspec), and so is the cron string,
so a typo fails when the file is loaded, naming the key, not in the middle of the night.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceSpec(_Frozen):
    """Where the set is read: an absolute directory on one host."""

    host: str = "localhost"
    path: str

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"source path {value!r} must be absolute (start with /)")
        return value.rstrip("/") or "/"


class TargetSpec(_Frozen):
    """One replica of the set: a name (unique in the set), the host it lives on, and its directory.

    ``delay_seconds`` makes it a *delayed* target: its receiver applies each record no earlier than
    the time the sender published it + the delay, reading from the topic (no local spool), so the
    delay can change at run time ('ark files delay') and a mistaken deletion on the source stays
    recoverable from this target for as long as the delay.
    """

    name: str
    host: str = "localhost"
    path: str
    delay_seconds: float = Field(default=0.0, ge=0, description="apply each change this long after it was sent")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"target name {value!r}: use letters, digits, '-' or '_'")
        return value

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"target path {value!r} must be absolute (start with /)")
        return value.rstrip("/") or "/"


class ScheduleSpec(_Frozen):
    """When the sender runs a full pass: every ``interval_s`` seconds, or on a cron string (5 fields)."""

    interval_s: float | None = Field(default=None, gt=0)
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"cron {value!r} is not a valid 5-field crontab string: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one(self) -> ScheduleSpec:
        if self.interval_s is not None and self.cron is not None:
            raise ValueError("give either schedule.interval_s or schedule.cron, not both")
        return self


class PreserveSpec(_Frozen):
    """Which attributes are replicated (all by default, like ``rsync -aHAX``)."""

    owner: bool = True
    group: bool = True
    perms: bool = True
    times: bool = True
    xattrs: bool = True
    acls: bool = True
    hard_links: bool = True
    devices: bool = True
    numeric_ids: bool = Field(default=False, description="map owners by number only, never by name")


class FileSetConfig(_Frozen):
    """One replicated directory tree: a source, its targets, selection, timing and transfer knobs."""

    source: SourceSpec
    targets: tuple[TargetSpec, ...] = Field(min_length=1)
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = Field(default=(), description="re-include patterns (gitignore '!pattern')")
    schedule: ScheduleSpec | None = None
    watch: bool = False
    debounce_ms: int = Field(default=500, ge=0, le=600_000)
    delete: bool = Field(default=True, description="delete target entries whose source is gone")
    preserve: PreserveSpec = Field(default_factory=PreserveSpec)
    chunk_avg_bytes: int = Field(default=8192, ge=256, le=1 << 22, description="average content-defined chunk")
    message_bytes: int = Field(default=1 << 20, ge=1 << 16, le=8 << 20, description="literal bytes per Kafka message")
    horizon_s: float = Field(default=2.0, ge=0, description="files changed this recently are re-checked next pass")
    fsync: bool = Field(default=False, description="fsync each file before the rename (slower, power-loss safe)")
    state_dir: str | None = Field(default=None, description="local state; default /var/lib/ark/files/<group>/<set>")
    ack_timeout_s: float = Field(default=300.0, gt=0)
    retention_ms: int = Field(default=7 * 24 * 3_600_000, ge=-1)
    consistency_points: bool = Field(default=False, description="record the redo topic's end offset when each "
                                     "pass starts and ends, to pair file targets with database standbys")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """Accept ``source: /path`` and ``targets: [{name, path}]`` shorthands."""
        if isinstance(data, dict) and isinstance(data.get("source"), str):
            data = {**data, "source": {"path": data["source"]}}
        return data

    @field_validator("chunk_avg_bytes")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"chunk_avg_bytes {value} must be a power of two (e.g. 8192)")
        return value

    @model_validator(mode="after")
    def _checks(self) -> FileSetConfig:
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique in a file set; repeated: {', '.join(dupes)}")
        for kind, patterns in (("exclude", self.exclude), ("include", self.include)):
            for pattern in patterns:
                check_pattern(kind, pattern)
        return self

    def target(self, name: str) -> TargetSpec:
        """The target called ``name`` (ValueError listing the known names otherwise)."""
        for target in self.targets:
            if target.name == name:
                return target
        raise ValueError(f"no target {name!r}; known: {', '.join(t.name for t in self.targets)}")

    def patterns(self) -> list[str]:
        """The gitignore lines of the set: excludes, then includes as ``!pattern``."""
        return list(self.exclude) + [f"!{p}" for p in self.include]


def check_pattern(kind: str, pattern: str) -> None:
    """Raise ValueError naming ``pattern`` when it is not valid gitignore syntax."""
    import pathspec

    if not pattern.strip() or pattern.lstrip().startswith("#"):
        raise ValueError(f"{kind} pattern {pattern!r} is empty or a comment: remove it")
    if pattern.startswith("!"):
        raise ValueError(f"{kind} pattern {pattern!r}: write re-includes under 'include:' without '!'")
    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except Exception as exc:  # noqa: BLE001 - pathspec raises several types for bad syntax
        raise ValueError(f"{kind} pattern {pattern!r} is not valid gitignore syntax: {exc}") from None
