"""This host's own addresses: for ``bind INTERFACE`` and, as CoreDNS, for NS records and their glue."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Sequence

__all__ = ["interface_addresses", "local_addresses", "own_addresses"]

SIOCGIFADDR = 0x8915


def interface_addresses(name: str) -> list[str]:
    """IPv4 and IPv6 addresses of a network interface (Linux), or []."""
    found: list[str] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            found.append(socket.inet_ntoa(packed[20:24]))
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5] == name:
                    addr = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
                    if not addr.is_link_local:
                        found.append(str(addr))
    except OSError:
        pass
    return found


def local_addresses() -> tuple[str, ...]:
    """Every non-loopback address of this host's interfaces."""
    out: list[str] = []
    for _, name in socket.if_nameindex():
        for addr in interface_addresses(name):
            if not ipaddress.ip_address(addr).is_loopback and addr not in out:
                out.append(addr)
    return tuple(out)


def own_addresses(bound: Sequence[str]) -> tuple[str, ...]:
    """The addresses NS records give, as CoreDNS: the bound ones (or, bound to none, every one of
    this host's), never a loopback one.  None may remain: the apex NS is then NODATA."""
    if not bound:
        return local_addresses()
    return tuple(a for a in bound if not ipaddress.ip_address(a.split("%", 1)[0]).is_loopback)
