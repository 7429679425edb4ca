"""``bind ADDRESS|INTERFACE... { except ADDRESS... }``: the addresses a block listens on."""

from __future__ import annotations

import ipaddress
import socket

from kubernetai.corefile import Directive
from kubernetai.hostaddrs import interface_addresses
from kubernetai.plugin import SetupContext
from kubernetai.values import arg_count, check_known


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
