"""``ark console`` switches over a real group (Textual's Pilot on the real console and GroupSource): the
decision, the confirmation, ``ark switchover``'s own code run from the console's worker thread, its steps on
the Group tab; then the new roles and epoch in the topology within a refresh, the handover in the feed, and
the old primary applying what the new one commits. Every wait is on a condition."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from common.config import load_config
from deploy.compare import compare_tables
from ops.console.app import ArkConsole
from ops.console.dialogs import ConfirmScreen
from ops.console.source import GroupSource
from tests.support.console_live import pilot_until, replicating_table_a
from tests.support.replication import sql, wait_for


@pytest.mark.timeout(600)
def test_the_console_switches_over_a_real_group(make_group: Any) -> None:
    group = replicating_table_a(make_group, apply_on_primary=True)
    new_dsn = group.standby("standby").dsn
    source = GroupSource(load_config(group.config))

    async def main() -> None:
        app = ArkConsole(source, refresh_s=0.5)
        async with app.run_test(size=(100, 30)) as pilot:
            until = pilot_until(app, pilot)

            def topology() -> str:
                return str(app.query_one("#topology").render())

            await until("the standby running and the capture heard", lambda: app.view is not None
                        and app.view.standbys and app.view.standbys[0].state == "running"
                        and app.view.capture_beat_state == "running")
            assert topology().startswith("epoch 0: primary primary (as configured)")
            await pilot.press("s")
            await until("the confirmation", lambda: isinstance(app.screen, ConfirmScreen), timeout=10)
            assert "switchover from primary to standby: epoch 0 ends, epoch 1 begins" in str(
                app.screen.query_one("#detail").render())
            await pilot.press("y")
            await until("the switchover's outcome", lambda: app.switchover.running is None
                        and app.last_action.startswith("switchover to standby"), timeout=300)
            assert app.last_action.startswith("switchover to standby done in "), app.last_action
            said = "\n".join(app.switchover.lines)
            assert "fenced" in said and "end-of-epoch marker" in said, said
            await until("the new roles in the topology", lambda: topology().startswith(
                "epoch 1: primary standby (after a switchover from primary) since "), timeout=10)
            assert "standby [primary] → capture" in topology()
            assert "└→ primary [standby]" in topology()
            assert app.view is not None and any(e.text.startswith("epoch 1 begins: standby is primary")
                                                for e in app.view.events)
            assert any(e.kind == "switchover" for e in app.view.events)

    asyncio.run(main())
    doc = json.loads(group.ark_ok("topology", "--json"))
    assert (doc["epoch"], doc["primary"], doc["nodes"]["primary"]) == (1, "standby", "standby")
    sql(new_dsn, "INSERT INTO a SELECT g, 'y' FROM generate_series(101, 150) g")
    wait_for(lambda: all(d.equal for d in compare_tables(new_dsn, group.primary_dsn, ["public.a"])), 120,
             "the old primary to apply what the new one commits")
    group.stop_all()
    slot = f"ark_{group.name}"  # the new primary's slot: the fixture only drops the configured primary's
    sql(new_dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s "
        "AND NOT active", (slot,))
