"""RTO of an automatic failover: the primary's node dies -> the first acknowledged write, Ark against Patroni.

One client for every system (deploy/continuity.py): ledger-bank transfers, logging each acknowledged commit with its
time and server. The figure is the time from the node's death to the first acknowledged write on the other node:
detection, decision, promotion and the client's reconnection, with no operator anywhere. How the client finds the
primary (``--via``):

* ``conninfo`` (the default): ONE connection string that lists both nodes with ``target_session_attrs=read-write``;
  every process on the machine's loopback. Runs anywhere, and is how Patroni is measured too (same client).
* ``service-address``: the issue's own definition (bench/rto_service.py, bench/rto_patroni.py). Each node a host in a
  network namespace of its own on one switch, the client in its own, knowing only the service address: Ark's agents
  move it, Patroni's callbacks (``on_role_change``: ``ip addr`` + ``arping``) move it for Patroni. The node dies by
  SIGKILL to every process of its namespace (PostgreSQL, and Ark's capture, applier and agent, or Patroni). Needs
  root.

* **Ark** (``--via conninfo``): a Kafka broker, two PostgreSQL 15 nodes, the capture (supervised: restarted a second
  after it exits, as systemd's ``Restart=always`` on another host would), an applier per node, and ``ark controller
  --ttl 5`` (``--window 0``: the anti-flapping window would otherwise refuse the second run, by design). The node
  dies: kill -9 of its postmaster, its capture and its applier. After the first write, the dead node is started again
  and ``ark reinstate`` brings it back as a standby for the next run.
* **Patroni** (Debian's ``patroni`` 3.0 and ``etcd-server`` 3.4, physical streaming replication), twice: with its
  defaults (``ttl`` 30 s, ``loop_wait`` 10 s, ``retry_timeout`` 10 s) and tuned as far as its documentation allows
  (``ttl`` 20 s, its minimum; ``loop_wait`` 1 s; ``retry_timeout`` 5 s; the rule loop_wait + 2 x retry_timeout <=
  ttl holds). The node dies (``conninfo``): kill -9 of its Patroni and its postmaster; it is started again after
  the first write and rejoins as a replica (pg_rewind).

    python bench/rto.py [--via conninfo|service-address] [--runs 20] [--skip-patroni] [--skip-ark]
                        [--patroni both|defaults|tuned] [--keep]

Figures and how to read them: bench/README.md ("RTO").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from continuity import (  # bench/ is the script's directory, on sys.path when run as a script
    DB,
    Patroni,
    ark,
    ark_two_nodes,
    first_ack_after,
    patroni_cluster,
    patroni_failovers,
    say,
    summary,
    wait_until,
    work_dir,
)
from rto_patroni import run_patroni_service_address
from rto_service import run_ark_service_address

from common.config import load_config
from deploy.agents import AgentProcess, Supervised
from deploy.continuity import AckClient, multi_host_dsn
from failover.view import HeartbeatView

TTL_S = 5.0
TUNED = {"ttl": 20, "loop_wait": 1, "retry_timeout": 5}


def controller_says(view: HeartbeatView) -> str:
    view.refresh(0.2)
    beat = view.beats.get(("controller", "ctl"))
    return beat.message if beat is not None else ""


def run_ark(runs: int) -> dict[str, Any]:
    root = work_dir("ark-rto-ark-")
    with contextlib.ExitStack() as stack:
        say("ark: starting the Kafka broker and two PostgreSQL instances")
        _broker, nodes, config = ark_two_nodes(stack, root, None, "rto")
        logs = root / "logs"
        capture = Supervised(AgentProcess(config, ["capture"], logs / "capture.log"))
        stack.callback(capture.stop)
        appliers = {n: AgentProcess(config, ["apply", n], logs / f"apply-{n}.log").start() for n in nodes}
        for agent in appliers.values():
            stack.callback(agent.stop)
        controller = AgentProcess(config, ["controller", "--name", "ctl", "--ttl", str(TTL_S), "--window", "0",
                                           "--timeout", "120"], logs / "controller.log").start()
        stack.callback(controller.stop)
        view = HeartbeatView(load_config(config))
        client = AckClient(multi_host_dsn([(nodes["n1"], DB), (nodes["n2"], DB)]), ids="ledger").start()
        stack.callback(client.stop)
        wait_until(lambda: client.count() >= 200, 60, "the client's first writes")
        primary, standby = "n1", "n2"
        rto: list[float] = []
        for i in range(runs):
            wait_until(lambda: controller_says(view).startswith(f"primary {primary} healthy"), 180,  # noqa: B023
                       f"the controller to see {primary} healthy")
            time.sleep(2)  # the standby streaming, the capture vouching for the primary
            killed = time.monotonic()
            nodes[primary].kill9()
            capture.agent.kill9()
            appliers[primary].kill9()
            first = first_ack_after(client, nodes[standby].port, killed, 120)
            rto.append(first)
            say(f"ark run {i + 1}/{runs}: {primary} died, first write on {standby} {first:.2f} s later "
                f"(controller: {controller_says(view)[:100]})")
            wait_until(lambda: controller_says(view).startswith(f"primary {standby} healthy"), 180,  # noqa: B023
                       f"the controller to see {standby} healthy")
            nodes[primary].start()
            appliers[primary].start()  # reinstate hands the node to its applier: it must be running
            ark(config, "reinstate", primary, "--report", str(root / f"divergence-{i}.txt"))
            primary, standby = standby, primary
        return {"kill_to_first_write_s": summary(rto), "acknowledged": client.count(), "ttl_s": TTL_S}


def run_patroni_failovers(cluster: Patroni, runs: int) -> dict[str, Any]:
    with patroni_cluster(cluster) as (client, ports):
        return {"kill_to_first_write_s": summary(patroni_failovers(cluster, client, ports, runs)),
                "acknowledged": client.count()}


class TunedPatroni(Patroni):
    """Patroni with the shortest detection its documentation allows."""

    def _cfg(self, name: str) -> Path:
        path = super()._cfg(name)
        doc = yaml.safe_load(path.read_text())
        doc["bootstrap"]["dcs"].update(TUNED)
        path.write_text(yaml.safe_dump(doc))  # the file keeps its owner (postgres)
        return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--via", choices=("conninfo", "service-address"), default="conninfo",
                        help="how Ark's client finds the primary: a multi-host connection string (default; no root "
                             "needed, the same client as Patroni's) or only the service address its agents move "
                             "(network namespaces: needs root)")
    parser.add_argument("--runs", type=int, default=20, help="node deaths per system")
    parser.add_argument("--skip-patroni", action="store_true", help="measure Ark only")
    parser.add_argument("--skip-ark", action="store_true", help="measure Patroni only")
    parser.add_argument("--patroni", choices=("both", "defaults", "tuned"), default="both",
                        help="which Patroni settings to measure (default: both)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data) for a post-mortem")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (agents, broker, instances) on a TERM too
    root = Path(tempfile.mkdtemp(prefix="ark-rto-", dir="/tmp"))
    root.chmod(0o755)
    (root / "pg").mkdir()
    (root / "pg").chmod(0o755)
    results: dict[str, Any] = {}
    try:
        if not args.skip_ark:
            results["ark"] = (run_ark(args.runs) if args.via == "conninfo"
                              else run_ark_service_address(args.runs, TTL_S, args.keep))
            results["ark"]["via"] = args.via
            print(json.dumps({"ark": results["ark"]}, indent=2), flush=True)
        if not args.skip_patroni:
            if shutil.which("patroni") is None or shutil.which("etcd") is None:
                say("patroni or etcd is not installed (apt-get install patroni etcd-server): skipped")
            elif args.via == "service-address" and shutil.which("setpriv") is None:
                say("setpriv is not installed (apt-get install util-linux; Patroni's address callback needs it): "
                    "Patroni skipped")
            else:
                if args.via == "service-address":
                    if args.patroni in ("both", "defaults"):
                        results["patroni_defaults"] = run_patroni_service_address(root / "patroni", args.runs, None)
                        print(json.dumps({"patroni_defaults": results["patroni_defaults"]}, indent=2), flush=True)
                    if args.patroni in ("both", "tuned"):
                        results["patroni_tuned"] = run_patroni_service_address(root / "patroni-tuned", args.runs,
                                                                               TUNED)
                elif args.patroni in ("both", "defaults"):
                    results["patroni_defaults"] = run_patroni_failovers(Patroni(root / "patroni"), args.runs)
                    print(json.dumps({"patroni_defaults": results["patroni_defaults"]}, indent=2), flush=True)
                if args.via == "conninfo" and args.patroni in ("both", "tuned"):
                    results["patroni_tuned"] = run_patroni_failovers(TunedPatroni(root / "patroni-tuned"), args.runs)
                    results["patroni_tuned"]["settings"] = TUNED
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
