"""MariaDB's health probe, its pure parts: the process check from the pid file, writability from the server's
variables, and what it remembers of where the server keeps its files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from common.config import parse_config
from common.node_health import NO_RESTART
from producers.mariadb.health import MariaDBHealth, _writable


def probe(data_dir: Path | None) -> MariaDBHealth:
    agent = {"data_dir": str(data_dir)} if data_dir else {}
    cfg = parse_config({"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
                        "primary": {"name": "m1", "engine": "mariadb", "tables": ["bank.*"], "agent": agent}})
    return MariaDBHealth(cfg, cfg.primary)


def test_the_process_check_reads_the_pid_file(tmp_path: Path) -> None:
    p = probe(tmp_path)
    assert p._process().detail == f"not running (no pid file in {tmp_path})"
    (tmp_path / "db1.pid").write_text(f"{os.getpid()}\n")
    assert p._process().ok
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "db1.pid").write_text(f"{dead.pid}\n")
    check = p._process()
    assert not check.ok and check.detail.endswith("is gone (the server crashed)")


def test_the_server_named_pid_file_and_binlog_directory_are_remembered(tmp_path: Path) -> None:
    p = probe(None)
    assert p.directories() == []
    p._remember((str(tmp_path) + "/", "srv.pid", b"binlogs/mariadb-bin", "0", None))
    assert p.data_dir == str(tmp_path) and p.pid_file == str(tmp_path / "srv.pid")
    assert p.directories() == [str(tmp_path), str(tmp_path / "binlogs")]
    assert p._process().detail == f"not running (no {tmp_path / 'srv.pid'})"


def test_writable_reads_read_only_and_super_read_only() -> None:
    assert _writable(("", "", "", 0, None)).ok
    assert _writable(("", "", "", "0", "OFF")).ok
    ro = _writable(("", "", "", 1, None))
    assert not ro.ok and ro.target == NO_RESTART and "@@read_only is ON" in ro.detail
    sro = _writable(("", "", "", 0, "ON"))
    assert not sro.ok and "@@super_read_only" in sro.detail
