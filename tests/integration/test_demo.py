"""The demo, the first of the README's two set-up commands, end to end: its own Kafka broker, three PostgreSQL
instances and a MariaDB one, an online sync under load, a real-time, a delayed and a cross-engine standby, and
the row-by-row comparison it ends with. A demo that fails is the first thing a new user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_the_demo_replicates_to_every_standby_and_they_equal_the_primary(ark_tmp: Path) -> None:
    workdir = ark_tmp / "demo"
    env = {k: v for k, v in os.environ.items() if k != "ARK_CONFIG"}
    res = subprocess.run([sys.executable, "-m", "ops", "demo", "--seconds", "3", "--dir", str(workdir)],
                         capture_output=True, text=True, timeout=840, cwd=ROOT, env=env, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "standbys equal the primary, row by row" in out, out[-6000:]
    for line in ("node2 public.history", "node3 public.history", "node4-mariadb public.history"):
        assert line in out, out[-6000:]
    assert "BGQUEUE" not in out, "librdkafka's info lines reach the operator's terminal"
    # Nothing of the demo keeps running: no server, no agent, no broker.
    leftover = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False).stdout
    assert not leftover.strip(), leftover
