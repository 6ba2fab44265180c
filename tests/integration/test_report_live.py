"""``ark report`` from a real replicated run, checked against what was committed (row counts, transactions),
its HTML rendered by headless Chromium to a PNG; then ``ark console`` (Pilot) drives the same group: its
pause and resume are obeyed by the real applier, and its verify says equal."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from common.config import load_config
from ops.console.app import ArkConsole
from ops.console.source import GroupSource
from tests.support.console_live import pilot_until, replicating_table_a
from tests.support.replication import Group, sql, wait_for

INSERTS_A, UPDATES_A, ROWS_B, DELETES_B = 40, 10, 200, 5


def _workload(dsn: str) -> None:
    """Known transactions: 40 one-row inserts and 10 one-row updates on a, one 200-row insert and one 5-row
    delete on b: 52 transactions, 255 rows."""
    for i in range(INSERTS_A):
        sql(dsn, "INSERT INTO a VALUES (%s, 'x')", (i,))
    for i in range(UPDATES_A):
        sql(dsn, "UPDATE a SET v = 'y' WHERE id = %s", (i,))
    sql(dsn, f"INSERT INTO b SELECT g, 'z' FROM generate_series(1, {ROWS_B}) g")
    sql(dsn, f"DELETE FROM b WHERE id <= {DELETES_B}")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("headless Chromium is not installed (deploy/bootstrap.sh installs Debian's chromium)")
    return found


def _status(group: Group) -> dict[str, Any]:
    return json.loads(group.ark_ok("status", "--json"))["standbys"][0]


def test_report_figures_match_the_run_and_its_html_renders(make_group: Any, tmp_path: Path) -> None:
    chromium = _chromium()
    group = make_group()
    sql(group.primary_dsn, "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    _workload(group.primary_dsn)
    assert all(d.equal for d in group.wait_equal("standby", ["public.a", "public.b"])), "standby did not catch up"
    wait_for(lambda: _status(group)["lag_entries"] == 0, 60, "catch-up")

    doc = json.loads(group.ark_ok("report", "--since", "1h", "--json"))
    tables = {t["table"]: t for t in doc["tables"]}
    a, b = tables["public.a"], tables["public.b"]
    assert (a["transactions"], a["rows"], a["inserts"], a["updates"]) == (INSERTS_A + UPDATES_A, 50, 40, 10)
    assert (b["transactions"], b["rows"], b["inserts"], b["deletes"]) == (2, ROWS_B + DELETES_B, ROWS_B, DELETES_B)
    assert doc["totals"]["transactions"] == INSERTS_A + UPDATES_A + 2 and doc["totals"]["rows"] == 255
    # ... and against the databases themselves
    assert sql(group.primary_dsn, "SELECT count(*) FROM a")[0][0] == a["inserts"] - a["deletes"]
    assert sql(group.standby("standby").dsn, "SELECT count(*) FROM b")[0][0] == b["inserts"] - b["deletes"]
    assert sum(h["transactions"] for h in doc["hours"]) == doc["totals"]["transactions"]
    (sb,) = doc["standbys"]
    assert sb["name"] == "standby" and sb["hours"] and sb["lag_p50_s"] is not None
    archive = doc["archive"]
    assert archive["high_offset"] > archive["low_offset"] == 0 and archive["bytes_estimated"] is False
    assert archive["bytes"] > 0 and archive["span_hours"] is not None

    rows = list(csv.DictReader(io.StringIO(group.ark_ok("report", "--since", "1h", "--csv"))))
    assert sum(int(r["rows"]) for r in rows if r["section"] == "table") == 255

    page = tmp_path / "report.html"
    group.ark_ok("report", "--since", "1h", "--html", str(page))
    png = tmp_path / "report.png"
    started = time.monotonic()
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,1800",
                          f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    assert png.is_file(), f"chromium made no PNG (exit {res.returncode}):\n{res.stderr[-2000:]}"
    assert _png_size(png) == (1000, 1800)
    # A blank page compresses to a few KiB; charts, text and tables do not.
    assert png.stat().st_size > 40_000, png.stat().st_size
    print(f"report rendered by chromium in {time.monotonic() - started:.1f} s: {png} ({png.stat().st_size} bytes)")


def test_the_console_drives_a_real_group(make_group: Any) -> None:
    group = replicating_table_a(make_group)
    source = GroupSource(load_config(group.config))

    async def main() -> None:
        app = ArkConsole(source, refresh_s=0.5)
        async with app.run_test(size=(100, 30)) as pilot:
            until = pilot_until(app, pilot)
            await until("the standby row", lambda: app.view is not None and app.view.standbys
                        and app.view.standbys[0].state == "running")
            assert app.view is not None and app.view.standbys[0].name == "standby"
            assert any(a.agent == "capture" for a in app.view.agents)
            await pilot.press("p", "y")
            await until("the pause intent", lambda: "pause of standby: intent written" in app.last_action)
            await until("the applier to pause", lambda: app.view is not None
                        and app.view.standbys[0].state == "paused")
            assert await asyncio.to_thread(lambda: _status(group)["state"]) == "paused"
            await pilot.press("r", "y")
            await until("the applier to resume", lambda: app.view is not None
                        and app.view.standbys[0].state == "running")
            await pilot.press("v", "y")
            await until("verify", lambda: app.last_action.startswith("verify of standby:"), timeout=120)
            assert app.last_action.startswith("verify of standby: equal"), app.last_action
            await pilot.press("3")
            await until("the intents in the feed", lambda: app.view is not None and any(
                e.kind == "intent" and "pause standby" in e.text for e in app.view.events))

    asyncio.run(main())
