"""``bench/rto.py --via service-address``, Patroni's part: the same switch, the same client, the same death as Ark's.

Patroni's documented way to move an address: its callbacks (``postgresql.callbacks``: ``on_start``, ``on_stop``,
``on_role_change``, each run as ``SCRIPT ACTION ROLE SCOPE``). The script here adds the address on the node that
becomes the leader (``ip addr add`` then ``arping -U``, the gratuitous ARP Ark's agent sends too) and removes it
everywhere else. Patroni runs as the postgres OS user, which may not change addresses: it is started with the
ambient capabilities ``CAP_NET_ADMIN`` and ``CAP_NET_RAW`` (``setpriv --ambient-caps``, what systemd's
``AmbientCapabilities=`` gives a unit), which its callbacks inherit; a deployment may use sudo instead (Patroni's
documentation). File capabilities on a copy of ``ip`` (``setcap``) were tried first: this machine ignores them.

Each Patroni node is a host in a network namespace of its own (deploy/netlan.py ``Lan``): its Patroni and its
PostgreSQL run there, PostgreSQL listening on every address of the host and on the same port everywhere; etcd stays
in the root namespace, plugged into the switch, as does ``patronictl``. The client is bench/rto_client.py in a host
of its own, knowing only the address; it tells the servers apart by their data directory (Patroni sets every
server's ``cluster_name`` to the scope). The node dies as Ark's does: SIGKILL to every process of its namespace
(its Patroni, its PostgreSQL); its kernel keeps the address. The host then "reboots" (the address is gone), its
Patroni starts again and rejoins as a replica (pg_rewind).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml
from continuity import DB, Patroni, say, summary, wait_until

from deploy.netlan import Lan, ip
from deploy.ports import free_port
from deploy.service_lan import CLIENT_OPTIONS
from deploy.workload import create_bank

CLIENT = "client"
IDENTIFY_BY_DATA_DIR = r"SELECT regexp_replace(current_setting('data_directory'), '^.*/([^/]+)/data$', '\1')"

_CALLBACK = """#!/bin/sh
# Patroni callback (bench/rto_patroni.py): $1 the action, $2 the role, $3 the scope.
case "$1:$2" in
  on_start:master|on_start:primary|on_role_change:master|on_role_change:primary|on_restart:master|on_restart:primary)
    ip addr add {address} dev eth0 2>/dev/null || true
    arping -U -c 3 -w 4 -I eth0 {vip} >/dev/null 2>&1 || true ;;
  *)
    ip addr del {address} dev eth0 2>/dev/null || true ;;
