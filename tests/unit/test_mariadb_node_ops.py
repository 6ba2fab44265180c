"""MariaDB node operations: the pure choices (privileges, sessions to end, AUTO_INCREMENT targets)."""

from __future__ import annotations

import pytest

from common.engines import engine
from producers.mariadb.node_ops import (
    Session,
    auto_increment_target,
    client_sessions,
    missing_privileges,
    still_in_flight,
)


@pytest.mark.parametrize(("grants", "missing"), [
    (["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"], []),
    (["GRANT PROCESS, CONNECTION ADMIN, READ_ONLY ADMIN ON *.* TO `ark`@`%`"], []),
    (["GRANT PROCESS, SUPER, READ_ONLY ADMIN ON *.* TO `ark`@`%`"], []),  # SUPER may KILL others' sessions
    # 10.11: SUPER no longer includes READ_ONLY ADMIN
    (["GRANT SUPER, PROCESS ON *.* TO `ark`@`%`"], ["READ_ONLY ADMIN"]),
    (["GRANT USAGE ON *.* TO `ark`@`%`", "GRANT ALL PRIVILEGES ON `bank`.* TO `ark`@`%`"],
     ["READ_ONLY ADMIN", "CONNECTION ADMIN", "PROCESS"]),
])
def test_missing_privileges(grants: list[str], missing: list[str]) -> None:
    assert missing_privileges(grants) == missing


def test_client_sessions_spare_ark_replication_and_system_threads() -> None:
    sessions = [Session(1, "app", "Sleep"), Session(2, "ark", "Query"), Session(3, "ark", "Binlog Dump"),
                Session(4, "system user", "Daemon"), Session(5, "root", "Query"), Session(6, "app", "Query", "77", 3),
                Session(7, "repl", "Binlog Dump GTID"), Session(8, "event_scheduler", "Daemon")]
    chosen = client_sessions(sessions, own_id=5, spared_users={"ark"})
    assert [s.id for s in chosen] == [1, 6]


def test_still_in_flight_follows_each_transaction_not_the_session() -> None:
    in_flight = {1: "10", 2: "20", 3: "30"}
    now = [Session(1, "app", "Query", "10", 1), Session(2, "app", "Query", "21", 1), Session(4, "app", "Sleep")]
    # session 2 began another transaction (its first one ended), session 3 is gone
    assert still_in_flight(in_flight, now) == {1: "10"}


@pytest.mark.parametrize(("want_last", "have_next", "target"), [
    (None, 5, None),        # the old primary never handed out a value
    (100, 101, None),       # already past it (the applier's explicit ids moved InnoDB's counter)
    (100, 500, None),       # never backwards
    (100, 100, 101),
    (100, None, 101),
    (1, 1, 2),
])
def test_auto_increment_target(want_last: int | None, have_next: int | None, target: int | None) -> None:
    assert auto_increment_target(want_last, have_next) == target


def test_mariadb_registers_its_node_ops() -> None:
    assert engine("mariadb").node_ops == "producers.mariadb.node_ops:MariaDBNodeOps"
