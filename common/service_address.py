"""The group's service address: the one address clients use, held by whichever node is the primary.

One interface, two adapters, chosen by the config's ``service_address`` block:

* :class:`IpAddress` (``address`` + ``interface``): ``ip addr add ADDRESS dev IFACE`` on the node that becomes
  the primary, then gratuitous ARP (``arping -U``) so that the hosts and the router of the segment map the
  address to this node's MAC at once instead of when their ARP entries expire (typically 30-60 s, the time a
  client would keep sending to the old primary's MAC otherwise). ``ip addr del`` on the node that stops being
  the primary. Needs CAP_NET_ADMIN (root), ``iproute2`` and ``iputils-arping`` (deploy/bootstrap.sh installs them).
* :class:`CommandAddress` (``claim_command``, ``release_command``, optional ``check_command``): for load
  balancers, cloud floating IPs and DNS, whatever moves the address there. The commands run through the shell
  with ``ARK_NODE`` and ``ARK_GROUP`` in their environment; secrets they need come from their own environment or
  files, never from Ark's arguments.

Guarantees every adapter keeps:

* :meth:`ServiceAddress.claim` and :meth:`ServiceAddress.release` are idempotent: claiming an address already held
  and releasing one already gone succeed quietly, so a restarted agent can simply re-apply what the roles say.
* :meth:`ServiceAddress.release` is what a fencing node calls first: it is bounded in time (``timeout_s``) and it
  raises :class:`ServiceAddressError` when the address may still be held, so the caller never assumes it moved.
* Nothing here decides who holds the address: the node agent applies its role (the roles on the control topic),
  and only after the old primary is fenced does the new one claim it (ARCHITECTURE.md, "fence first").
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
from abc import ABC, abstractmethod

from pydantic import Field, model_validator

from common.errors import ArkError
from common.settings import Frozen

log = logging.getLogger(__name__)

#: Gratuitous ARP announcements sent after a claim (one a second: a switch that missed the first sees the next).
ARP_COUNT = 3


class ServiceAddressError(ArkError):
    """The address could not be claimed or released (the message names the command and what it said)."""


class ServiceAddressSettings(Frozen):
    """The ``service_address`` block of the config: an IP address on an interface, or three commands."""

    #: The address with its prefix length, e.g. ``10.0.0.100/24`` (the prefix of the segment it lives on).
    address: str | None = None
    #: The interface the address goes on, on every node (``interfaces`` overrides it per node).
    interface: str | None = None
    #: Per node: the interface name when it differs from ``interface`` (e.g. ``{node3: ens4}``).
    interfaces: dict[str, str] = Field(default_factory=dict)
    claim_command: str | None = None
    release_command: str | None = None
    #: Exit 0 when this node holds the address now (optional: without it, what Ark last did is assumed).
    check_command: str | None = None
    #: The longest any one command may take.
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> ServiceAddressSettings:
        ip_kind = self.address is not None or self.interface is not None
        command_kind = self.claim_command is not None or self.release_command is not None
        if ip_kind == command_kind:
            raise ValueError("give either address and interface (an IP address moved with 'ip addr' and announced "
                             "with arping) or claim_command and release_command (a load balancer, a cloud floating "
                             "IP), not both and not neither")
        if ip_kind:
            if self.address is None or self.interface is None:
                raise ValueError("address and interface go together, e.g. address: 10.0.0.100/24, interface: eth0")
            try:
                iface = ipaddress.ip_interface(self.address)
            except ValueError:
                raise ValueError(f"address {self.address!r} is not an IP address with its prefix length, e.g. "
                                 "10.0.0.100/24") from None
            if "/" not in self.address:
                raise ValueError(f"address {self.address!r} needs its prefix length (the segment's), e.g. "
                                 f"{iface.ip}/24: without it the kernel adds a /32 that other hosts may not route")
        elif self.claim_command is None or self.release_command is None:
            raise ValueError("claim_command and release_command go together")
        return self


class ServiceAddress(ABC):
    """Claim or release the group's service address on this node (see the module docstring)."""

    @abstractmethod
    def claim(self) -> None:
        """Hold the address on this node and announce it."""

    @abstractmethod
    def release(self) -> None:
        """Stop holding the address on this node."""

    @abstractmethod
    def held(self) -> bool | None:
        """True when this node holds the address now; None when that cannot be told."""

    @abstractmethod
    def describe(self) -> str:
        """The address and where it goes, for messages."""


