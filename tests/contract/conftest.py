"""The engine harnesses the contract suite runs against (one per engine that runs on this machine)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from deploy.mariadb import MariaDBInstance
from tests.contract.harness import EngineHarness, MariaDBHarness, PostgresHarness

#: Engines whose harness exists; a new engine adds itself here (and in harness.py).
ENGINES = ["postgresql", "mariadb"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/contract" in str(item.fspath):
            item.add_marker(pytest.mark.contract)


@pytest.fixture(params=ENGINES)
def harness(request: pytest.FixtureRequest) -> Iterator[EngineHarness]:
    """A harness of each engine, on fresh databases for this test."""
    if request.param == "postgresql":
        db: Any = request.getfixturevalue("fresh_db")
        h = PostgresHarness(db.primary, db.standby, db.name)
        yield h
        h.drop_slot()
        return
    if request.param == "mariadb":
        primary, standby = request.getfixturevalue("contract_mariadb")
        m = MariaDBHarness(primary, standby)
        m.reset()
        yield m
        return
    raise AssertionError(request.param)


@pytest.fixture(scope="session")
def contract_mariadb(mariadb_factory: Any) -> tuple[MariaDBInstance, MariaDBInstance]:
    """Two MariaDB instances of the contract suite's own (its harness resets their binlog per test)."""
    return mariadb_factory("cprimary"), mariadb_factory("cstandby")
