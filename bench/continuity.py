"""Continuity: how long writes stop in a switchover and a failover, Ark against Patroni, on one machine.

One client, the same for both: ledger-bank transfers through ONE connection string that lists both nodes
with ``target_session_attrs=read-write`` (deploy/continuity.py), logging each acknowledged commit with its
time and the server that took it.

* **Ark** (Kafka broker + two PostgreSQL 15 instances, logical replication through Kafka):
  - switchover: ``ark switchover`` back and forth ``--runs`` times; write unavailability = last acknowledged
    write on the old primary to the first on the new one;
  - failover: kill -9 of the primary's postmaster, then at once ``ark failover``: seconds from the command to
    the first acknowledged write (and from the kill); then ``ark reinstate`` brings the old primary back as a
    standby for the next run.
* **Patroni** (Debian's ``patroni`` 3.0 and ``etcd-server`` 3.4, physical streaming replication, its default
  ``ttl`` 30 s / ``loop_wait`` 10 s):
  - switchover: ``patronictl switchover --candidate ... --force``, the same client measurement;
  - failover: the leader's node dies (kill -9 of its Patroni and of its postmaster; with Patroni alive, a
    crashed postmaster is only restarted in place): seconds from the kill to the first acknowledged write.
    Patroni decides by itself (after its ttl); Ark's failover is an operator's command (automatic failover
    is its own issue), so the Ark figure starts at the command.

    python bench/continuity.py [--runs 20] [--failover-runs 5] [--skip-patroni]

Figures and how to read them: bench/README.md ("Continuity").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml
from pg_vs_native import (  # bench/ is the script's directory, on sys.path when run as a script
    DB,
    ROOT,
    ark,
    say,
    start_cluster,
    wait_until,
    work_dir,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.agents import AgentProcess  # noqa: E402
from deploy.continuity import AckClient, multi_host_dsn  # noqa: E402
from deploy.ports import free_port  # noqa: E402
from deploy.postgres import PG_BIN  # noqa: E402
from deploy.workload import create_bank  # noqa: E402


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(statistics.median(values), 3), "max": round(max(values), 3),
            "min": round(min(values), 3)} if values else {"n": 0}


def first_ack_after(client: AckClient, port: int, since: float, timeout: float) -> float:
    """Seconds from ``since`` (monotonic) to the first acknowledged write on ``port`` after it."""
    def seen() -> bool:
        with client._lock:  # noqa: SLF001 - the bench reads the client's log directly
            return any(a.port == port and a.at >= since for a in client.acks)
    wait_until(seen, timeout, f"a write on port {port}")
    with client._lock:  # noqa: SLF001
        return min(a.at for a in client.acks if a.port == port and a.at >= since) - since


# -- Ark -----------------------------------------------------------------------------------------------------
def ark_two_nodes(stack: contextlib.ExitStack, root: Path, keep_logs: Path | None,
                  group: str) -> tuple[Any, dict[str, Any], Path]:
    """A broker and two PostgreSQL nodes n1 (primary, the ledger bank) and n2 (its Ark standby, synced): the
    broker, the nodes and the group's config."""
    # The benchmarks' machine room (bench/pg_vs_native.py): its primary and Ark standby are the two nodes; its
    # native subscriber has no part here and is stopped at once.
    broker, n1, native, n2 = start_cluster(stack, root, keep_logs)
    native.stop()
    nodes = {"n1": n1, "n2": n2}
    create_bank(n1.dsn(DB), accounts=100, ledger=True)

    def db(name: str) -> dict[str, Any]:
        return {"name": name, "engine": "postgresql", "host": "127.0.0.1", "port": nodes[name].port,
                "dbname": DB, "user": "postgres"}

    config = root / "ark.yaml"
    config.write_text(yaml.safe_dump({"group": group, "control_key": {"env": "ARK_CONTROL_KEY"},
                                      "kafka": {"bootstrap": broker.bootstrap},
                                      "primary": {**db("n1"), "tables": ["public.*"]},
                                      "capture": {"batch_max_ms": 50},
                                      "standbys": [db("n2")]}, sort_keys=False))
    ark(config, "sync", "n2")
    return broker, nodes, config


