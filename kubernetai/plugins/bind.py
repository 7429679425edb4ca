"""``bind ADDRESS|INTERFACE... { except ADDRESS... }``: the addresses a block listens on."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.values import arg_count, check_known

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


def resolve(d: Directive, item: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(item))]
    except ValueError:
        pass
    names = {n for _, n in socket.if_nameindex()}
    if item not in names:
        raise d.error(f"not a valid IP address or interface name: {item!r}")
    addrs = interface_addresses(item)
    if not addrs:
        raise d.error(f"interface {item!r} has no usable address")
    return addrs


def setup(d: Directive, ctx: SetupContext) -> None:
    check_known(d, {"except"})
    addrs: list[str] = []
    for item in arg_count(d, 1):
        addrs.extend(resolve(d, item))
    excluded: set[str] = set()
    for child in d.children:
        for item in arg_count(child, 1):
            excluded.update(resolve(child, item))
    for a in addrs:
        if a not in excluded and a not in ctx.bind:
            ctx.bind.append(a)
    if not ctx.bind:
        raise d.error("every address is excluded")
