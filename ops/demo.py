"""``ark demo``: a real broker, three PostgreSQL instances, a MariaDB one and a live bank workload, replicated.

Everything runs locally from the project's own scripts: the Kafka broker from Maven Central jars,
PostgreSQL and MariaDB from Debian's packages (their own data directories in the demo dir, free ports, no
system service). The demo shows an online initial sync under load, a real-time standby, a delayed one and
a MariaDB standby fed from the same entries (cross-engine), live status with lag, a delay change at run
time, and ends with a row-by-row comparison of every standby with the primary.

Without MariaDB's server installed (``/usr/sbin/mariadbd``; deploy/bootstrap.sh installs it) or with
``--no-mariadb`` the demo runs PostgreSQL only, and says so.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.live import Live
from rich.rule import Rule

from common.config import load_config
from common.errors import ArkError
from deploy.agents import AgentProcess
from deploy.compare import compare_tables, compare_with_mariadb
from deploy.kafka import KafkaBroker
from deploy.mariadb import MARIADB_BIN, MariaDBInstance
from deploy.ports import free_port
from deploy.postgres import PgInstance
from deploy.workload import BankWorkload, create_bank, total_balance
from ops.context import console
from ops.keys import write_key
from ops.status import gather, render

PASSWORD_ENV = "ARK_DEMO_PASSWORD"  # noqa: S105 - the name of a variable, not a secret
DELAY_S = 20.0
MARIADB_STANDBY = "node4-mariadb"
#: Columns compared across engines: their text form is the same in both (timestamps differ in zone and form).
CROSS_ENGINE_COLUMNS = {"public.accounts": ["id", "balance", "owner"],
                        "public.history": ["id", "from_id", "to_id", "amount"]}


def _ark(config: Path, *args: str, env: dict[str, str]) -> None:
    """Run one ``ark`` command in the foreground, showing its output; fail the demo if it fails."""
    result = subprocess.run([sys.executable, "-m", "ops", "-c", str(config), *args], env={**os.environ, **env},
                            check=False)
    if result.returncode != 0:
        raise ArkError(f"'ark {' '.join(args)}' failed with exit code {result.returncode}",
                       fix=f"see the output above and the logs in {config.parent / 'logs'}")


def _write_config(path: Path, broker: KafkaBroker, nodes: dict[str, PgInstance],
                  mariadb: MariaDBInstance | None) -> None:
    key_file = path.with_suffix(".control-key")
    if not key_file.exists():
        write_key(key_file)

    def db(name: str, inst: PgInstance, **extra: Any) -> dict[str, Any]:
        return {"name": name, "engine": "postgresql", "host": "127.0.0.1", "port": inst.port, "dbname": "bank",
                "user": "postgres", "password": {"env": PASSWORD_ENV}, **extra}

    standbys = [db("node2", nodes["node2"]), db("node3-delayed", nodes["node3"], delay_seconds=DELAY_S)]
    if mariadb is not None:  # the same entries, applied by another engine: public.accounts lands in `public`
        standbys.append({"name": MARIADB_STANDBY, "engine": "mariadb", "host": "127.0.0.1", "port": mariadb.port,
                         "user": "root", "password": {"env": PASSWORD_ENV}})
    doc = {
        "group": "demo",
        "control_key": {"file": str(key_file)},
        "kafka": {"bootstrap": broker.bootstrap, "redo_retention_hours": 168},
        "primary": db("node1", nodes["node1"], tables=["public.*"]),
        "standbys": standbys,
    }
    path.write_text("# written by 'ark demo'\n" + yaml.safe_dump(doc, sort_keys=False))


def _wait_caught_up(config: Path, standby: str, timeout: float) -> dict[str, Any]:
    cfg = load_config(config)
    deadline = time.monotonic() + timeout
    doc = gather(cfg)
    while time.monotonic() < deadline:
        doc = gather(cfg)
        row = next(s for s in doc["standbys"] if s["name"] == standby)
        if row["lag_entries"] == 0 and row["state"] in ("running", "delayed"):
            return doc
        time.sleep(1)
    return doc


def _start_mariadb(workdir: Path, password: str) -> MariaDBInstance:
    """The demo's MariaDB standby (initialised on the first run; ``--keep`` runs reuse it)."""
    inst = MariaDBInstance(workdir / "mariadb-node4", free_port(), server_id=4)
    with console.status(f"starting MariaDB {MARIADB_STANDBY}"):
        if not (inst.datadir / "mysql").exists():
            inst.datadir.parent.chmod(0o755)  # the server runs as the mysql user when the demo runs as root
            inst.init(password=password)
        inst.start()
    console.print(f"[green]✓[/] MariaDB {MARIADB_STANDBY} on port {inst.port} (a cross-engine standby)")
    return inst


