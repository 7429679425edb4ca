"""AXFR of a stanza's zone from its store, as CoreDNS's kubernetes xfr.go.  Pure.

SOA, NS with glue (TTL 0, as CoreDNS sends them), then per exposed Service:
cluster IPs with SRV per port (and per named port), or headless endpoints
(address, endpoint name, SRV weighted per EndpointSlice), or the
ExternalName CNAME; SOA again.  A multicluster zone transfers its
ServiceImports the same way.  IXFR with the current serial gets just the SOA.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from twisted.names import dns

from kubernetai.cluster.lookup import View, endpoint_hostname
from kubernetai.cluster.objects import EndpointSlice, Port
from kubernetai.cluster.records import address_rr, bare, rr
from kubernetai.rr import soa

__all__ = ["transfer"]


def _srv(owner: str, weight: int, port: int, target: str, ttl: int) -> dns.RRHeader:
    return rr(owner, dns.SRV, ttl, dns.Record_SRV(0, weight, port, bare(target), ttl))


def _cluster_ip(base: str, ips: Iterable[str], ports: Iterable[Port], ttl: int) -> Iterator[dns.RRHeader]:
    for ip in ips:
        yield address_rr(base, ip, ttl)
    for p in ports:
        yield _srv(base, 100, p.port, base, ttl)
        if p.name:  # unnamed ports have no _port._proto name (the spec)
            yield _srv(f"_{p.name}._{p.protocol.lower()}.{base}", 100, p.port, base, ttl)


def _headless(view: View, base: str, slices: Iterable[EndpointSlice], ttl: int) -> Iterator[dns.RRHeader]:
    for sl in sorted(slices, key=lambda s: s.name):
        ready = [(ep, a) for ep in sl.endpoints if ep.ready for a in ep.addresses]
        weight = int(100 / len(ready)) if ready else 0  # CoreDNS calcSRVWeight per subset
        for ep, addr in ready:
            yield address_rr(base, addr, ttl)
            host = f"{endpoint_hostname(ep, addr, view.opts.endpoint_pod_names)}.{base}"
            yield address_rr(host, addr, ttl)
            for p in sl.ports:
                if p.name:
                    yield _srv(f"_{p.name}._{p.protocol.lower()}.{base}", weight, p.port, host, ttl)


def transfer(view: View, zone: str, serial: int | None = None) -> list[dns.RRHeader] | None:
    """The zone's records, SOA first and last; None when not authoritative for ``zone``."""
    if zone.lower() not in view.opts.zones:
        return None
    ttl = view.opts.ttl
    head = soa(zone, ttl, int(view.store.last_modified))
    if serial and serial == int(view.store.last_modified):
        return [head]
    out = [head]
    addrs = view.ns_addrs(zone)
    seen: set[str] = set()
    for name, _ in addrs:
        if name not in seen:
            seen.add(name)
            out.append(rr(zone, dns.NS, ttl, dns.Record_NS(bare(name), ttl)))
    out.extend(address_rr(name, ip, 0) for name, ip in addrs)
    store = view.store
    if view.is_multicluster(zone.lower()):
        for (ns, name), imp in sorted(store.objects["ServiceImport"].items()):
            if not view.namespace_exposed(ns):
                continue
            base = f"{name}.{ns}.svc.{zone}"
            if imp.type == "Headless":
                out.extend(_headless(view, base, store.mcs_slices(ns, name), ttl))
            else:
                out.extend(_cluster_ip(base, imp.ips, imp.ports, ttl))
    else:
        for (ns, name), svc in sorted(store.objects["Service"].items()):
            if not view.namespace_exposed(ns):
                continue
            base = f"{name}.{ns}.svc.{zone}"
            if svc.type == "ExternalName":
                if svc.external_name:
                    out.append(rr(base, dns.CNAME, ttl, dns.Record_CNAME(bare(svc.external_name), ttl)))
            elif not svc.headless:
                out.extend(_cluster_ip(base, svc.cluster_ips, svc.ports, ttl))
            elif not view.opts.noendpoints:
                out.extend(_headless(view, base, store.slices(ns, name), ttl))
    out.append(head)
    return out
