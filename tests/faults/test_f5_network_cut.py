"""F5: a network cut between the standby's applier and the broker (network namespace + veth pairs).

The applier runs inside its own network namespace (``ip netns exec``) and reaches the world through
two veth pairs: one to the standby database, one to the broker. The broker has a second listener
on the host end of the broker link, advertised as that address; the standby PostgreSQL listens on
the host end of the database link. Capture and the workload stay on 127.0.0.1.

The cut is ``ip link set <host end of the broker link> down``: the namespace end loses carrier and
keeps its route, so the applier's packets to the broker vanish silently (TCP retransmits, then
timeouts), as with a cable or switch failure; the database link stays up. A blackhole route on the
host side keeps the broker's replies from leaking out of the default route meanwhile. After the
outage the link comes back up and the applier must resume by itself.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from deploy.postgres import PgInstance
from deploy.workload import BankWorkload
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, ledger_max, outage_seconds
from tests.support.replication import Group, Standby


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class _Namespace:
    """A network namespace with a database link (10.213.k.0/24) and a broker link (10.214.k.0/24)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:5]
        self.k = random.randint(1, 250)
        self.name = f"arkf5{tag}"
        self.db_host, self.kafka_host = f"10.213.{self.k}.1", f"10.214.{self.k}.1"
        self.db_if, self.kafka_if = f"f5d{tag}", f"f5k{tag}"  # host ends; namespace ends add "n"
        self.blackhole = f"10.214.{self.k}.0/24"

    def create(self) -> None:
        _ip("netns", "add", self.name)
        _ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        for host_if, net in ((self.db_if, "10.213"), (self.kafka_if, "10.214")):
            peer = host_if + "n"
            _ip("link", "add", host_if, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", self.name)
            _ip("addr", "add", f"{net}.{self.k}.1/24", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("netns", "exec", self.name, "ip", "addr", "add", f"{net}.{self.k}.2/24", "dev", peer)
            _ip("netns", "exec", self.name, "ip", "link", "set", peer, "up")
        _ip("route", "add", "blackhole", self.blackhole, "metric", "1000")

    def cut(self) -> None:
        _ip("link", "set", self.kafka_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.kafka_if, "up")

    def destroy(self) -> None:
        _ip("route", "del", "blackhole", self.blackhole, "metric", "1000", check=False)
        for host_if in (self.db_if, self.kafka_if):
            _ip("link", "del", host_if, check=False)
        _ip("netns", "del", self.name, check=False)

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("F5 needs root: it creates a network namespace and veth pairs")
    ns = _Namespace()
    try:
        ns.create()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        ns.destroy()
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.skip(f"F5 needs 'ip netns' and veth pairs, which failed here: {detail}")
    yield ns
    ns.destroy()


@pytest.mark.timeout(3600)
def test_f5_network_cut_between_applier_and_broker(netns, fresh_db, unique_group, ark_tmp,
                                                    fault_results_dir) -> None:
    runs, outage = fault_runs("F5", slow=True), outage_seconds()
    home = ark_tmp / "f5" / unique_group
    broker = KafkaBroker(home / "kafka", free_port(), free_port(), extra_listener=(netns.kafka_host, free_port()))
    standby_pg = PgInstance(home / "standby", free_port())
    group: Group | None = None
    try:
        broker.start(timeout=180)
        standby_pg.datadir.parent.mkdir(parents=True, exist_ok=True)
        standby_pg.datadir.parent.chmod(0o755)
        for d in (ark_tmp / "f5", home):
            d.chmod(0o755)
        standby_pg.init(extra_listen=(netns.db_host,))
        standby_pg.start()
        standby_pg.create_database(fresh_db.name)
        group = Group(unique_group, ark_tmp / "groups" / unique_group, broker.bootstrap, fresh_db.primary,
                      fresh_db.name, [Standby("standby", standby_pg, fresh_db.name)], capture_extra={"chunk_rows": 50})
        group.write_config()
        ns_config = _namespace_config(group.config, broker.extra_bootstrap or "", netns.db_host)
        invariant = bank_setup(group)
        group.start("capture")
        group.start("apply", "standby", config=ns_config, prefix=netns.prefix)
        workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
        standby = group.standby("standby").dsn
        with fault_case("F5", "network cut between applier and broker", standby, invariant,
                        fault_results_dir) as case:
            case.result.notes.append(f"outage {outage:g} s; veth + netns {netns.name}; initial catch-up "
                                     f"{converge(group, at_least=20, timeout=180):.1f} s")
            for _ in range(runs):
                time.sleep(1.0)
                netns.cut()
                try:
                    time.sleep(outage / 2)
                    mid, p_mid = ledger_max(standby), ledger_max(group.primary_dsn)
                    time.sleep(outage / 2)
                    end, p_end = ledger_max(standby), ledger_max(group.primary_dsn)
                finally:
                    netns.restore()
                # Proof that the cut was real: during its second half the standby (nearly) stood still
                # while the primary went on. Not exactly still: the applier may still commit the few
                # entries it had fetched before the cut.
                assert p_end > p_mid and end - mid <= (p_end - p_mid) // 20, \
                    f"standby went {mid} -> {end} during the cut while the primary went {p_mid} -> {p_end}"
                took = converge(group, timeout=300)
                case.result.notes.append(f"run {case.result.runs + 1}: in the cut's second half the standby went "
                                         f"{mid} -> {end} while the primary went {p_mid} -> {p_end}; caught up "
                                         f"{took:.1f} s after the link came back")
                case.result.runs += 1
            assert workload.stop() > 0
            case.finish(group)
        group.assert_agents_alive()
        case.result.assert_clean()
    finally:
        if group is not None:
            group.stop_all()
            slot = f"ark_{group.name}"
            fresh_db.primary.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
                                  f"WHERE slot_name = '{slot}' AND NOT active")
        broker.stop()
        standby_pg.destroy()


def _namespace_config(config: Path, bootstrap: str, db_host: str) -> Path:
    """The group's YAML as seen from inside the namespace: broker and standby at their veth addresses."""
    doc = yaml.safe_load(config.read_text())
    doc["kafka"]["bootstrap"] = bootstrap
    for standby in doc["standbys"]:
        standby["host"] = db_host
    path = config.with_name(config.stem + "-netns.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
