"""``any``: the RFC 8482 minimal answer to ANY queries, as CoreDNS's any plugin.

An ANY query gets one ``HINFO "ANY obsoleted" "See RFC 8482"`` record with
TTL 8482 instead of everything the name has (ANY answers are big and the
favourite of reflection attacks).  Other types pass on untouched.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.names import common, dns

from kubernetai import outcome
from kubernetai.changes import store_derived
from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.values import arg_count, no_block

TTL = 8482


class AnyResolver(common.ResolverBase):
    """Answers ANY itself; anything else is not its business."""

    plugin_name = "any"  # the ``plugin`` label of coredns_dns_responses_total

    @store_derived  # a constant: never changes, so the answer cache trusts its change count
    def cache_version(self) -> int:
        """Its answer depends on nothing: it never stops the answers after it from being cached."""
        return 0

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        if type != dns.ALL_RECORDS:
            return defer.fail(outcome.NotMine(name))
        hinfo = dns.Record_HINFO(b"ANY obsoleted", b"See RFC 8482", ttl=TTL)
        return defer.succeed(([dns.RRHeader(name, dns.HINFO, cls, TTL, hinfo)], [], []))


def setup(d: Directive, ctx: SetupContext) -> AnyResolver:
    ctx.once(d)
    arg_count(d, 0, 0)
    no_block(d)
    return AnyResolver()
