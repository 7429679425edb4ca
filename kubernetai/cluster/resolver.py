"""KubernetesResolver: one stanza's IResolver over its ClusterStore.

Zone match, ``records.answer``, then the outcome as Twisted understands it:
records; NODATA with the SOA; NXDOMAIN as ``NXDomain`` (the chain stops) or,
with ``fallthrough``, ``FallthroughNXDomain`` (the chain goes on).  A stanza
that has not synced answers SERVFAIL instead of a possibly false NXDOMAIN,
unless it falls through.  The resolver never calls the API.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet import defer
from twisted.names import common, dns

from kubernetai import outcome
from kubernetai.cluster import xfr
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.records import View, answer, negative_soa
from kubernetai.rr import owner_zone
from kubernetai.request import request_info
from kubernetai.cluster.store import ClusterStore
from kubernetai.zones import match_zone

__all__ = ["KubernetesResolver"]

MAX_CHASE = 8


class KubernetesResolver(common.ResolverBase):
    """The IResolver of one ``kubernetai`` stanza."""

    def __init__(self, opts: KubernetesOptions, store: ClusterStore, local_ips: Sequence[str] = ()) -> None:
        common.ResolverBase.__init__(self)
        self.opts = opts
        self.store = store
        self.view = View(store, opts, tuple(local_ips))
        # The server block's whole chain, to complete CNAMEs to names outside
        # our zones (CoreDNS's upstream); set once the block is built.
        self.upstream: Any = None
        self._chasing = 0

    @property
    def synced(self) -> bool:
        return self.store.synced

    def cache_version(self) -> tuple[int, bool]:
        """Our answers depend only on this (the server's answer cache checks it)."""
        return (self.store.generation, self.store.synced)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        qname = name.decode("ascii", "replace") + "." if name else "."
        zone = match_zone(qname.lower(), self.opts.zones)
        if zone is None or cls not in (dns.IN, dns.ANY):
            return defer.fail(outcome.NotMine(name))
        zone_q = owner_zone(qname, zone)
        ans = answer(self.view, qname, zone_q, type)
        if ans.refused:
            return defer.fail(outcome.Reply(dns.EREFUSED))
        authority = [negative_soa(self.view, zone_q)]
        if ans.name_error:
            if self.opts.fallthrough.through(qname.lower()):
                return defer.fail(outcome.FallthroughNXDomain(name, authority))
            if not self.store.synced:
                reason = f"{self.opts.name()}: not synced with its cluster yet"
                return defer.fail(outcome.Reply(dns.ESERVER, authority=authority, authoritative=True, reason=reason))
            return defer.fail(outcome.NXDomain(name, authority))
        if not ans.answers:
            return defer.succeed(([], authority, []))
        result = (list(ans.answers), [], list(ans.additional))
        if ans.chase:
            request_info.get().trace.cacheable = False  # completed through other resolvers
        if ans.chase and self.upstream is not None and self._chasing < MAX_CHASE:
            return self._chase(result, ans.chase, type)
        return defer.succeed(result)

    def transfer(self, zone: str, serial: int | None = None) -> list | None:
        """AXFR records of ``zone`` (as the query spells it), or None if not ours."""
        return xfr.transfer(self.view, zone, serial)

    @defer.inlineCallbacks
    def _chase(self, result: tuple, targets: Sequence[str], type: int) -> Any:
        """Complete CNAMEs to outside names through the rest of the server's chain."""
        answers, authority, additional = result
        self._chasing += 1
        try:
            for target in targets:
                try:
                    more, _, _ = yield self.upstream.query(dns.Query(target.rstrip("."), type, dns.IN))
                except Exception:
                    continue
                answers.extend(more)
        finally:
            self._chasing -= 1
        return (answers, authority, additional)
