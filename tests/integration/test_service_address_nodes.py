"""The service address reaches the primary's database (issue 11): two database nodes as hosts on one switch, each
PostgreSQL inside its host's network namespace with the host's node agent (tests/support/service_lan.py).

The primary's agent claims the address, the standby's does not; a client that knows only the service address
writes, and every commit it gets acknowledged was taken by the primary's server (its ``cluster_name``); the
standby's server is never reached through the address. Topology of F25 (tests/faults/test_f25_service_address.py),
without the faults.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.faults import bank_setup
from tests.support.handover import AckClient
from tests.support.replication import Group, Standby, wait_for
from tests.support.service_lan import IDENTIFY_SQL, ServiceSampler, node_lan

NODES = ("primary", "standby")


@pytest.mark.timeout(600)
def test_a_client_of_the_service_address_reaches_the_primary_its_agent_claimed_it_for(ark_tmp: Path) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    home = ark_tmp / "svc" / name
    with node_lan(NODES, home / "nodes", kafka_home=home / "kafka") as net:
        broker = net.broker
        assert broker is not None
        dbname = f"d{uuid.uuid4().hex[:8]}"
        for inst in net.pgs.values():
            inst.create_database(dbname)
        group = Group(name, home / "group", "", net.pgs["primary"], dbname,
                      [Standby("standby", net.pgs["standby"], dbname)])
        client: AckClient | None = None
        sampler: ServiceSampler | None = None
        try:
            group.write_config()
            net.configure(group, broker.extra_bootstrap or "")
            bank_setup(group)
            for n in NODES:
                group.start("agent", n, name=f"agent-{n}", prefix=net.lan.prefix(n))
            wait_for(lambda: net.holders() == ["primary"], 60, "the primary's agent to claim the service address")
            client = AckClient(net.service_dsn(dbname), identify_sql=IDENTIFY_SQL).start()
            sampler = ServiceSampler({n: inst.dsn(dbname) for n, inst in net.pgs.items()},
                                     net.service_dsn(dbname, read_write=False), net.holders)
            wait_for(lambda: client.count() >= 30 and len(sampler.via) >= 10, 60,
                     "commits through the service address")
            client.stop()
            sampler.stop()
            assert {a.server for a in client.acks} == {"primary"}, client.error_kinds
            answered = {who for _at, who, _w in sampler.via}
            assert answered == {"primary"}, f"the service address answered from {answered}"
            assert not sampler.stray() and not sampler.doubly_held()
            assert not net.holds("standby"), "the standby's agent claimed the service address"
        finally:
            if sampler is not None:
                sampler.stop()
            if client is not None:
                client.stop()
            group.stop_all()
