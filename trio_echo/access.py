"""Who may connect (`--allow CIDR`, `--deny CIDR`), as ncat's `--allow`/`--deny` and socat's
`range=`: pure rules over addresses, asked by the TCP, TLS and HTTP accept path (about the
real client, after a trusted PROXY header) and by the UDP echo (about each datagram's source).

Deny wins; with any `--allow`, an address must match one; without either, everyone may. An
IPv4 client on a dual-stack socket (`::ffff:192.0.2.1`) is judged as the IPv4 address it is.
Unix sockets and in-memory streams (tests, embedding) have no address and are let in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AccessRules:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def allows(self, host: str) -> bool:
        """Whether a client at `host` (an address, as getpeername gives it) may be served."""
        address = _address(host)
        if address is None:
            return True
        if any(address in network for network in self.deny):
            return False
        return not self.allow or any(address in network for network in self.allow)


@lru_cache(maxsize=4096)
def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
