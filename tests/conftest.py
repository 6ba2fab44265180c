"""Session fixtures: one real Kafka broker and private PostgreSQL instances, started on free ports.

- ``kafka_bootstrap``: ``$ARK_TEST_KAFKA`` when set, else a local KRaft broker started for the session.
- ``kafka_broker``: that local :class:`deploy.kafka.KafkaBroker` (tests that kill or pause the broker
  use it; they are skipped when ``ARK_TEST_KAFKA`` names an external cluster).
- ``pg_factory``: creates, starts and finally stops :class:`deploy.postgres.PgInstance` objects.
- ``pg_primary`` / ``pg_standby``: two session instances; ``fresh_db`` makes a uniquely named
  database on both for one test.
- ``mariadb_factory``: creates, starts and finally stops :class:`deploy.mariadb.MariaDBInstance` objects;
  ``mariadb_primary`` / ``mariadb_standby`` are two session instances, and ``fresh_mariadb`` makes a
  uniquely named schema (database) on both for one test.
- ``unique_group``: a unique replication group name per test.

Everything lives under ``/tmp/ark-test-<pid>``; set ``ARK_KEEP_TMP=1`` to keep it after the run.
Tests under tests/integration and tests/faults are marked ``integration`` (and ``fault`` for the latter).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.kafka import KafkaBroker
from deploy.mariadb import MariaDBInstance
from deploy.ports import free_port
from deploy.postgres import PgInstance
from tests.support.faults import results_dir

PgFactory = Callable[..., PgInstance]
MariaDBFactory = Callable[..., MariaDBInstance]

# Every test config names its group's control key as {env: ARK_CONTROL_KEY}; the ark processes the tests
# start inherit it. One random key per test session.
os.environ.setdefault("ARK_CONTROL_KEY", secrets.token_hex(32))

_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration and tests/faults as ``integration``; faults also ``fault``."""
    integration, faults = _TESTS / "integration", _TESTS / "faults"
    for item in items:
        path = Path(str(item.fspath))
        if path.is_relative_to(integration) or path.is_relative_to(faults):
            item.add_marker(pytest.mark.integration)
        if path.is_relative_to(faults):
            item.add_marker(pytest.mark.fault)


@pytest.fixture(scope="session")
def ark_tmp() -> Iterator[Path]:
    """The session's scratch directory ``/tmp/ark-test-<pid>`` (readable by the postgres OS user)."""
    root = Path(f"/tmp/ark-test-{os.getpid()}")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    yield root
    if not os.environ.get("ARK_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _local_kafka(ark_tmp: Path) -> Iterator[KafkaBroker | None]:
    """Start a local broker for the session unless ARK_TEST_KAFKA names an external one."""
    if os.environ.get("ARK_TEST_KAFKA"):
        yield None
        return
    broker = KafkaBroker(ark_tmp / "kafka", free_port(), free_port())
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_local_kafka: KafkaBroker | None) -> str:
    """Bootstrap servers of the test Kafka cluster."""
    if _local_kafka is None:
        return os.environ["ARK_TEST_KAFKA"]
    return _local_kafka.bootstrap


@pytest.fixture(scope="session")
def kafka_broker(_local_kafka: KafkaBroker | None) -> KafkaBroker:
    """The local broker object, for tests that kill, pause or restart it."""
    if _local_kafka is None:
        pytest.skip("ARK_TEST_KAFKA names an external cluster: broker fault tests need the local broker")
    return _local_kafka


@pytest.fixture(scope="session")
def pg_factory(ark_tmp: Path) -> Iterator[PgFactory]:
    """Return ``make(name=None, extra_conf=None, password=None, start=True) -> PgInstance``.

    Each instance gets its own data directory under the session dir and a free port; all are stopped
    at the end of the session.
    """
    made: list[PgInstance] = []

    def make(name: str | None = None, extra_conf: dict[str, str | int | bool] | None = None,
             password: str | None = None, start: bool = True, extra_listen: tuple[str, ...] = ()) -> PgInstance:
        label = name or f"pg{len(made)}"
        inst = PgInstance(ark_tmp / "pg" / f"{label}-{uuid.uuid4().hex[:6]}", free_port())
        inst.datadir.parent.mkdir(parents=True, exist_ok=True)
        inst.datadir.parent.chmod(0o755)
        made.append(inst)
        inst.init(extra_conf=extra_conf, password=password, extra_listen=extra_listen)
        if start:
            inst.start()
        return inst

    yield make
    for inst in made:
        try:  # stop() resumes a paused instance first
            inst.stop(mode="immediate")
        except RuntimeError:
            inst.kill9()


@pytest.fixture(scope="session")
def pg_primary(pg_factory: PgFactory) -> PgInstance:
    """A session-wide PostgreSQL 15 instance with wal_level=logical, playing the primary."""
    return pg_factory("primary")


@pytest.fixture(scope="session")
def pg_standby(pg_factory: PgFactory) -> PgInstance:
    """A session-wide PostgreSQL 15 instance, playing the standby."""
    return pg_factory("standby")


@dataclass(frozen=True)
class FreshDb:
    """A database of the same unique name on the primary and on the standby."""

    name: str
    primary: PgInstance
    standby: PgInstance

    @property
    def primary_dsn(self) -> str:
        """DSN of the database on the primary."""
        return self.primary.dsn(self.name)

    @property
    def standby_dsn(self) -> str:
        """DSN of the database on the standby."""
        return self.standby.dsn(self.name)


