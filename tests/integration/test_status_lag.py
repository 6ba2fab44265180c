"""Lag measured from the source (issue 17): a stalled capture makes every standby's lag grow in
``ark status``, although every standby is at the end of the redo topic."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from deploy.workload import BankWorkload, create_bank
from tests.support.replication import Group, sql, wait_for


def _status(group: Group) -> dict[str, Any]:
    return json.loads(group.ark_ok("status", "--json"))


def _lags(group: Group) -> list[float]:
    return [sb["lag_seconds"] for sb in _status(group)["standbys"]]


def test_a_stalled_capture_shows_as_growing_lag_on_every_standby(make_group: Any) -> None:
    group = make_group(standbys=[("standby", 0.0), ("second", 0.0)])
    create_bank(group.primary_dsn, accounts=20)
    group.ark_ok("sync", "standby")
    group.ark_ok("sync", "second")
    capture = group.start("capture")
    group.start("apply", "standby")
    group.start("apply", "second")
    workload = BankWorkload(group.primary_dsn, accounts=20, clients=1, pause_s=0.05).start()
    try:
        wait_for(lambda: sql(group.standby("second").dsn, "SELECT count(*) FROM history")[0][0] > 20, 60,
                 "replication to run")
        wait_for(lambda: all(lag is not None and lag < 3 for lag in _lags(group)), 60, "both standbys current")
        assert capture.pid is not None
        os.kill(capture.pid, signal.SIGSTOP)  # the capture stalls; the primary goes on committing
        try:
            time.sleep(3)
            first = _lags(group)
            time.sleep(4)
            doc = _status(group)
            second = [sb["lag_seconds"] for sb in doc["standbys"]]
            # Every standby is at the end of the redo topic, yet its lag grows with the stall.
            assert all(b - a > 3 for a, b in zip(first, second, strict=True)), (first, second)
            assert all(sb["lag_entries"] == 0 for sb in doc["standbys"]), doc["standbys"]
            time.sleep(5)  # past the heartbeat's staleness: the capture is reported down, with the time
            doc = _status(group)
            assert doc["capture"]["stalled"].startswith("capture down (last heard"), doc["capture"]
            assert "last caught up with its source" in doc["capture"]["stalled"], doc["capture"]
            human = group.ark_ok("status")
            assert "capture down" in human, human
        finally:
            os.kill(capture.pid, signal.SIGCONT)
        wait_for(lambda: all(lag is not None and lag < 3 for lag in _lags(group)), 60, "both standbys current again")
        assert _status(group)["capture"]["stalled"] == ""
    finally:
        workload.stop()
