"""The service address's settings and its command adapter (the IP adapter is proven with network namespaces in
tests/integration/test_service_address.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from common.service_address import (
    CommandAddress,
    IpAddress,
    ServiceAddressError,
    ServiceAddressSettings,
    service_address,
)


@pytest.mark.parametrize(("block", "problem"), [
    ({}, "give either address and interface"),
    ({"address": "10.0.0.100/24", "interface": "eth0", "claim_command": "x", "release_command": "y"},
     "not both"),
    ({"address": "10.0.0.100/24"}, "address and interface go together"),
    ({"address": "10.0.0.300/24", "interface": "eth0"}, "not an IP address"),
    ({"address": "10.0.0.100", "interface": "eth0"}, "needs its prefix length"),
    ({"claim_command": "x"}, "claim_command and release_command go together"),
    ({"claim_command": "x", "release_command": "y", "timeout_s": 0}, "greater than 0"),
])
def test_bad_settings_say_what_is_wrong(block: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError) as err:
        ServiceAddressSettings.model_validate(block)
    assert problem in str(err.value)


def test_the_ip_adapter_takes_the_node_s_own_interface_when_it_has_one() -> None:
    cfg = ServiceAddressSettings(address="10.0.0.100/24", interface="eth0", interfaces={"node3": "ens4"})
    one, three = service_address(cfg, node="node1", group="g"), service_address(cfg, node="node3", group="g")
    assert isinstance(one, IpAddress) and isinstance(three, IpAddress)
    assert (one.interface, three.interface, one.ip) == ("eth0", "ens4", "10.0.0.100")


def test_the_command_adapter_runs_the_commands_with_the_node_and_group(tmp_path: Path) -> None:
    flag = tmp_path / "held"
    cfg = ServiceAddressSettings(claim_command=f'echo "$ARK_GROUP $ARK_NODE" > {flag}',
                                 release_command=f"rm -f {flag}", check_command=f"test -e {flag}")
    addr = service_address(cfg, node="node2", group="bank")
    assert isinstance(addr, CommandAddress) and addr.held() is False
    addr.claim()
    assert addr.held() is True and flag.read_text() == "bank node2\n"
    addr.release()
    addr.release()
    assert addr.held() is False


def test_a_failing_or_hanging_command_is_an_error_naming_it(tmp_path: Path) -> None:
    failing = service_address(ServiceAddressSettings(claim_command="echo no route >&2; exit 3", release_command="true"),
                              node="n", group="g")
    with pytest.raises(ServiceAddressError) as err:
        failing.claim()
    assert "claim command" in err.value.message and "exited 3" in err.value.message and "no route" in err.value.message
    hanging = service_address(ServiceAddressSettings(claim_command="true", release_command="sleep 5", timeout_s=0.2),
                              node="n", group="g")
    with pytest.raises(ServiceAddressError) as err:
        hanging.release()
    assert "did not finish within 0.2 s" in err.value.message
    assert service_address(ServiceAddressSettings(claim_command="true", release_command="true"),
                           node="n", group="g").held() is None
