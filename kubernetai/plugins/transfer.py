"""``transfer [ZONES...] { to ADDRESS|CIDR|* ... }``: AXFR (and IXFR as AXFR) over TCP.

The first resolver in the block that is authoritative for the zone (a
``kubernetai`` stanza: its ``transfer()``) supplies the records.  Clients
not listed in ``to`` and transfers over UDP get REFUSED.  A zone nobody here
is authoritative for passes down the chain (and ends in SERVFAIL, as CoreDNS).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet import defer
from twisted.names import dns

from kubernetai import outcome
from kubernetai.changes import store_derived
from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.question import Question, ZoneResolver
from kubernetai.request import current_request
from kubernetai.values import arg_count, check_known, zone_args


class TransferResolver(ZoneResolver):
    plugin_name = "transfer"  # the ``plugin`` label of coredns_dns_responses_total

    def __init__(self, zones: tuple[str, ...], allowed: list) -> None:
        super().__init__()
        self.zones = zones
        self.allowed = allowed  # networks, or "*"
        self.upstream: Any = None  # the block's chain, to find transferers

    @store_derived  # a constant: never changes, so the answer cache trusts its change count
    def cache_version(self) -> tuple:
        """Other query types just pass through us (and transfers are never cached)."""
        return ()

    def permits(self, host: str) -> bool:
        if "*" in self.allowed:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.allowed if net != "*")

    def lookup_in_zone(self, q: Question, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        if type not in (dns.AXFR, dns.IXFR):
            return defer.fail(outcome.NotMine(name))
        info = current_request()
        if info.proto != "tcp" or not self.permits(info.host):
            return defer.fail(outcome.Reply(dns.EREFUSED))
        serial = info.ixfr_serial if type == dns.IXFR else None
        for resolver in getattr(self.upstream, "resolvers", ()):
            transfer = getattr(resolver, "transfer", None)
            if transfer is None:
                continue
            records = transfer(q.name, serial)
            if records is not None:
                return defer.succeed((records, [], []))
        return defer.fail(outcome.NotMine(name))


def setup(d: Directive, ctx: SetupContext) -> TransferResolver:
    ctx.once(d)
    zones = zone_args(d, d.args) or ctx.zones
    check_known(d, {"to"})
    allowed: list = []
    for child in d.children:
        for item in arg_count(child, 1):
            if item == "*":
                allowed.append("*")
                continue
            try:
                allowed.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise child.error(f"not an address, CIDR or '*': {item!r}") from None
    if not allowed:
        raise d.error("needs at least one 'to' address (or 'to *')")
    resolver = TransferResolver(zones, allowed)
    ctx.chain_users.append(resolver)
    return resolver