def run_ark(runs: int, failover_runs: int, keep_logs: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    root = work_dir("ark-continuity-ark-")
    with contextlib.ExitStack() as stack:
        broker, nodes, config = ark_two_nodes(stack, root, keep_logs, "continuity")
        agents = [AgentProcess(config, cmd, root / "logs" / f"{'-'.join(cmd)}.log").start()
                  for cmd in (["capture"], ["apply", "n1"], ["apply", "n2"])]
        for agent in agents:
            stack.callback(agent.stop)
        # History ids from the ledger: after a failover with the old primary gone, the new primary's sequences are
        # the stream's, up to about a second behind (README, "Sequences"); the measure must not depend on that.
        client = AckClient(multi_host_dsn([(nodes["n1"], DB), (nodes["n2"], DB)]), ids="ledger").start()
        stack.callback(client.stop)
        wait_until(lambda: client.count() >= 200, 60, "the client's first writes")
        time.sleep(5)  # the agents up and streaming
        primary, standby = "n1", "n2"
        gaps, took = [], []
        for i in range(runs):
            since = time.monotonic()
            ark(config, "switchover", standby, "--grace", "5")
            took.append(time.monotonic() - since)
            first_ack_after(client, nodes[standby].port, since, 60)
            gap = client.unavailability(nodes[primary].port, nodes[standby].port, since)
            gaps.append(gap if gap is not None else float("nan"))
            say(f"ark switchover {i + 1}/{runs} to {standby}: writes stopped {gaps[-1]:.2f} s; "
                f"command {took[-1]:.1f} s")
            primary, standby = standby, primary
            time.sleep(2)
        out["switchover_unavailability_s"] = summary(gaps)
        out["switchover_command_s"] = summary(took)

        from_command, from_kill = [], []
        for i in range(failover_runs):
            killed = time.monotonic()
            nodes[primary].kill9()
            since = time.monotonic()
            ark(config, "failover", standby, "--force")
            first = first_ack_after(client, nodes[standby].port, since, 120)
            from_command.append(first)
            from_kill.append(first + since - killed)
            say(f"ark failover {i + 1}/{failover_runs} to {standby}: first write {first:.2f} s after the command")
            nodes[primary].start()
            ark(config, "reinstate", primary, "--report", str(root / "logs" / f"divergence-{i}.txt"))
            primary, standby = standby, primary
            time.sleep(2)
        out["failover_command_to_first_write_s"] = summary(from_command)
        out["failover_kill_to_first_write_s"] = summary(from_kill)
        out["acknowledged"] = client.count()
    return out


# -- Patroni -------------------------------------------------------------------------------------------------
class Patroni:
    """etcd (one member) and two Patroni nodes on loopback, run as the postgres OS user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etcd_port, self.peer_port = free_port(), free_port()
        self.nodes = {name: {"pg": free_port(), "api": free_port()} for name in ("p1", "p2")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bank_made = False

    def _cfg(self, name: str) -> Path:
        home = self.root / name
        ports = self.nodes[name]
        doc = {
            "scope": "arkbench", "name": name,
            "restapi": {"listen": f"127.0.0.1:{ports['api']}", "connect_address": f"127.0.0.1:{ports['api']}"},
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {"postgresql": {"use_pg_rewind": True, "parameters": {
                    "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on"}}},
                "initdb": [{"encoding": "UTF8"}],
                "pg_hba": ["host replication replicator 127.0.0.1/32 trust", "host all all 127.0.0.1/32 trust",
                           "local all all trust"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{ports['pg']}", "connect_address": f"127.0.0.1:{ports['pg']}",
                "data_dir": str(home / "data"), "bin_dir": str(PG_BIN), "pgpass": str(home / "pgpass"),
                "authentication": {"replication": {"username": "replicator", "password": "rep"},
                                   "superuser": {"username": "postgres", "password": "pg"},
                                   "rewind": {"username": "postgres", "password": "pg"}},
                "parameters": {"unix_socket_directories": str(home)},
            },
        }
        home.mkdir(parents=True, exist_ok=True)
        shutil.chown(home, "postgres", "postgres")
        path = home / "patroni.yml"
        path.write_text(yaml.safe_dump(doc))
        shutil.chown(path, "postgres", "postgres")
        return path

    def start_etcd(self) -> None:
        data = self.root / "etcd"
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = (self.root / "etcd.log").open("wb")
        self.procs["etcd"] = subprocess.Popen(
            ["etcd", "--name", "e1", "--data-dir", str(data), "--listen-client-urls",
             f"http://127.0.0.1:{self.etcd_port}", "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"e1={peer}"],
            stdout=log, stderr=subprocess.STDOUT)

    def start(self, name: str) -> None:
        cfg = self._cfg(name)
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(["runuser", "-u", "postgres", "--", "patroni", str(cfg)],
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def dsn(self, name: str) -> tuple[str, int]:
        return "127.0.0.1", self.nodes[name]["pg"]

    def members(self) -> list[dict[str, Any]]:
        res = subprocess.run(["patronictl", "-c", str(self.root / "p1" / "patroni.yml"), "list", "-f", "json"],
                             capture_output=True, text=True, check=False)
        try:
            found: list[dict[str, Any]] = json.loads(res.stdout or "[]")
        except json.JSONDecodeError:
            return []
        return found

    def leader(self) -> str | None:
        return next((m["Member"] for m in self.members() if m.get("Role") == "Leader"), None)

    def healthy(self) -> bool:
        """A leader, and a replica that streams its WAL on the leader's timeline with no lag (and has the bank
        database, once made)."""
        members = self.members()
        leader = next((m for m in members if m.get("Role") == "Leader" and m.get("State") == "running"), None)
        replica = next((m for m in members if m.get("Role") in ("Replica", "Sync Standby")
                        and m.get("State") in ("streaming", "running") and m.get("Lag in MB") in (0, "0")), None)
        if leader is None or replica is None:
            return False
        if not self.bank_made:
            return True
        if replica.get("TL") != leader.get("TL"):
            return False
        host, port = self.dsn(replica["Member"])
        try:
            # 'running' with no lag is also what a rejoining replica shows before its pg_rewind: a leader killed then
            # leaves nobody to promote (seen twice in 23 runs of bench/rto_patroni.py).
            with psycopg.connect(f"host={host} port={port} dbname={DB} user=postgres connect_timeout=2") as conn:
                conn.execute("SELECT count(*) FROM accounts").fetchone()
                row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
        except psycopg.Error:
            return False
        return row is not None and row[0] == "streaming"

    def switchover(self, candidate: str) -> None:
        res = subprocess.run(["patronictl", "-c", str(self.root / "p1" / "patroni.yml"), "switchover",
                              "--candidate", candidate, "--force"], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"patronictl switchover failed: {res.stdout}\n{res.stderr}")

    def kill_node(self, name: str) -> None:
        """The node dies: its Patroni and its postmaster, kill -9."""
        proc = self.procs[name]
        pid_file = self.root / name / "data" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if postmaster:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for name, proc in self.procs.items():
            with contextlib.suppress(ProcessLookupError):
                if name == "etcd":
                    proc.terminate()
                else:
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        for name in ("p1", "p2"):  # a postmaster left behind by a kill
            pid_file = self.root / name / "data" / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def patroni_cluster(cluster: Patroni) -> Iterator[tuple[AckClient, dict[str, int]]]:
    """etcd, two Patroni nodes streaming, the bank made, and the client writing through both: (client, ports)."""
    cluster.root.mkdir(parents=True, exist_ok=True)
    cluster.root.chmod(0o755)
    try:
        say("patroni: starting etcd and two Patroni nodes (initdb, then a basebackup)")
        cluster.start_etcd()
        time.sleep(2)
        cluster.start("p1")
        wait_until(lambda: cluster.leader() == "p1", 120, "p1 to lead")
        cluster.start("p2")
        wait_until(cluster.healthy, 180, "the replica to stream")
        host, port = cluster.dsn("p1")
        with psycopg.connect(f"host={host} port={port} dbname=postgres user=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        create_bank(f"host={host} port={port} dbname={DB} user=postgres", accounts=100, ledger=True)
        cluster.bank_made = True
        wait_until(cluster.healthy, 120, "the replica to have the bank")
        ports = {n: cluster.dsn(n)[1] for n in ("p1", "p2")}
        dsn = (f"host=127.0.0.1,127.0.0.1 port={ports['p1']},{ports['p2']} dbname={DB} user=postgres "
               "target_session_attrs=read-write connect_timeout=2")
        client = AckClient(dsn, ids="ledger").start()
        try:
            wait_until(lambda: client.count() >= 200, 60, "the client's first writes")
            yield client, ports
        finally:
            client.stop()
    finally:
        cluster.stop()


def patroni_failovers(cluster: Patroni, client: AckClient, ports: dict[str, int], runs: int) -> list[float]:
    """The leader's node dies ``runs`` times (Patroni decides by itself): seconds from each kill to the first
    acknowledged write on the other node; the dead node is started again and rejoins as a replica each time."""
    firsts = []
    for i in range(runs):
        wait_until(cluster.healthy, 300, "a replica with no lag")
        leader = cluster.leader() or "p1"
        other = "p2" if leader == "p1" else "p1"
        killed = time.monotonic()
        cluster.kill_node(leader)
        first = first_ack_after(client, ports[other], killed, 180)
        firsts.append(first)
        say(f"patroni failover {i + 1}/{runs} to {other}: first write {first:.2f} s after the kill")
        cluster.start(leader)
    wait_until(cluster.healthy, 300, "the old leader back as a replica")
    return firsts


def run_patroni(root: Path, runs: int, failover_runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cluster = Patroni(root)
    with patroni_cluster(cluster) as (client, ports):
        gaps, took = [], []
        for i in range(runs):
            wait_until(cluster.healthy, 180, "a replica with no lag")
            leader = cluster.leader() or "p1"
            candidate = "p2" if leader == "p1" else "p1"
            since = time.monotonic()
            cluster.switchover(candidate)
            first_ack_after(client, ports[candidate], since, 120)
            took.append(time.monotonic() - since)
            gap = client.unavailability(ports[leader], ports[candidate], since)
            gaps.append(gap if gap is not None else float("nan"))
            say(f"patroni switchover {i + 1}/{runs} to {candidate}: writes stopped {gaps[-1]:.2f} s")
            wait_until(cluster.healthy, 180, "the old leader streaming again")
        out["switchover_unavailability_s"] = summary(gaps)
        out["failover_kill_to_first_write_s"] = summary(patroni_failovers(cluster, client, ports, failover_runs))
        out["acknowledged"] = client.count()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="switchovers per system")
    parser.add_argument("--failover-runs", type=int, default=5, help="failovers per system")
    parser.add_argument("--skip-patroni", action="store_true", help="measure Ark only")
    parser.add_argument("--skip-ark", action="store_true", help="measure Patroni only")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir for a post-mortem (Ark: agent and server logs; Patroni: all)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (agents, broker, instances) on a TERM too
    root = work_dir("ark-continuity-")
    results: dict[str, Any] = {}
    try:
        if not args.skip_ark:
            results["ark"] = run_ark(args.runs, args.failover_runs, root / "ark" if args.keep else None)
            print(json.dumps({"ark": results["ark"]}, indent=2), flush=True)
        if not args.skip_patroni:
            if shutil.which("patroni") is None or shutil.which("etcd") is None:
                say("patroni or etcd is not installed (apt-get install patroni etcd-server): skipped")
            else:
                results["patroni"] = run_patroni(root / "patroni", args.runs, args.failover_runs)
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
