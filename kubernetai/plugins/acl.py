"""``acl [ZONES...] { allow|block|filter|drop [type QTYPE...] [net SOURCE...] }``, as CoreDNS's acl.

Rules are tried in order; the first whose query types and source networks
match decides (``*`` or leaving one out matches all); no match allows.
``block`` answers REFUSED, ``filter`` an empty NOERROR, ``drop`` nothing.
Several ``acl`` directives may cover different zones (default: the block's).

The decision is the server's, made before any resolver and again before an
answer comes from the answer cache (whose key has no client address), so a
cached answer never reaches a client a rule refuses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs
from twisted.names import dns

from kubernetai.corefile import Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.plugin import SetupContext
from kubernetai.values import arg_count, zone_args
from kubernetai.zones import is_subdomain

ACTIONS = ("allow", "block", "filter", "drop")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen(repr=False)
class Rule(LazyRepr):
    action: str
    types: frozenset[int] = frozenset()  # empty: every type
    nets: tuple[Network, ...] = ()  # empty: every source

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, qtype: int) -> bool:
        if self.types and qtype not in self.types:
            return False
        if self.nets:
            return ip is not None and any(ip.version == n.version and ip in n for n in self.nets)
        return True


@attrs.frozen(repr=False)
class Policy(LazyRepr):
    zones: tuple[str, ...]
    rules: tuple[Rule, ...]


@attrs.define(repr=False)
class Acl(LazyRepr):
    """Every ``acl`` of a block: ``decide(client, qtype, lname)`` → allow, block, filter or drop."""

    policies: list[Policy] = attrs.Factory(list)

    def decide(self, host: str, qtype: int, lname: str) -> str:
        for policy in self.policies:
            if not any(is_subdomain(lname, z) for z in policy.zones):
                continue
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0]) if host else None
            except ValueError:
                ip = None
            if ip is not None and ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # a dual-stack socket's IPv4 client
            for rule in policy.rules:
                if rule.matches(ip, qtype):
                    return rule.action
        return "allow"


def _qtypes(d: Directive, names: Sequence[str]) -> frozenset[int]:
    types: set[int] = set()
    by_name = {v: k for k, v in dns.QUERY_TYPES.items()} | {"ANY": dns.ALL_RECORDS, "AXFR": dns.AXFR, "IXFR": dns.IXFR}
    for name in names:
        if name == "*":
            return frozenset()
        if name.upper() not in by_name:
            raise d.error(f"invalid query type {name!r}")
        types.add(by_name[name.upper()])
    return frozenset(types)


def _nets(d: Directive, sources: Sequence[str]) -> tuple[Network, ...]:
    nets: list[Network] = []
    for source in sources:
        if source == "*":
            return ()
        try:
            nets.append(ipaddress.ip_network(source if "/" in source else source, strict=False))
        except ValueError:
            raise d.error(f"invalid network {source!r} (want an address or CIDR)") from None
    return tuple(nets)


def parse_rule(d: Directive) -> Rule:
    if d.name not in ACTIONS:
        raise d.error(f"unknown action {d.name!r} (allowed: {', '.join(ACTIONS)})")
    types: list[str] = []
    sources: list[str] = []
    current: list[str] | None = None
    for arg in d.args:
        if arg == "type":
            current = types
        elif arg == "net":
            current = sources
        elif current is None:
            raise d.error(f"unexpected {arg!r}: want 'type QTYPE...' or 'net SOURCE...'")
        else:
            current.append(arg)
    if (types == [] and "type" in d.args) or (sources == [] and "net" in d.args):
        raise d.error("'type' and 'net' need at least one value ('*' for all)")
    return Rule(d.name, _qtypes(d, types), _nets(d, sources))


def setup(d: Directive, ctx: SetupContext) -> None:
    zones = zone_args(d, d.args) if d.args else ctx.zones
    if not d.children:
        arg_count(d, 0)
        raise d.error("acl needs a block with at least one rule (allow, block, filter or drop)")
    policy = Policy(zones, tuple(parse_rule(child) for child in d.children))
    if ctx.gate is None:
        ctx.gate = Acl()
    ctx.gate.policies.append(policy)
