"""The service address moves with the primary role (issue 11): three hosts on one switch (network namespaces and a
bridge), a TCP service on two of them, a client on the third that only knows the service address.

Claimed on node1, the client reaches node1; released there and claimed on node2, the client reaches node2 within
a second or two, because the claim announces the move by gratuitous ARP (without it the client keeps sending to
node1's MAC until its ARP entry goes stale and is probed again: more than 10 s here, measured with the
announcement left out). Claim and release are idempotent, and a bad interface is a clear error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from common.service_address import IpAddress, ServiceAddressError
from tests.support.netlan import Lan

PORT = 7400
SERVER = ("import socket,sys\n"
          "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', int(sys.argv[2]))); s.listen(16)\n"
          "while True:\n"
          "    c,_=s.accept(); c.sendall(sys.argv[1].encode()); c.close()\n")
CLIENT = ("import socket,sys\n"
          "try:\n"
          "    c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.3); print(c.recv(64).decode())\n"
          "except OSError:\n"
          "    print('')\n")


@pytest.fixture
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates network namespaces, a bridge and veth pairs")
    net = Lan(["node1", "node2", "client"])
    try:
        net.create()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        net.destroy()
        pytest.skip(f"needs 'ip netns', bridges and veth pairs, which failed here: {exc}")
    servers = [subprocess.Popen([*net.prefix(h), sys.executable, "-c", SERVER, h, str(PORT)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for h in ("node1", "node2")]
    try:
        yield net
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(10)
        net.destroy()


def _ask(net: Lan, ip: str) -> str:
    res = subprocess.run([*net.prefix("client"), sys.executable, "-c", CLIENT, ip, str(PORT)], capture_output=True,
                         text=True, timeout=30, check=False)
    return res.stdout.strip()


def _first_answer_from(net: Lan, ip: str, host: str, timeout: float) -> float:
    """Seconds until the client, asking the service address, gets an answer from ``host``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _ask(net, ip) == host:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"the client did not reach {host} at {ip} within {timeout:g} s")


def test_the_service_address_moves_between_nodes_and_clients_follow_at_once(lan: Lan) -> None:
    address = lan.free_addr()
    ip = address.split("/")[0]
    on = {h: IpAddress(address, "eth0", netns=lan.ns(h)) for h in ("node1", "node2")}
    for h in ("node1", "node2"):  # both servers listen on their own address
        _first_answer_from(lan, lan.addr(h), h, 10)
    assert _ask(lan, ip) == "", "nobody holds the service address yet"

    on["node1"].claim()
    on["node1"].claim()  # idempotent
    assert on["node1"].held() is True and on["node2"].held() is False
    _first_answer_from(lan, ip, "node1", 10)

    on["node1"].release()
    on["node1"].release()  # idempotent
    on["node2"].claim()
    moved = _first_answer_from(lan, ip, "node2", 10)
    print(f"service address moved node1 -> node2: the client reached node2 after {moved:.2f} s")
    assert moved < 3.0, moved
    assert on["node1"].held() is False and on["node2"].held() is True


def test_a_missing_interface_is_a_clear_error(lan: Lan) -> None:
    bad = IpAddress(lan.free_addr(201), "nosuch0", netns=lan.ns("node1"))
    with pytest.raises(ServiceAddressError) as err:
        bad.claim()
    assert "nosuch0" in err.value.message and "exists on this node" in (err.value.fix or "")
