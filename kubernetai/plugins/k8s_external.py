"""``k8s_external [ZONES...] { apex APEX; ttl TTL; headless; fallthrough [ZONES...]; merge; stale DURATION }``.

CoreDNS's k8s_external over every ``kubernetai`` stanza: Services' external
addresses (``spec.externalIPs``, load balancer ingress IPs, a CNAME for an
ingress hostname) under another zone, ``<service>.<namespace>.<zone>``, SRV
for ``_<port>._<proto>.<service>.<namespace>.<zone>``, with ``headless`` a
headless Service's endpoints, the apex SOA and NS and their glue under
``<apex>.<zone>``.  CoreDNS binds it to one ``kubernetes`` plugin (the Go
kubernetai cannot load it); here it reads the stanzas of its server block
(all of the Corefile's when its block has none), in Corefile order: the first
whose cluster publishes the name answers, as fallthrough between stanzas
would.  ``merge`` (ours) gives A/AAAA answers the addresses of every cluster
that publishes the Service; with ``stale DURATION`` a cluster whose API has
been unreachable for longer is left out of merged answers (unless no other
cluster has any address for it).  Answers are cached while the stores they
read are unchanged (and, with ``stale``, while no cluster turns stale).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.names import dns

from kubernetai import outcome
from kubernetai.cluster import external
from kubernetai.cluster.external import NOERROR, NXDOMAIN, labels_under
from kubernetai.cluster.lookup import Hit
from kubernetai.cluster.records import address_rr, bare, rr
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.corefile import Directive
from kubernetai.fallthrough import Fallthrough
from kubernetai.plugin import SetupContext
from kubernetai.question import Question, ZoneResolver
from kubernetai.request import MAX_CHASE_DEPTH, ask_chain, current_request
from kubernetai.rr import soa
from kubernetai.values import arg_count, duration, integer, zone_args
from kubernetai.zones import is_subdomain

__all__ = ["ExternalResolver", "setup", "PROPERTIES"]

PROPERTIES = ("apex", "ttl", "headless", "fallthrough", "merge", "stale")


class ExternalResolver(ZoneResolver):
    """The IResolver of one ``k8s_external``: its zones, over the stanzas it reads."""

    plugin_name = "k8s_external"

    def __init__(
        self,
        zones: tuple[str, ...],
        apex: str = "dns",
        ttl: int = 5,
        headless: bool = False,
        fallthrough: Fallthrough | None = None,
        merge: bool = False,
        stale: float | None = None,
        clock: Any = None,
    ) -> None:
        super().__init__()
        self.zones = zones
        self.apex = apex.lower()
        self.ttl = ttl
        self.headless = headless
        self.fallthrough = fallthrough or Fallthrough()
        self.merge = merge
        self.stale = stale
        self.clock = clock
        # The stanzas read, in Corefile order (set once the block is built; a live list).
        self.stanzas: Sequence[KubernetesResolver] = ()
        self.upstream: Any = None  # the block's chain: completes CNAMEs to load balancer hostnames

    # ------------------------------------------------------------ cache validity
    def cache_version(self) -> tuple:
        """What every answer depends on: each stanza's store, and which are stale."""
        return (tuple((s.store.generation, s.store.sync_epoch) for s in self.stanzas), self._stale_set())

    def _stale_set(self) -> tuple[bool, ...]:
        """Which stanzas merged answers leave out now; () unless ``merge`` and ``stale`` are on."""
        if not self.merge or self.stale is None:
            return ()
        now = self.clock.seconds()
        return tuple((down := s.down_since()) is not None and now - down > self.stale for s in self.stanzas)

    # ------------------------------------------------------------ answering
    def lookup_in_zone(self, q: Question, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        if cls != dns.IN or type in (dns.AXFR, dns.IXFR):
            return defer.fail(outcome.NotMine(name))
        info = current_request()
        info.trace.answered_in(q.lzone)
        if q.apex:
            return self._apex(q, type)
        if is_subdomain(q.lname, f"{self.apex}.{q.lzone}" if q.lzone != "." else f"{self.apex}."):
            return self._sub_apex(q, type)
        if type == dns.PTR:
            targets = self._reverse(q)
            if targets is not None:
                if not targets:
                    return self._negative(q, name, NXDOMAIN)
                return defer.succeed(([self._ptr(q, t) for t in targets], [], []))
        self._narrow(info, q)
        hits, rcode = self._find(q, merged=self.merge and type in (dns.A, dns.AAAA))
        if not hits or type == dns.PTR:
            return self._negative(q, name, rcode if not hits else NOERROR)
        if type in (dns.A, dns.AAAA):
            answers, chase = self._addresses(q, type, hits)
            return self._complete(q, (answers, [], []), [(t, type, False) for t in chase])
        if type == dns.SRV:
            records, extra, chase = self._srv(q, hits)
            return self._complete(
                q, (records, [], extra), [(t, t_type, True) for t in chase for t_type in (dns.A, dns.AAAA)]
            )
        return defer.succeed(([], [self._soa(q)], []))

    def _narrow(self, info: Any, q: Question) -> None:
        """A name about one Service (or namespace) depends on that Service, its slices and its
        namespace in each stanza: churn elsewhere leaves its answer cached (as a stanza's own)."""
        segs = labels_under(q.lname, q.lzone)
        if not segs:
            return
        namespace, service = segs[-1], segs[-2] if len(segs) > 1 else ""
        fine = [s.store.fine_version(namespace, service) for s in self.stanzas]

        def version() -> tuple:
            return (tuple(f() for f in fine), self._stale_set())

        versions = info.trace.versions
        for i, (fn, _) in enumerate(versions):
            if fn == self.cache_version:
                versions[i] = (version, version())
                return

    def _find(self, q: Question, merged: bool) -> tuple[list[Hit], int]:
        """The first stanza that publishes the name answers; merged, every (fresh) one that does."""
        best = NXDOMAIN
        found: list[tuple[bool, list[Hit]]] = []
        stale = self._stale_set() if merged else ()
        for i, s in enumerate(self.stanzas):
            hits, rcode = external.find(s.view, q.lname, q.lzone, self.headless)
            if hits:
                if not merged:
                    return hits, NOERROR
                found.append((i < len(stale) and stale[i], hits))
            elif best == NXDOMAIN:
                best = rcode
        if not found:
            return [], best
        fresh = [h for is_stale, hits in found if not is_stale for h in hits]
        return (fresh or [h for _, hits in found for h in hits]), NOERROR

    def _reverse(self, q: Question) -> list[str] | None:
        out: list[str] = []
        for s in self.stanzas:
            targets = external.find_reverse(s.view, q.lname)
            if targets is None:
                return None
            out.extend(t for t in targets if t not in out)
        return out

    def _negative(self, q: Question, name: bytes, rcode: int) -> defer.Deferred:
        authority = [self._soa(q)]
        if rcode == NXDOMAIN:
            if self.fallthrough.through(q.lname):
                return defer.fail(outcome.FallthroughNXDomain(name, authority))
            if not all(s.store.synced for s in self.stanzas):
                reason = "k8s_external: a cluster has not synced yet"
                return defer.fail(outcome.Reply(dns.ESERVER, authority=authority, authoritative=True, reason=reason))
            return defer.fail(outcome.NXDomain(name, authority))
        if rcode != NOERROR:
            return defer.fail(outcome.Reply(rcode, authority=authority, authoritative=True))
        return defer.succeed(([], authority, []))

    # ------------------------------------------------------------ records
    def _names(self, q: Question) -> tuple[str, str]:
        """(zone, ns1.APEX.zone), lower-case as configured (as CoreDNS)."""
        return q.lzone, f"ns1.{self.apex}.{q.lzone}" if q.lzone != "." else f"ns1.{self.apex}."

    def serial(self) -> int:
        """The zone's SOA serial: the last change of any store read (Unix seconds, as CoreDNS's Modified)."""
        return int(max((s.store.last_modified for s in self.stanzas), default=0))

    def _soa(self, q: Question) -> dns.RRHeader:
        apex = self.apex
        return soa(q.lzone, self.ttl, self.serial(), mname=f"ns1.{apex}", rname=f"hostmaster.{apex}", cap=self.ttl)

    def _ns(self, q: Question) -> dns.RRHeader:
        zone, ns1 = self._names(q)
        return rr(zone, dns.NS, self.ttl, dns.Record_NS(bare(ns1), self.ttl))

    def _ns_addresses(self) -> list[str]:
        """Our addresses as published: the first stanza that finds our own Service, else our addresses."""
        fallback: list[str] = []
        for s in self.stanzas:
            found, addresses = external.ns_addresses(s.view, self.headless)
            if found:
                return list(dict.fromkeys(addresses))
            fallback = fallback or addresses
        return list(dict.fromkeys(fallback))

    def _apex(self, q: Question, type: int) -> defer.Deferred:
        if type == dns.SOA:
            return defer.succeed(([self._soa(q)], [], []))
        if type == dns.NS:
            _, ns1 = self._names(q)
            glue = [address_rr(ns1, ip, self.ttl) for ip in self._ns_addresses()]
            return defer.succeed(([self._ns(q)], [], glue))
        return defer.succeed(([], [self._soa(q)], []))

    def _sub_apex(self, q: Question, type: int) -> defer.Deferred:
        labels = labels_under(q.lname, q.lzone)
        if len(labels) == 1:  # APEX.zone itself: exists, no records
            return defer.succeed(([], [self._soa(q)], []))
        if len(labels) != 2 or labels[0] != "ns1":
            return defer.fail(outcome.NXDomain(q.name, [self._soa(q)]))
        wanted = {dns.A: False, dns.AAAA: True}.get(type)
        answers = [address_rr(q.name, ip, self.ttl) for ip in self._ns_addresses() if (":" in ip) == wanted]
        return defer.succeed((answers, [] if answers else [self._soa(q)], []))

    def _ptr(self, q: Question, target: str) -> dns.RRHeader:
        zone = self.zones[0]
        full = f"{target}.{zone}" if zone != "." else f"{target}."
        return rr(q.name, dns.PTR, self.ttl, dns.Record_PTR(bare(full), self.ttl))

    def _addresses(self, q: Question, type: int, hits: list[Hit]) -> tuple[list, list[str]]:
        out: list[dns.RRHeader] = []
        chase: list[str] = []
        seen: set[str] = set()
        for h in hits:
            kind = h.kind
            if kind == dns.CNAME:
                target = h.host.rstrip(".") + "."
                out.append(rr(q.name, dns.CNAME, h.ttl, dns.Record_CNAME(bare(target), h.ttl)))
                chase.append(target)
            elif kind == type and h.host not in seen:
                seen.add(h.host)
                out.append(address_rr(q.name, h.host, self.ttl))
        return out, chase

    def _srv(self, q: Question, hits: list[Hit]) -> tuple[list, list, list[str]]:
        weight = max(1, int(100.0 / (100 * len(hits)) * 100))
        records: list[dns.RRHeader] = []
        extra: list[dns.RRHeader] = []
        chase: list[str] = []
        seen: set[tuple[str, str | int]] = set()
        for h in hits:
            named = h.kind == dns.CNAME
            target = h.host.rstrip(".").lower() + "." if named else h.target
            if (target, h.port) not in seen:
                seen.add((target, h.port))
                records.append(rr(q.name, dns.SRV, h.ttl, dns.Record_SRV(0, weight, h.port, bare(target), h.ttl)))
            if (target, h.host) not in seen:
                seen.add((target, h.host))
                if named:
                    chase.append(target)
                else:
                    extra.append(address_rr(target, h.host, self.ttl))
        return records, extra, chase

    @defer.inlineCallbacks
    def _complete(self, q: Question, result: tuple, lookups: list[tuple[str, int, bool]]) -> Any:
        """Ask the block's chain for load balancer hostnames' addresses (answer, or additional for SRV)."""
        answers, authority, additional = result
        if not answers:
            return ([], [self._soa(q)], [])
        info = current_request()
        if not lookups or self.upstream is None or info.chase_depth >= MAX_CHASE_DEPTH:
            return result
        info.trace.cacheable = False  # completed through other resolvers
        deeper = info.chased()
        for target, type, to_additional in lookups:
            try:
                more, _, _ = yield ask_chain(self.upstream, target, type, deeper)
            except Exception:
                continue
            (additional if to_additional else answers).extend(more)
        return (answers, authority, additional)

    # ------------------------------------------------------------ transfer
    def transfer(self, zone: str, serial: int | None = None) -> list | None:
        """AXFR of an external zone: what queries would be answered, SOA first and last."""
        lzone = zone.lower() if zone.endswith(".") else zone.lower() + "."
        if lzone not in self.zones:
            return None
        q = Question(lzone, lzone, lzone, lzone)
        head = self._soa(q)
        if serial and serial == self.serial():
            return [head]
        _, ns1 = self._names(q)
        out = [head, self._ns(q)]
        out.extend(address_rr(ns1, ip, self.ttl) for ip in self._ns_addresses())
        seen: set[tuple[str, str]] = set()
        suffix = lzone if lzone != "." else ""
        for s in self.stanzas:
            for ns, name in external.published(s.view, self.headless):
                if (ns, name) in seen:
                    continue
                seen.add((ns, name))
                svc = s.store.service(ns, name)
                if svc is not None:
                    out.extend(self._records_of(q.sibling(f"{name}.{ns}.{suffix}"), svc))
        out.append(head)
        return out

    def _records_of(self, q: Question, svc: Any) -> list[dns.RRHeader]:
        """A published Service's records as its queries would get them (no CNAME completion in a transfer)."""
        hits, _ = self._find(q, merged=self.merge)
        out = self._addresses(q, dns.A, hits)[0]  # CNAMEs of hostnames, then A
        out += [r for r in self._addresses(q, dns.AAAA, hits)[0] if r.type == dns.AAAA]
        first, _ = self._find(q, merged=False)
        out += self._srv(q, first)[0]
        for p in svc.ports:
            if p.name:
                named = q.sibling(f"_{p.name.lower()}._{p.protocol.lower()}.{q.lname}")
                out += self._srv(named, self._find(named, merged=False)[0])[0]
        if self.headless and svc.headless and not svc.external:  # each endpoint's own name
            names: dict[tuple[str, str], None] = dict.fromkeys((h.target, h.host) for h in first)
            out += [address_rr(target, host, self.ttl) for target, host in names]
        return out


def setup(d: Directive, ctx: SetupContext) -> ExternalResolver:
    zones = zone_args(d, d.args) or ctx.zones
    apex, ttl, headless, fall, merge, stale = "dns", 5, False, Fallthrough(), False, None
    for child in d.children:
        if child.name == "apex":
            apex = arg_count(child, 1, 1)[0]
            if not apex or "." in apex.strip(".") or len(apex) > 63:
                raise child.error(f"apex {apex!r}: want one DNS label")
            apex = apex.strip(".")
        elif child.name == "ttl":
            ttl = integer(child, arg_count(child, 1, 1)[0], 0, 3600, "ttl")
        elif child.name == "headless":
            arg_count(child, 0, 0)
            headless = True
        elif child.name == "fallthrough":
            fall = Fallthrough.parse(child)
        elif child.name == "merge":
            arg_count(child, 0, 0)
            merge = True
        elif child.name == "stale":
            stale = duration(child, arg_count(child, 1, 1)[0])
        else:
            raise child.error(f"unknown property {child.name!r} (known: {', '.join(PROPERTIES)})")
    if stale is not None and not merge:
        raise d.error("stale applies to merged answers: add merge")
    resolver = ExternalResolver(tuple(zones), apex, ttl, headless, fall, merge, stale, clock=ctx.reactor)

    def bind(_chain: Any) -> None:
        # This block's stanzas; none: every stanza of the Corefile (a live list, later blocks join it).
        own = [u for u in ctx.chain_users if isinstance(u, KubernetesResolver)]
        resolver.stanzas = own or ctx.server.clusters

    def check() -> None:
        if not resolver.stanzas:  # CoreDNS: "kubernetes plugin not loaded"
            raise d.error("no kubernetai (or kubernetes) stanza in this Corefile to publish Services from")

    ctx.chain_hooks.append(bind)
    ctx.chain_users.append(resolver)
    ctx.server.final_checks.append(check)
    return resolver