@pytest.fixture
def fresh_db(pg_primary: PgInstance, pg_standby: PgInstance) -> Iterator[FreshDb]:
    """Create ``d<hex8>`` on both session instances for one test; drop it afterwards (best effort)."""
    db = FreshDb(f"d{uuid.uuid4().hex[:8]}", pg_primary, pg_standby)
    pg_primary.create_database(db.name)
    pg_standby.create_database(db.name)
    yield db
    for inst in (pg_primary, pg_standby):
        if inst.is_running() and not inst.is_paused():
            try:
                inst.drop_database(db.name)
            except RuntimeError as exc:  # an active slot or connection left by the test
                print(f"fresh_db: could not drop {db.name} on port {inst.port}: {exc}")


@pytest.fixture
def unique_group() -> str:
    """A unique replication group name, ``t<hex8>``."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_group(kafka_bootstrap: str, fresh_db: FreshDb, unique_group: str, ark_tmp: Path,
               pg_factory: PgFactory) -> Iterator[Callable[..., object]]:
    """Build a :class:`tests.support.replication.Group` on ``fresh_db`` (agents stopped afterwards).

    ``make_group(standbys=[("standby", 0.0)], tables=("public.*",))``; a standby name other than
    "standby" gets the same database on a new instance from ``pg_factory``.
    """
    from tests.support.replication import Group, Standby

    made: list[Group] = []

    def make(standbys: list[tuple[str, float]] | None = None, tables: tuple[str, ...] = ("public.*",),
             **capture: object) -> Group:
        sbs = []
        for name, delay in standbys or [("standby", 0.0)]:
            inst = fresh_db.standby
            if name != "standby":
                inst = pg_factory(name)
                inst.create_database(fresh_db.name)
            sbs.append(Standby(name, inst, fresh_db.name, delay))
        group = Group(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap, fresh_db.primary,
                      fresh_db.name, sbs, tables, dict(capture))
        group.write_config()
        made.append(group)
        return group

    yield make
    for group in made:
        group.stop_all()
        slot = f"ark_{group.name}"
        with contextlib.suppress(RuntimeError):
            fresh_db.primary.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
                                  f"WHERE slot_name = '{slot}' AND NOT active")


@pytest.fixture(scope="session")
def fault_results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where fault cases write their result rows: ``$ARK_FAULT_RESULTS``, else under the pytest tmp dir."""
    return results_dir(tmp_path_factory.getbasetemp() / "fault-results")


@pytest.fixture(scope="session")
def mariadb_factory(ark_tmp: Path) -> Iterator[MariaDBFactory]:
    """Return ``make(name=None, extra_options=None, password=None, start=True) -> MariaDBInstance``.

    Each instance gets its own data directory under the session dir, a free port and its own
    server id; all are stopped at the end of the session.
    """
    made: list[MariaDBInstance] = []

    def make(name: str | None = None, extra_options: dict[str, str | int] | None = None,
             password: str | None = None, start: bool = True) -> MariaDBInstance:
        label = name or f"maria{len(made)}"
        inst = MariaDBInstance(ark_tmp / "mariadb" / f"{label}-{uuid.uuid4().hex[:6]}", free_port(),
                               server_id=len(made) + 1)
        inst.datadir.parent.mkdir(parents=True, exist_ok=True)
        inst.datadir.parent.chmod(0o755)
        made.append(inst)
        inst.init(extra_options=extra_options, password=password)
        if start:
            inst.start()
        return inst

    yield make
    for inst in made:
        try:
            inst.stop()
        except RuntimeError:
            inst.kill9()


@pytest.fixture(scope="session")
def mariadb_primary(mariadb_factory: MariaDBFactory) -> MariaDBInstance:
    """A session-wide MariaDB 10.11 with a ROW binlog (full images and metadata), playing the primary."""
    return mariadb_factory("mprimary")


@pytest.fixture(scope="session")
def mariadb_standby(mariadb_factory: MariaDBFactory) -> MariaDBInstance:
    """A session-wide MariaDB 10.11, playing the standby."""
    return mariadb_factory("mstandby")


@dataclass(frozen=True)
class FreshMariaDB:
    """A schema of the same unique name on the MariaDB primary and standby."""

    name: str
    primary: MariaDBInstance
    standby: MariaDBInstance


@pytest.fixture
def fresh_mariadb(mariadb_primary: MariaDBInstance, mariadb_standby: MariaDBInstance) -> Iterator[FreshMariaDB]:
    """Create schema ``m<hex8>`` on the primary for one test (the standby gets it from Ark); drop both after."""
    db = FreshMariaDB(f"m{uuid.uuid4().hex[:8]}", mariadb_primary, mariadb_standby)
    mariadb_primary.create_database(db.name)
    yield db
    for inst in (mariadb_primary, mariadb_standby):
        if inst.is_running() and not inst.is_paused():
            try:
                inst.sql("SET GLOBAL read_only = OFF")
                inst.drop_database(db.name)
            except RuntimeError as exc:
                print(f"fresh_mariadb: could not drop {db.name} on port {inst.port}: {exc}")