def _run(argv: list[str] | str, timeout_s: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command; (exit code, its output, stripped). A command that does not finish in time is killed."""
    try:
        res = subprocess.run(argv, shell=isinstance(argv, str), capture_output=True, text=True, timeout=timeout_s,
                             env=env, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"did not finish within {timeout_s:g} s"
    except OSError as exc:
        return 127, str(exc)
    return res.returncode, (res.stdout + res.stderr).strip()


class IpAddress(ServiceAddress):
    """An IP address moved with ``ip addr`` and announced with gratuitous ARP (see the module docstring).

    ``netns`` runs the commands inside a network namespace (the tests give each node its own)."""

    def __init__(self, address: str, interface: str, *, timeout_s: float = 10.0, netns: str | None = None) -> None:
        self.address, self.interface, self.timeout_s = address, interface, timeout_s
        self.ip = str(ipaddress.ip_interface(address).ip)
        self._prefix = ["ip", "netns", "exec", netns] if netns else []

    def describe(self) -> str:
        return f"{self.address} on {self.interface}"

    def _ip(self, *args: str) -> tuple[int, str]:
        return _run([*self._prefix, "ip", *args], self.timeout_s)

    def held(self) -> bool | None:
        code, out = self._ip("-o", "addr", "show", "dev", self.interface)
        if code != 0:
            return None
        return any(word == self.address or word.split("/")[0] == self.ip for line in out.splitlines()
                   for word in line.split()[3:4])

    def claim(self) -> None:
        code, out = self._ip("addr", "add", self.address, "dev", self.interface)
        # Already held is success (idempotent); the messages differ between iproute2 versions, so ask the kernel.
        if code != 0 and self.held() is not True:
            raise ServiceAddressError(f"cannot add service address {self.describe()}: {out}",
                                      fix=f"check that {self.interface} exists on this node and that the agent runs "
                                          "as root (CAP_NET_ADMIN)")
        if ":" not in self.ip:  # IPv4: gratuitous ARP; IPv6 announces itself (unsolicited neighbour advertisement)
            code, out = _run([*self._prefix, "arping", "-U", "-c", str(ARP_COUNT), "-w", str(ARP_COUNT + 1),
                              "-I", self.interface, self.ip], self.timeout_s)
            if code not in (0, 1):  # 1: no reply, which an unsolicited announcement does not expect
                log.warning("service address %s claimed, but its gratuitous ARP failed (%s): clients may reach it only "
                            "when their ARP entries expire", self.describe(), out)
        log.warning("service address %s claimed by this node", self.describe())

    def release(self) -> None:
        code, out = self._ip("addr", "del", self.address, "dev", self.interface)
        if code != 0 and self.held() is not False:  # already gone is success (idempotent)
            raise ServiceAddressError(f"cannot remove service address {self.describe()}: {out}",
                                      fix="remove it by hand (ip addr del) before another node claims it")
        log.warning("service address %s released by this node", self.describe())


class CommandAddress(ServiceAddress):
    """The address moved by configured commands (see the module docstring)."""

    def __init__(self, settings: ServiceAddressSettings, *, node: str, group: str) -> None:
        self.settings, self.node, self.group = settings, node, group

    def describe(self) -> str:
        return f"the service address of group {self.group} (by command)"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "ARK_NODE": self.node, "ARK_GROUP": self.group}

    def _do(self, what: str, command: str) -> None:
        code, out = _run(command, self.settings.timeout_s, self._env())
        if code != 0:
            raise ServiceAddressError(f"the {what} command of the service address exited {code}: {out[-300:]}",
                                      fix=f"run it by hand with ARK_NODE={self.node} ARK_GROUP={self.group} and fix it")

    def claim(self) -> None:
        self._do("claim", self.settings.claim_command or "")

    def release(self) -> None:
        self._do("release", self.settings.release_command or "")

    def held(self) -> bool | None:
        if not self.settings.check_command:
            return None
        code, _out = _run(self.settings.check_command, self.settings.timeout_s, self._env())
        return code == 0


def service_address(settings: ServiceAddressSettings, *, node: str, group: str,
                    netns: str | None = None) -> ServiceAddress:
    """The adapter the settings name, for node ``node``."""
    if settings.address is not None and settings.interface is not None:
        return IpAddress(settings.address, settings.interfaces.get(node, settings.interface),
                         timeout_s=settings.timeout_s, netns=netns)
    return CommandAddress(settings, node=node, group=group)
