"""``bench/rto.py --via service-address``: Ark's failover RTO as a client of the group's service address sees it.

The machine room (deploy/service_lan.py, the same as fault case F25): each Ark node is a host on one switch, a
network namespace of its own with one cable into a bridge; its PostgreSQL, its node agent, its applier and (on the
primary) its capture run inside it. The agents hold the service address (``service_address: {address, interface:
eth0}``: ``ip addr add`` + gratuitous ARP on the primary's host). The client is a host of its own on the switch
(bench/rto_client.py, in its namespace) and knows only the service address (``target_session_attrs=read-write``,
the short connect and TCP timeouts of service_lan.CLIENT_OPTIONS). The broker and ``ark controller --ttl 5`` stay in
the root namespace, plugged into the same switch.

The node dies: SIGKILL to every process of its namespace at once (PostgreSQL and its backends, the capture, the
applier, the agent). Its kernel stays up and keeps the service address on its ``eth0`` (nobody is left to release
it): the new primary's gratuitous ARP is what turns the client to it. The figure is the time from the kill to the
first acknowledged write through the service address (on the other node). Then the host "reboots", as in F25: the
address added by ``ip addr add`` is gone, its agent starts first (it fences the demoted node's data directory), its
database and applier start, and ``ark reinstate`` brings it back as a standby for the next run.

Where the time goes, per run, from the logs (wall-clock stamps, milliseconds): the controller's decision (``automatic
failover to X done in S s``: decided S s before that line), the failover done (fence, apply what Kafka holds,
promote), the new primary's agent holding the address (``service address ... held``), the client's first write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from continuity import DB, ark, say, summary, wait_until, work_dir  # bench/ is on sys.path when run as a script

from common.config import load_config
from deploy.agents import AgentProcess, Supervised
from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from deploy.service_lan import NodeLan
from deploy.workload import create_bank
from failover.view import HeartbeatView

logging.getLogger("common.service_address").setLevel(logging.ERROR)  # the bench's own 'released' (a reboot)

NODES = ("n1", "n2")
CLIENT = "client"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_DECIDED = re.compile(r"failing over to (\S+),")
_DONE = re.compile(r"automatic failover to (\S+) done in ")
#: The failover's steps, as ops/automation.py logs them when each ends.
STEPS = ("fenced", "applied", "promoted")


class ClientProcess:
    """bench/rto_client.py inside the client host's namespace; its acknowledged commits, read from its stdout."""

    def __init__(self, prefix: list[str], dsn: str, log: Path, identify_sql: str = "") -> None:
        env = {**os.environ, "ARK_RTO_DSN": dsn, "ARK_RTO_IDENTIFY_SQL": identify_sql}
        self._log = log.open("ab")
        self.proc = subprocess.Popen([*prefix, sys.executable, str(Path(__file__).with_name(
            "rto_client.py"))], stdout=subprocess.PIPE, stderr=self._log, env=env, text=True)
        #: (monotonic time, server) per acknowledged commit.
        self.acks: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="rto-client-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, server, _seq = line.split()
            with self._lock:
                self.acks.append((float(at), server))

    def count(self) -> int:
        with self._lock:
            return len(self.acks)

    def first_from(self, server: str, since: float) -> float | None:
        with self._lock:
            return min((at for at, who in self.acks if who == server and at >= since), default=None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        self._log.close()


def controller_says(view: HeartbeatView) -> str:
    view.refresh(0.2)
    beat = view.beats.get(("controller", "ctl"))
    return beat.message if beat is not None else ""


def ledger_max(net: NodeLan, node: str) -> int:
    import psycopg

    with psycopg.connect(net.pgs[node].dsn(DB), autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM history").fetchone()
    return int(row[0]) if row else 0


def caught_up(net: NodeLan, standby: str, target: int) -> bool:
    """Whether ``standby`` holds ledger seq ``target`` (taken once from the primary: the client keeps writing)."""
    try:
        return ledger_max(net, standby) >= target
    except Exception:  # noqa: BLE001 - a poll: a database still starting answers on the next one
        return False


def stamped(log: Path, pattern: re.Pattern[str], since_wall: float) -> tuple[float, re.Match[str]] | None:
    """The wall-clock time and match of the first line of ``log`` matching ``pattern`` stamped at or after
    ``since_wall`` (the log's stamps are local time with milliseconds: common/logs.py)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        stamp = _STAMP.match(line)
        found = pattern.search(line)
        if stamp and found:
            at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= since_wall - 0.001:
                return at, found
    return None


def milestones(logs: Path, target: str, died_wall: float) -> dict[str, float]:
    """Seconds after the death at which the controller decided to fail over to ``target``, and at which its failover
    had fenced the old epoch, applied what Kafka held and promoted (ops/automation.py logs each step as it ends);
    those it could read."""
    out: dict[str, float] = {}
    log = logs / "controller.log"
    decided = stamped(log, _DECIDED, died_wall)
    if decided is None or decided[1].group(1) != target:
        return out
    out["decided"] = decided[0] - died_wall
    for step in STEPS:
        found = stamped(log, re.compile(rf"failover:\s+{step}\s"), decided[0])
        if found is not None:
            out[step] = found[0] - died_wall
    return out


def watch_address(net: NodeLan, node: str, since: float, timeout: float) -> list[float]:
    """A thread that notes (in the returned list) when ``node``'s host first holds the service address, looking
    every 0.1 s (the agent logs its claim only after its gratuitous ARP, 2-3 s later)."""
    seen: list[float] = []

    def run() -> None:
        while time.monotonic() - since < timeout:
            if net.holds(node):
                seen.append(time.monotonic() - since)
                return
            time.sleep(0.1)

    threading.Thread(target=run, name="address-watch", daemon=True).start()
    return seen


def config_for(net: NodeLan, broker: KafkaBroker, path: Path) -> Path:
    def db(name: str) -> dict[str, Any]:
        return {"name": name, "engine": "postgresql", "host": net.pgs[name].host, "port": net.port, "dbname": DB,
                "user": "postgres"}

    doc = {"group": "rto-service", "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": ""},
           "primary": {**db("n1"), "tables": ["public.*"]}, "capture": {"batch_max_ms": 50}, "standbys": [db("n2")]}
    path.write_text(yaml.safe_dump(net.configure_doc(doc, broker.extra_bootstrap or ""), sort_keys=False))
    return path


def start_room(stack: contextlib.ExitStack, root: Path) -> tuple[NodeLan, KafkaBroker, Path]:
    """The switch, the broker on the root's address of it, the two databases, the bank synced to n2."""
    if os.geteuid() != 0:
        raise SystemExit("error: --via service-address needs root (network namespaces, a bridge, veth pairs)\n"
                         "fix: run it as root, or measure with --via conninfo")
    net = NodeLan(NODES, root / "nodes", clients=(CLIENT,))
    stack.callback(net.destroy)
    net.create()
    say(f"switch up: n1 {net.lan.addr('n1')}, n2 {net.lan.addr('n2')}, client {net.lan.addr(CLIENT)}, "
        f"service address {net.address}; starting the broker and the databases")
    broker = net.broker = KafkaBroker(root / "kafka", free_port(), free_port(),
                                      extra_listener=(net.lan.root_addr, free_port()))
    broker.start(timeout=180)
    net.start_databases()
    for inst in net.pgs.values():
        inst.create_database(DB)
    config = config_for(net, broker, root / "ark.yaml")
    create_bank(net.pgs["n1"].dsn(DB), accounts=100, ledger=True)
    ark(config, "sync", "n2")
    return net, broker, config


def run_ark_service_address(runs: int, ttl_s: float, keep: bool = False) -> dict[str, Any]:
    root = work_dir("ark-rto-service-")
    with contextlib.ExitStack() as stack:
        if keep:
            stack.callback(say, f"kept {root}")
        else:
            stack.callback(shutil.rmtree, root, True)  # registered first: runs after everything has stopped
        net, _broker, config = start_room(stack, root)
        logs = root / "logs"

        def agent(args: list[str], host: str, name: str) -> AgentProcess:
            proc = AgentProcess(config, args, logs / f"{name}.log", prefix=net.lan.prefix(host)).start()
            stack.callback(proc.stop)
            return proc

        for n in NODES:
            agent(["agent", n], n, f"agent-{n}")
            agent(["apply", n], n, f"apply-{n}")
        # The capture pinned to the primary's host (--node), restarted a second after it exits as its service
        # manager would; the bench stops supervising it before the host dies, and starts one on the new primary.
        capture = Supervised(AgentProcess(config, ["capture", "--node", "n1"], logs / "capture-n1.log",
                                          prefix=net.lan.prefix("n1")))
        stack.callback(lambda: capture.stop())
        controller = AgentProcess(config, ["controller", "--name", "ctl", "--ttl", str(ttl_s), "--window", "0",
                                           "--timeout", "120"], logs / "controller.log").start()
        stack.callback(controller.stop)
        wait_until(lambda: net.holders() == ["n1"], 90, "n1's agent to claim the service address")
        client = ClientProcess(net.lan.prefix(CLIENT), net.service_dsn(DB), logs / "client.log")
        stack.callback(client.stop)
        wait_until(lambda: client.count() >= 200, 90, "the client's first writes through the service address")
        view = HeartbeatView(load_config(config))
        primary, standby = "n1", "n2"
        rto: list[float] = []
        parts: dict[str, list[float]] = {k: [] for k in ("decided", *STEPS, "address_held", "first_write")}
        for i in range(runs):
            target = ledger_max(net, primary)
            wait_until(lambda: caught_up(net, standby, target), 180,  # noqa: B023
                       f"{standby} to hold every ledger row of {primary}")
            wait_until(lambda: controller_says(view).startswith(f"primary {primary} healthy"), 180,  # noqa: B023
                       f"the controller to see {primary} healthy")
            time.sleep(2)  # the standby's agent and applier have beaten since (as --via conninfo does)
            capture.unsupervise()
            died, died_wall = time.monotonic(), time.time()
            killed = net.kill_host(primary)
            held_at = watch_address(net, standby, died, 120)
            wait_until(lambda: client.first_from(standby, died) is not None, 180,  # noqa: B023
                       f"a write acknowledged by {standby} through the service address")
            first = (client.first_from(standby, died) or died) - died
            rto.append(first)
            capture = Supervised(AgentProcess(config, ["capture", "--node", standby], logs / f"capture-{standby}.log",
                                              prefix=net.lan.prefix(standby)))
            wait_until(lambda: stamped(logs / "controller.log", _DONE, died_wall) is not None, 120,  # noqa: B023
                       f"the controller to log the failover to {standby} done")
            wait_until(lambda: bool(held_at), 30, f"{standby} to hold the service address")  # noqa: B023
            seen = {**milestones(logs, standby, died_wall), "address_held": held_at[0], "first_write": first}
            for key, value in seen.items():
                parts[key].append(value)
            say(f"ark run {i + 1}/{runs}: {primary}'s host died ({len(killed)} processes killed); after: "
                + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in seen.items())
                + f" s; first write through the service address on {standby} {first:.2f} s after the death")
            back = time.monotonic()
            net.reboot_forgets_address(primary)
            agent(["agent", primary], primary, f"agent-{primary}-{i}")
            auto_conf = net.pgs[primary].datadir / "postgresql.auto.conf"
            wait_until(lambda: "default_transaction_read_only = 'on'" in auto_conf.read_text(), 90,  # noqa: B023
                       f"{primary}'s agent to fence its data directory")
            net.pgs[primary].start()
            agent(["apply", primary], primary, f"apply-{primary}-{i}")  # reinstate hands the node to its applier
            ark(config, "reinstate", primary, "--report", str(root / f"divergence-{i}.txt"))
            say(f"ark run {i + 1}/{runs}: {primary} back as a standby in {time.monotonic() - back:.1f} s")
            primary, standby = standby, primary
        return {"kill_to_first_write_s": summary(rto), "acknowledged": client.count(), "ttl_s": ttl_s,
                "after_death_p50_s": {k: round(statistics.median(v), 3) for k, v in parts.items() if v},
                "after_death_max_s": {k: round(max(v), 3) for k, v in parts.items() if v},
                "milestones_read": {k: len(v) for k, v in parts.items()}}