def run_demo(*, seconds: float, workdir: Path, keep: bool, mariadb: bool = True) -> None:
    """Run the whole demo; raises ArkError when replication does not produce equal tables."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    password_file = workdir / "password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(16))
        password_file.chmod(0o600)
    env = {PASSWORD_ENV: password_file.read_text()}
    os.environ.update(env)
    if mariadb and not MARIADB_BIN.exists():
        console.print(f"[yellow]MariaDB's server ({MARIADB_BIN}) is not installed: the demo runs PostgreSQL only "
                      "(deploy/bootstrap.sh installs it)[/]")
        mariadb = False
    console.print(Rule("Ark demo: PostgreSQL → Kafka → PostgreSQL" + (" and MariaDB" if mariadb else "") + " standbys"))
    broker = KafkaBroker(workdir / "kafka", free_port(), free_port())
    nodes = {n: PgInstance(workdir / f"pg-{n}", free_port()) for n in ("node1", "node2", "node3")}
    maria: MariaDBInstance | None = None
    agents: list[AgentProcess] = []
    workload: BankWorkload | None = None
    try:
        with console.status("starting Kafka 4.1 (KRaft, one node; the first run fetches jars from Maven Central)"):
            broker.start()
        console.print(f"[green]✓[/] Kafka at {broker.bootstrap}")
        for name, inst in nodes.items():
            with console.status(f"starting PostgreSQL {name}"):
                if not (inst.datadir / "PG_VERSION").exists():
                    inst.init(password=env[PASSWORD_ENV])
                inst.start()
                if "bank" not in inst.psql("SELECT datname FROM pg_database"):
                    inst.create_database("bank")
            console.print(f"[green]✓[/] PostgreSQL {name} on port {inst.port}")
        if mariadb:
            maria = _start_mariadb(workdir, env[PASSWORD_ENV])
        primary_dsn = nodes["node1"].dsn("bank", password=env[PASSWORD_ENV])
        invariant = create_bank(primary_dsn, accounts=1000)
        config = workdir / "ark.yaml"
        _write_config(config, broker, nodes, maria)
        console.print(f"[green]✓[/] config {config} (password from ${PASSWORD_ENV}, never in the file)")

        workload = BankWorkload(primary_dsn, accounts=1000, clients=4).start()
        console.print("[green]✓[/] bank workload running: 4 clients of transfers on node1 (total balance fixed)")
        console.print(Rule("online initial sync while the primary is busy"))
        _ark(config, "check", env=env)
        _ark(config, "sync", "--all", env=env)
        logs = workdir / "logs"
        agents = [AgentProcess(config, ["capture"], logs / "capture.log", env).start(),
                  AgentProcess(config, ["apply", "node2"], logs / "apply-node2.log", env).start(),
                  AgentProcess(config, ["apply", "node3-delayed"], logs / "apply-node3.log", env).start()]
        if maria is not None:
            agents.append(AgentProcess(config, ["apply", MARIADB_STANDBY], logs / "apply-node4.log", env).start())
        console.print(f"[green]✓[/] capture and {len(agents) - 1} appliers started (logs in {logs})")
        console.print(Rule(f"live replication for {seconds:g} s (node3 is {DELAY_S:g} s behind on purpose)"))
        cfg = load_config(config)
        deadline = time.monotonic() + seconds
        with Live(render(gather(cfg)), console=console, refresh_per_second=2) as live:
            while time.monotonic() < deadline:
                time.sleep(1)
                live.update(render(gather(cfg)))
        committed = workload.stop()
        workload = None
        console.print(f"workload stopped after {committed} transfers; waiting for node2 to catch up")
        console.print(render(_wait_caught_up(config, "node2", 60)))
        if maria is not None:
            _wait_caught_up(config, MARIADB_STANDBY, 60)
        console.print(Rule("the delayed standby: change its delay at run time"))
        _ark(config, "delay", "node3-delayed", "0", env=env)
        time.sleep(1.5)  # the applier's next heartbeat carries the new delay
        console.print(render(_wait_caught_up(config, "node3-delayed", 60)))
        _verify(nodes, env[PASSWORD_ENV], invariant, maria)
    finally:
        if workload is not None:
            workload.stop()
        for agent in agents:
            agent.stop()
        if not keep:
            for inst in nodes.values():
                if inst.is_running():
                    inst.stop()
            if maria is not None and maria.is_running():
                maria.stop()
            broker.stop()
            console.print("stopped Kafka and the databases (use --keep to leave them running)")


def _verify(nodes: dict[str, PgInstance], password: str, invariant: object, maria: MariaDBInstance | None) -> None:
    console.print(Rule("row-by-row comparison"))
    primary = nodes["node1"].dsn("bank", password=password)
    failures = []
    for name in ("node2", "node3"):
        standby = nodes[name].dsn("bank", password=password)
        for diff in compare_tables(primary, standby, ["public.accounts", "public.history"]):
            mark = "[green]equal[/]" if diff.equal else "[red]DIFFERENT[/]"
            console.print(f"{name} {diff.table}: {diff.standby_rows} rows {mark}")
            if not diff.equal:
                failures.append(json.dumps({"node": name, "table": diff.table}))
        total = total_balance(standby)
        console.print(f"{name} total balance {total} (invariant {invariant})")
        if total != invariant:
            failures.append(f"{name} balance {total}")
    if maria is not None:
        for table, columns in CROSS_ENGINE_COLUMNS.items():
            diff = compare_with_mariadb(primary, maria.connect_kwargs("public"), table, columns)
            mark = "[green]equal[/]" if diff.equal else "[red]DIFFERENT[/]"
            console.print(f"{MARIADB_STANDBY} {diff.table} ({', '.join(columns)}): {diff.standby_rows} rows {mark}")
            if not diff.equal:
                failures.append(json.dumps({"node": MARIADB_STANDBY, "table": diff.table}))
    if failures:
        raise ArkError(f"standbys differ from the primary: {', '.join(failures)}",
                       fix="this is a bug: keep the demo dir and report it with the logs")
    console.print("[bold green]standbys equal the primary, row by row[/]")
