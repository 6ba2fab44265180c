"""Set-up shared by the tests that drive ``ark console`` (Textual's Pilot) against a real replicated group."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.replication import Group, sql

Until = Callable[..., Awaitable[None]]


def replicating_table_a(make_group: Any, *, apply_on_primary: bool = False) -> Group:
    """A group (``make_group`` fixture) with capture and apply running and ``public.a`` (id, v) holding 100 rows,
    equal on the standby. ``apply_on_primary`` also starts the primary node's applier (idle while it is
    primary; it applies from the end-of-epoch marker once demoted)."""
    group: Group = make_group()
    sql(group.primary_dsn, "CREATE TABLE a (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    if apply_on_primary:
        group.start("apply", "primary")
    sql(group.primary_dsn, "INSERT INTO a SELECT g, 'x' FROM generate_series(1, 100) g")
    assert all(d.equal for d in group.wait_equal("standby", ["public.a"]))
    return group


def pilot_until(app: Any, pilot: Any) -> Until:
    """``await until(what, check, timeout=60)``: let the console run until ``check()`` holds; on timeout the
    assertion names ``what`` and the console's last action."""
    async def until(what: str, check: Callable[[], Any], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {app.last_action}"
            await pilot.pause(0.2)

    return until
