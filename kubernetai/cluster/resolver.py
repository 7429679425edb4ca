"""KubernetesResolver: one stanza's IResolver over its ClusterStore.

Zone match, ``records.answer``, then the outcome as Twisted understands it:
records; NODATA with the SOA; NXDOMAIN as ``NXDomain`` (the chain stops) or,
with ``fallthrough``, ``FallthroughNXDomain`` (the chain goes on).  A stanza
that has not synced answers SERVFAIL instead of a possibly false NXDOMAIN,
unless it falls through.  The resolver never calls the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.names import common, dns

from kubernetai import outcome
from kubernetai.changes import store_derived
from kubernetai.cluster import xfr
from kubernetai.cluster.lookup import NoSuchName, View
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.records import answer, max_records, negative_soa
from kubernetai.cluster.short import short_answer
from kubernetai.cluster.store import ClusterStore
from kubernetai.question import Question, ZoneResolver
from kubernetai.request import MAX_CHASE_DEPTH, RequestInfo, ask_chain, current_request
from kubernetai.wire import MAX_UDP_PAYLOAD
from kubernetai.zones import match_zone

__all__ = ["KubernetesResolver"]


class KubernetesResolver(ZoneResolver):
    """The IResolver of one ``kubernetai`` stanza."""

    plugin_name = "kubernetai"  # the ``plugin`` label of coredns_dns_responses_total

    def __init__(self, opts: KubernetesOptions, store: ClusterStore, local_ips: Sequence[str] = ()) -> None:
        ZoneResolver.__init__(self)
        self.zones = opts.zones
        self.opts = opts
        self.store = store
        self.view = View(store, opts, tuple(local_ips))
        # The server block's whole chain, to complete CNAMEs to names outside
        # our zones (CoreDNS's upstream); set once the block is built.
        self.upstream: Any = None

    @property
    def synced(self) -> bool:
        return self.store.synced

    @property
    def cluster_name(self) -> str:
        """The stanza's name (``name NAME``, or its default), the ``cluster`` label of our metrics."""
        return self.opts.name()

    def down_since(self) -> float | None:
        """Since when the data's source has been unreachable; None: it is not (nothing watches a bare store)."""
        return None

    @store_derived
    def cache_version(self) -> tuple[int, int]:
        """Our answers depend only on this (the server's answer cache checks it)."""
        return (self.store.generation, self.store.sync_epoch)

    def lookup_in_zone(self, q: Question, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        if cls != dns.IN:
            return defer.fail(outcome.NotMine(name))
        got = self.decide(q, name, type, current_request())
        if isinstance(got, defer.Deferred):
            return got
        if isinstance(got, Exception):
            return defer.fail(got)
        return defer.succeed(got)

    @classmethod
    def direct_ok(cls) -> bool:
        """Whether a chain may call ``decide`` instead of ``query``: nothing on the way is overridden."""
        return (
            cls.query is common.ResolverBase.query
            and cls._lookup is ZoneResolver._lookup
            and cls.lookup_in_zone is KubernetesResolver.lookup_in_zone
        )

    # The server's short path (kubernetai/shortpath.py): a Service's own name and its neighbours as bytes.
    short_answer = short_answer

    @classmethod
    def short_ok(cls) -> bool:
        """Whether the server may ask ``short_answer`` instead: nothing the general answer takes is overridden."""
        return (
            cls.direct_ok()
            and cls.decide is KubernetesResolver.decide
            and cls._narrow is KubernetesResolver._narrow
            and cls.short_answer is KubernetesResolver.short_answer
        )

    def decide(self, q: Question, name: bytes, type: int, info: RequestInfo) -> Any:
        """The answer to ``q`` (class IN) now: the sections, or the outcome exception, or a Deferred (a CNAME chase).

        What ``lookup_in_zone`` returns, without the Deferred: the server's
        synchronous path (``RequestChain.answer_now``) calls it directly.
        """
        info.trace.answered_in(q.lzone)  # names we build repeat the query's spelling of the zone
        # Over UDP an answer is at most 1232 bytes (wire.MAX_UDP_PAYLOAD): build no more than can fit.
        ans = answer(self.view, q, type, max_records(MAX_UDP_PAYLOAD if info.proto == "udp" else 65535))
        self._narrow(info, q, ans)
        if ans.refused:
            return outcome.Reply(dns.EREFUSED)
        if ans.answers and not ans.name_error:
            result: tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]] = (
                list(ans.answers),
                [],
                list(ans.additional),
            )
            if ans.chase:
                info.trace.cacheable = False  # completed through other resolvers
                if self.upstream is not None and info.chase_depth < MAX_CHASE_DEPTH:
                    return self._chase(result, ans.chase, type, info.chased())
            return result
        # Only negative answers carry the SOA (making it was a tenth of an uncached positive answer).
        authority = [negative_soa(self.view, q.zone)]
        if ans.name_error:
            if self.opts.fallthrough.through(q.lname):
                return outcome.FallthroughNXDomain(name, authority)
            if not self.store.synced:
                reason = f"{self.opts.name()}: not synced with its cluster yet"
                return outcome.Reply(dns.ESERVER, authority=authority, authoritative=True, reason=reason)
            return outcome.NXDomain(name, authority)
        return ([], authority, [])

    def _narrow(self, info: RequestInfo, q: Question, ans: Any) -> None:
        """Let the server keep this answer while only what it read is unchanged, not the whole store.

        A name about one Service (its A/AAAA/SRV, endpoint and port names,
        NXDOMAIN or NODATA) or one namespace reads only that Service, its
        slices and its Namespace: under churn elsewhere it stays cached.
        Everything else (pods, reverse names, the apex and ``ns.dns``,
        multicluster names, CNAMEs to other names) keeps the store-wide
        version.  A cached negative answer may carry an older SOA serial than
        the zone's latest change elsewhere (the serial is the zone's, and only
        transfers use it).
        """
        try:
            r = self.view.request(q)
        except NoSuchName:
            return
        if r.pod_or_svc != "svc" or not r.namespace or self.view.is_multicluster(q.lzone):
            return
        for rr in ans.answers:
            if rr.type == dns.CNAME:
                return
        versions = info.trace.versions
        mine = self.cache_version
        for i, (fn, _) in enumerate(versions):
            if fn == mine:
                fine = self.store.fine_version(r.namespace, r.service)
                versions[i] = (fine, fine())
                return

    # ------------------------------------------------------------ autopath (CoreDNS's AutoPath)
    def serves(self, lname: str) -> bool:
        return match_zone(lname, self.zones) is not None

    def pod_namespace(self, ip: str) -> str | None:
        if self.opts.pods != "verified":
            return None
        for pod in self.store.pods_with_ip(ip):  # a loop, not next(genexpr): autopath asks it on every hit
            return pod.namespace
        return None

    def search_domains(self, namespace: str) -> list[str]:
        path: list[str] = []
        for z in self.zones:  # later zones first, as the stanzas of autopath @kubernetai
            if z == ".":
                path = [f"{namespace}.svc.", "svc.", "."] + path
            else:
                path = [f"{namespace}.svc.{z}", f"svc.{z}", z] + path
        return path

    def transfer(self, zone: str, serial: int | None = None) -> list | None:
        """AXFR records of ``zone`` (as the query spells it), or None if not ours."""
        return xfr.transfer(self.view, zone, serial)

    @defer.inlineCallbacks
    def _chase(self, result: tuple, targets: Sequence[str], type: int, info: RequestInfo) -> Any:
        """Complete CNAMEs to outside names through the server block's chain, one level deeper."""
        answers, authority, additional = result
        for target in targets:
            try:
                more, _, _ = yield ask_chain(self.upstream, target, type, info)
            except Exception:
                continue
            answers.extend(more)
        return (answers, authority, additional)
