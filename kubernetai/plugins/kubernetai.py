"""``kubernetai [ZONES...] { OPTIONS }``: one Kubernetes cluster's records.

This is the stanza's place in the chain: its zones and ``fallthrough``.
Until a stanza has data from its cluster it is not synced, and answers as
CoreDNS does for an unsynced cluster: SERVFAIL for names in its zones, or,
with ``fallthrough``, passes them on so one dead cluster does not take the
others down.  Names outside its zones always go on to the next resolver.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer
from twisted.names import common

from kubernetai import outcome
from kubernetai.corefile import Directive
from kubernetai.fallthrough import Fallthrough
from kubernetai.plugin import SetupContext
from kubernetai.values import zone_args
from kubernetai.zones import match_zone, normalize

# Options of CoreDNS's kubernetes plugin that the stanza accepts today.
SUPPORTED = {"fallthrough"}


@attrs.define
class StanzaConfig:
    zones: tuple[str, ...]
    fallthrough: Fallthrough = Fallthrough()


@attrs.define
class KubernetesResolver(common.ResolverBase):
    """One stanza: the IResolver for one cluster's zones."""

    config: StanzaConfig
    synced: bool = False

    def __attrs_post_init__(self) -> None:
        common.ResolverBase.__init__(self)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        qname = normalize(name.decode("ascii", "replace"))
        if match_zone(qname, self.config.zones) is None:
            return defer.fail(outcome.NotMine(name))
        if self.config.fallthrough.through(qname):
            return defer.fail(outcome.NotMine(name))
        return defer.fail(outcome.ServerFailure(f"kubernetai {' '.join(self.config.zones)}: not synced with its cluster"))


def parse(d: Directive, block_zones: tuple[str, ...]) -> StanzaConfig:
    config = StanzaConfig(zone_args(d, d.args) or block_zones)
    for child in d.children:
        if child.name not in SUPPORTED:
            raise child.error(f"option {child.name!r} is not supported yet (supported: {', '.join(sorted(SUPPORTED))})")
        config.fallthrough = Fallthrough.parse(child)
    return config


def setup(d: Directive, ctx: SetupContext) -> KubernetesResolver:
    resolver = KubernetesResolver(parse(d, ctx.zones))
    ctx.server.readiness.add(f"kubernetai {' '.join(resolver.config.zones)}", lambda: resolver.synced)
    return resolver