esac
"""


class AddressPatroni(Patroni):
    """etcd in the root namespace and two Patroni nodes, each in its host's namespace, moving the address with their
    callbacks (see the module docstring). ``dcs`` overrides the bootstrap DCS settings (ttl, loop_wait, ...)."""

    def __init__(self, root: Path, dcs: dict[str, Any] | None = None) -> None:
        super().__init__(root)
        self.dcs = dict(dcs or {})
        self.lan = Lan(["p1", "p2", CLIENT], root_port=True)
        self.pg_port, self.api_port = free_port(), free_port()
        self.nodes = {name: {"pg": self.pg_port, "api": self.api_port} for name in ("p1", "p2")}

    @property
    def address(self) -> str:
        return self.lan.free_addr()

    @property
    def vip(self) -> str:
        return self.address.split("/")[0]

    def create(self) -> None:
        self.lan.create()
        bin_dir = self.root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        bin_dir.chmod(0o755)
        script = bin_dir / "vip-callback.sh"
        script.write_text(_CALLBACK.format(address=self.address, vip=self.vip))
        script.chmod(0o755)

    def _cfg(self, name: str) -> Path:
        path = super()._cfg(name)
        doc = yaml.safe_load(path.read_text())
        addr, subnet = self.lan.addr(name), f"{self.lan.subnet}.0/24"
        doc["restapi"] = {"listen": f"{addr}:{self.api_port}", "connect_address": f"{addr}:{self.api_port}"}
        doc["etcd3"] = {"hosts": f"{self.lan.root_addr}:{self.etcd_port}"}
        doc["bootstrap"]["dcs"].update(self.dcs)
        doc["bootstrap"]["pg_hba"] += [f"host replication replicator {subnet} trust", f"host all all {subnet} trust",
                                       "host all all ::1/128 trust"]
        doc["postgresql"]["listen"] = f"*:{self.pg_port}"
        doc["postgresql"]["connect_address"] = f"{addr}:{self.pg_port}"
        doc["postgresql"]["use_unix_socket"] = True  # its own sessions: listening on '*' would send them to localhost
        script = str(self.root / "bin" / "vip-callback.sh")
        doc["postgresql"]["callbacks"] = {"on_start": script, "on_stop": script, "on_role_change": script,
                                          "on_restart": script}
        path.write_text(yaml.safe_dump(doc))  # the file keeps its owner (postgres)
        return path

    def start_etcd(self) -> None:
        data = self.root / "etcd"
        peer = f"http://127.0.0.1:{self.peer_port}"
        client_url = f"http://{self.lan.root_addr}:{self.etcd_port}"
        log = (self.root / "etcd.log").open("wb")
        self.procs["etcd"] = subprocess.Popen(
            ["etcd", "--name", "e1", "--data-dir", str(data), "--listen-client-urls", client_url,
             "--advertise-client-urls", client_url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"e1={peer}"], stdout=log, stderr=subprocess.STDOUT)

    def start(self, name: str) -> None:
        cfg = self._cfg(name)
        log = (self.root / f"{name}.log").open("ab")
        as_postgres = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--inh-caps",
                       "+net_admin,+net_raw", "--ambient-caps", "+net_admin,+net_raw", "--"]
        self.procs[name] = subprocess.Popen([*self.lan.prefix(name), *as_postgres, "patroni", str(cfg)], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def dsn(self, name: str) -> tuple[str, int]:
        return self.lan.addr(name), self.pg_port

    def holds(self, name: str) -> bool:
        out = ip("-n", self.lan.ns(name), "-o", "addr", "show", "dev", "eth0", check=False).stdout
        return f" {self.address} " in out

    def kill_node(self, name: str) -> None:
        """The host dies: SIGKILL to every process of its namespace (its kernel keeps the address)."""
        pids = subprocess.run(["ip", "netns", "pids", self.lan.ns(name)], capture_output=True, text=True,
                              check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.procs[name].wait(10)

    def reboot_forgets_address(self, name: str) -> None:
        ip("-n", self.lan.ns(name), "addr", "del", self.address, "dev", "eth0", check=False)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for name in ("p1", "p2"):
                self.kill_node(name)
            self.lan.destroy()


def run_patroni_service_address(root: Path, runs: int, dcs: dict[str, Any] | None) -> dict[str, Any]:
    from rto_service import ClientProcess

    cluster = AddressPatroni(root, dcs)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    try:
        cluster.create()
        say(f"patroni: switch up, address {cluster.address}; starting etcd and two Patroni nodes")
        cluster.start_etcd()
        time.sleep(2)
        cluster.start("p1")
        wait_until(lambda: cluster.leader() == "p1", 180, "p1 to lead")
        cluster.start("p2")
        wait_until(cluster.healthy, 240, "the replica to stream")
        host, port = cluster.dsn("p1")
        with psycopg.connect(f"host={host} port={port} dbname=postgres user=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        create_bank(f"host={host} port={port} dbname={DB} user=postgres", accounts=100, ledger=True)
        cluster.bank_made = True
        wait_until(cluster.healthy, 120, "the replica to have the bank")
        wait_until(lambda: cluster.holds("p1"), 60, "p1's callback to add the address")
        dsn = (f"host={cluster.vip} port={cluster.pg_port} dbname={DB} user=postgres {CLIENT_OPTIONS} "
               "target_session_attrs=read-write")
        client = ClientProcess(cluster.lan.prefix(CLIENT), dsn, root / "client.log", IDENTIFY_BY_DATA_DIR)
        try:
            wait_until(lambda: client.count() >= 200, 90, "the client's first writes through the address")
            firsts: list[float] = []
            held: list[float] = []
            stopped = ""
            for i in range(runs):
                wait_until(cluster.healthy, 300, "a replica with no lag")
                leader = cluster.leader() or "p1"
                other = "p2" if leader == "p1" else "p1"
                wait_until(lambda: cluster.holds(leader), 60, f"{leader} to hold the address")  # noqa: B023
                died = time.monotonic()
                cluster.kill_node(leader)
                seen: list[float] = []

                def watch(node: str = other, since: float = died, out: list[float] = seen) -> None:
                    while time.monotonic() - since < 180 and not out:
                        if cluster.holds(node):
                            out.append(time.monotonic() - since)
                        time.sleep(0.1)

                threading.Thread(target=watch, daemon=True).start()
                try:
                    wait_until(lambda: client.first_from(other, died) is not None, 180,  # noqa: B023
                               f"a write acknowledged by {other} through the address")
                except TimeoutError as exc:  # the figures so far, and what stopped them, instead of nothing
                    say(f"patroni run {i + 1}/{runs}: {exc}; members: {cluster.members()}; address on "
                        f"{[n for n in ('p1', 'p2') if cluster.holds(n)]}: stopping here")
                    stopped = f"run {i + 1}: {exc}"
                    break
                first = (client.first_from(other, died) or died) - died
                firsts.append(first)
                wait_until(lambda: bool(seen), 30, f"{other} to hold the address")  # noqa: B023
                held.append(seen[0])
                say(f"patroni run {i + 1}/{runs}: {leader}'s host died; address on {other} after {seen[0]:.2f} s, "
                    f"first write through it {first:.2f} s after the death")
                cluster.reboot_forgets_address(leader)
                cluster.start(leader)
            if not stopped:
                wait_until(cluster.healthy, 300, "the old leader back as a replica")
            return {"kill_to_first_write_s": summary(firsts), "acknowledged": client.count(), "stopped": stopped,
                    "address_held_after_death_p50_s": round(statistics.median(held), 3) if held else None,
                    "via": "service-address", "settings": dict(dcs or {})}
        finally:
            client.stop()
    finally:
        cluster.stop()
