"""(query, store, options) → answer sections, exactly as CoreDNS's kubernetes plugin.  Pure.

Nothing here does I/O or touches the reactor; ``answer()`` returns an
``Answer`` the resolver turns into a result or an exception.  Owner names
keep the query's spelling; names we build (SRV targets, PTR targets) use the
zone as the query spelled it, as CoreDNS does.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

import attrs
from twisted.names import dns

from kubernetai.cluster.names import InvalidRequest, RecordRequest, parse_request, strip_zone
from kubernetai.cluster.objects import Endpoint, EndpointSlice, Port, Service
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.rr import soa
from kubernetai.cluster.store import ClusterStore
from kubernetai.zones import is_subdomain

__all__ = ["Answer", "Hit", "answer", "DNS_SCHEMA_VERSION", "endpoint_hostname"]

DNS_SCHEMA_VERSION = "1.1.0"


class NameError_(Exception):
    """The name does not exist (errNoItems)."""


@attrs.frozen
class Answer:
    """What the stanza says: records, or NXDOMAIN (``name_error``), or REFUSED."""

    answers: tuple[dns.RRHeader, ...] = ()
    additional: tuple[dns.RRHeader, ...] = ()
    name_error: bool = False
    refused: bool = False
    # CNAME targets outside our zones that an upstream should complete.
    chase: tuple[str, ...] = ()


@attrs.frozen
class Hit:
    """CoreDNS's msg.Service: an address or external name, a port, a name."""

    host: str
    port: int
    target: str  # the record's own name (SRV target, glue owner)
    ttl: int
    weight: int = 0

    @property
    def kind(self) -> int:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return dns.CNAME
        return dns.A if ip.version == 4 else dns.AAAA


def endpoint_hostname(ep: Endpoint, address: str, pod_names: bool) -> str:
    if ep.hostname:
        return ep.hostname
    if pod_names and ep.pod and len(ep.pod) <= 63:
        return ep.pod
    if "." in address:
        return address.replace(".", "-")
    label = address.replace(":", "-")
    # "2001:db8::" would end (or "::1" start) with a dash: pad with 0 as CoreDNS.
    if label.endswith("-"):
        label += "0"
    if label.startswith("-"):
        label = "0" + label
    return label


def _name(name: str) -> str:
    return name.rstrip(".")


def _rr(owner: str, type_: int, ttl: int, payload: object) -> dns.RRHeader:
    return dns.RRHeader(_name(owner), type_, dns.IN, ttl, payload, auth=True)


def _address_rr(owner: str, ip: str, ttl: int) -> dns.RRHeader:
    if ":" in ip:
        return _rr(owner, dns.AAAA, ttl, dns.Record_AAAA(ip, ttl))
    return _rr(owner, dns.A, ttl, dns.Record_A(ip, ttl))


@attrs.define
class View:
    """One stanza's store and options, with the lookups CoreDNS's findServices makes."""

    store: ClusterStore
    opts: KubernetesOptions
    local_ips: Sequence[str] = ()

    def ns_addrs(self, zone: str) -> list[tuple[str, str]]:
        """(name, address) of our own NS, as CoreDNS's nsAddrs.

        The Services whose endpoints hold one of our addresses name us
        (cluster IPs of a ClusterIP Service, endpoint names of a headless
        one); failing that, ``ns.dns.<zone>`` with our own addresses.
        """
        out: list[tuple[str, str]] = []
        found = False
        for ip in self.local_ips:
            for sl in self.store.slices_by_ip.get(ip, {}).values():
                found = True
                svc = self.store.service(sl.namespace, sl.service)
                if svc is None:
                    continue
                base = f"{svc.name}.{svc.namespace}.svc.{zone}"
                if svc.headless:
                    for ep in sl.endpoints:
                        if ep.ready:
                            for addr in ep.addresses:
                                out.append((f"{endpoint_hostname(ep, addr, self.opts.endpoint_pod_names)}.{base}", addr))
                else:
                    out.extend((base, cip) for cip in svc.cluster_ips)
        if not found:
            name = f"ns.dns.{zone}" if zone != "." else "ns.dns."
            out = [(name, ip) for ip in self.local_ips]
        return out

    # ------------------------------------------------------------ existence
    def namespace_exposed(self, namespace: str) -> bool:
        if self.store.namespace(namespace) is None:
            return False
        if self.opts.namespaces:
            return namespace in self.opts.namespaces
        return True

    def primary_zone(self) -> str:
        for z in self.opts.zones:
            if not z.endswith(("in-addr.arpa.", "ip6.arpa.")):
                return z
        return self.opts.zones[0]

    def is_multicluster(self, zone: str) -> bool:
        return zone.lower() in self.opts.multicluster

    # ------------------------------------------------------------ services
    def endpoints_of(self, svc: Service) -> Iterable[tuple[Endpoint, str, tuple]]:
        """Ready (endpoint, address, ports) of a service, duplicates across slices merged."""
        for ep, addr, sl in _ready(self.store.slices(svc.namespace, svc.name), merge=True):
            yield ep, addr, sl.ports

    def has_endpoints(self, svc: Service) -> bool:
        return any(True for _ in self.endpoints_of(svc))

    def find_services(self, r: RecordRequest, zone: str) -> list[Hit]:
        if not self.namespace_exposed(r.namespace):
            raise NameError_()
        if not r.service:
            return []  # NODATA: the namespace exists
        svc = self.store.service(r.namespace, r.service)
        if svc is None:
            raise NameError_()
        ttl = self.opts.ttl
        base = f"{r.service}.{r.namespace}.svc.{zone}" if zone != "." else f"{r.service}.{r.namespace}.svc."
        if self.opts.ignore_empty_service and svc.type != "ExternalName" and not svc.headless:
            if not self.has_endpoints(svc):
                raise NameError_()
        if svc.type == "ExternalName":
            if r.endpoint or not svc.external_name:
                raise NameError_()
            hit = Hit(svc.external_name, 0, base, ttl)
            if hit.kind != dns.CNAME:
                raise NameError_()
            return [hit]
        if svc.headless or r.endpoint:
            if self.opts.noendpoints:
                raise NameError_()
            named = ((addr, endpoint_hostname(ep, addr, self.opts.endpoint_pod_names), ports)
                     for ep, addr, ports in self.endpoints_of(svc))
            return _endpoint_hits(r, ((a, f"{h}.{base}", p) for a, h, p in named if not r.endpoint or r.endpoint == h), ttl)
        return _ip_hits(r, svc.ports, svc.cluster_ips, base, ttl)

    def find_pods(self, r: RecordRequest, zone: str) -> list[Hit]:
        mode = self.opts.pods
        if mode == "disabled":
            raise NameError_()
        if not self.namespace_exposed(r.namespace):
            raise NameError_()
        if not r.service:
            return []
        name = r.service
        if name.count("-") == 3 and "--" not in name:
            ip = name.replace("-", ".")
        else:
            ip = name.replace("-", ":")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise NameError_() from None
        target = f"{name}.{r.namespace}.pod.{zone}"
        if mode == "insecure":
            return [Hit(ip, 0, target, self.opts.ttl)]
        for p in self.store.pods_with_ip(ip):
            if p.namespace == r.namespace:
                return [Hit(ip, 0, target, self.opts.ttl)]
        raise NameError_()

    def records(self, qname: str, zone: str) -> list[Hit]:
        """Services or pods a name means: CoreDNS's Records()."""
        multicluster = self.is_multicluster(zone)
        try:
            r = parse_request(qname.lower(), zone.lower(), multicluster, self.opts.zonal)
        except InvalidRequest:
            raise NameError_() from None
        if not r.pod_or_svc:
            return []
        if qname.lower().endswith(("in-addr.arpa.", "ip6.arpa.")):
            raise NameError_()
        if r.pod_or_svc == "pod":
            return self.find_pods(r, zone)
        if multicluster:
            return self.find_multicluster(r, zone)
        if r.zone:
            return self.find_zonal(r, zone)
        return self.find_services(r, zone)

    def find_multicluster(self, r: RecordRequest, zone: str) -> list[Hit]:
        if not self.namespace_exposed(r.namespace):
            raise NameError_()
        if not r.service:
            return []
        imp = self.store.service_import(r.namespace, r.service)
        if imp is None:
            raise NameError_()
        ttl = self.opts.ttl
        base = f"{r.service}.{r.namespace}.svc.{zone}"
        if imp.type == "Headless" or r.endpoint:
            items = []
            for ep, addr, sl in _ready(self.store.mcs_slices(r.namespace, r.service), merge=False):
                host = endpoint_hostname(ep, addr, self.opts.endpoint_pod_names)
                if not r.endpoint or (r.endpoint == host and r.cluster == sl.cluster):
                    items.append((addr, f"{host}.{sl.cluster}.{base}", sl.ports))
            return _endpoint_hits(r, items, ttl)
        return _ip_hits(r, imp.ports, imp.ips, base, ttl)

    def find_zonal(self, r: RecordRequest, zone: str) -> list[Hit]:
        svc = self.store.service(r.namespace, r.service)
        if not self.namespace_exposed(r.namespace) or svc is None or not svc.headless:
            raise NameError_()
        base = f"{r.service}.{r.namespace}.svc.{zone}"
        every, local = [], []
        for ep, addr, ports in self.endpoints_of(svc):
            host = endpoint_hostname(ep, addr, self.opts.endpoint_pod_names)
            for p in ports or (None,):
                hit = Hit(addr, p.port if p else -1, f"{host}.{base}", self.opts.ttl)
                every.append(hit)
                if ep.zone.lower() == r.zone:
                    local.append(hit)
        if local or r.zone_mode == "pin":
            return local
        return every


def _ready(slices: Iterable[EndpointSlice], merge: bool) -> Iterable[tuple[Endpoint, str, EndpointSlice]]:
    """Ready (endpoint, address, slice) in slice-name order; ``merge`` drops repeats across slices."""
    seen: set[tuple[str, str]] = set()
    for sl in sorted(slices, key=lambda s: s.name):
        for ep in sl.endpoints:
            if not ep.ready:
                continue
            for addr in ep.addresses:
                if merge:
                    if (addr, ep.hostname) in seen:
                        continue
                    seen.add((addr, ep.hostname))
                yield ep, addr, sl


def _endpoint_hits(r: RecordRequest, items: Iterable[tuple[str, str, tuple]], ttl: int) -> list[Hit]:
    """(address, name, ports) → hits per matching port (port -1 when the slice has none)."""
    hits = []
    for addr, target, ports in items:
        for p in ports or (None,):
            if p is None and r.is_srv_form:
                continue
            if p is not None and not _port_match(r, p.name, p.protocol):
                continue
            hits.append(Hit(addr, p.port if p else -1, target, ttl))
    if not hits:
        raise NameError_()
    return hits


def _ip_hits(r: RecordRequest, ports: Iterable[Port], ips: Iterable[str], target: str, ttl: int) -> list[Hit]:
    """Cluster IPs × matching ports; NXDOMAIN when no port matches (as CoreDNS)."""
    hits, found = [], False
    for p in ports:
        if _port_match(r, p.name, p.protocol):
            found = True
            hits.extend(Hit(ip, p.port, target, ttl) for ip in ips)
    if not found:
        raise NameError_()
    return hits


def _port_match(r: RecordRequest, name: str, protocol: str) -> bool:
    if r.port and r.port != name.lower():
        return False
    if r.protocol and r.protocol != protocol.lower():
        return False
    return True


# ---------------------------------------------------------------- per type


def _addresses(view: View, qname: str, zone: str, qtype: int, hits: Sequence[Hit], depth: int = 0) -> tuple[list, list[str]]:
    """A/AAAA records (and CNAMEs) for hits, as CoreDNS's plugin.A/AAAA."""
    out: list[dns.RRHeader] = []
    chase: list[str] = []
    seen: set[str] = set()
    for h in hits:
        kind = h.kind
        if kind == dns.CNAME:
            target = h.host.rstrip(".") + "."
            if target.lower() == qname.lower() or depth > 7:
                continue
            cname = _rr(qname, dns.CNAME, h.ttl, dns.Record_CNAME(_name(target), h.ttl))
            if is_subdomain(target.lower(), zone.lower()):
                try:
                    more, more_chase = _addresses(view, target, zone, qtype, view.records(target, zone), depth + 1)
                except NameError_:
                    continue
                if more:
                    out.append(cname)
                    out.extend(more)
                    chase.extend(more_chase)
                continue
            out.append(cname)
            chase.append(target)
        elif kind == qtype and h.host not in seen:
            seen.add(h.host)
            out.append(_address_rr(qname, h.host, h.ttl))
    return out, chase


def _services(view: View, qname: str, zone: str, qtype: int) -> list[Hit]:
    """CoreDNS's Kubernetes.Services(): the special names, then Records()."""
    lname, lzone = qname.lower(), zone.lower()
    if lname == ("ns.dns." + lzone if lzone != "." else "ns.dns."):
        return [Hit(ip, 0, qname, view.opts.ttl) for _, ip in view.ns_addrs(zone)]
    hits = view.records(qname, zone)
    if qtype == dns.SRV:
        hits = [h for h in hits if h.kind != dns.CNAME]
    return hits


def _srv(view: View, qname: str, zone: str) -> tuple[list, list]:
    hits = _services(view, qname, zone, dns.SRV)
    total = 100 * len(hits) or 1
    records, extra = [], []
    seen_srv: set[tuple[str, int]] = set()
    seen_addr: set[tuple[str, str]] = set()
    for h in hits:
        if h.port < 0:
            continue
        weight = max(1, int(100.0 / total * 100))
        if (h.target.lower(), h.port) not in seen_srv:
            seen_srv.add((h.target.lower(), h.port))
            records.append(_rr(qname, dns.SRV, h.ttl, dns.Record_SRV(0, weight, h.port, _name(h.target), h.ttl)))
        if (h.target.lower(), h.host) not in seen_addr:
            seen_addr.add((h.target.lower(), h.host))
            extra.append(_address_rr(h.target, h.host, h.ttl))
    return records, extra


def _ptr(view: View, qname: str, zone: str) -> list:
    ip = _reverse_address(qname.lower())
    if ip is None:
        view.records(qname, zone)  # a forward name: NODATA if it exists
        return []
    ttl = view.opts.ttl
    zone = view.primary_zone()
    for svc in view.store.services_by_ip.get(ip, {}).values():
        if view.opts.namespaces and svc.namespace not in view.opts.namespaces:
            continue
        return [_rr(qname, dns.PTR, ttl, dns.Record_PTR(_name(f"{svc.name}.{svc.namespace}.svc.{zone}"), ttl))]
    out = []
    for sl in view.store.slices_by_ip.get(ip, {}).values():
        if view.opts.namespaces and sl.namespace not in view.opts.namespaces:
            continue
        for ep in sl.endpoints:
            if not ep.ready or ip not in ep.addresses:
                continue
            host = endpoint_hostname(ep, ip, view.opts.endpoint_pod_names)
            out.append(_rr(qname, dns.PTR, ttl, dns.Record_PTR(_name(f"{host}.{sl.service}.{sl.namespace}.svc.{zone}"), ttl)))
    if not out:
        raise NameError_()
    return out


def _reverse_address(name: str) -> str | None:
    if name.endswith(".in-addr.arpa."):
        parts = name[: -len(".in-addr.arpa.")].split(".")
        if len(parts) != 4:
            return None
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return None
    if name.endswith(".ip6.arpa."):
        nibbles = name[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        try:
            return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
        except ValueError:
            return None
    return None


def answer(view: View, qname: str, zone: str, qtype: int) -> Answer:
    """The stanza's answer for ``qname`` (query spelling) in ``zone`` (query spelling)."""
    lname, lzone = qname.lower(), zone.lower()
    try:
        if qtype in (dns.AXFR, dns.IXFR):
            return Answer(refused=True)
        if qtype in (dns.A, dns.AAAA):
            hits = _apex_or_services(view, qname, zone, qtype)
            recs, chase = _addresses(view, qname, zone, qtype, hits)
            return Answer(tuple(recs), chase=tuple(chase))
        if qtype == dns.SRV:
            recs, extra = _srv(view, qname, zone)
            return Answer(tuple(recs), tuple(extra))
        if qtype == dns.TXT:
            rel = strip_zone(lname, lzone)
            if rel == "dns-version":
                ttl = 28800
                return Answer((_rr(qname, dns.TXT, ttl, dns.Record_TXT(DNS_SCHEMA_VERSION.encode(), ttl=ttl)),))
            # An existing name (even a zonal one with no endpoints) is NODATA.
            if view.records(qname, zone) or _exists_empty(view, qname, zone):
                return Answer()
            raise NameError_()
        if qtype == dns.PTR:
            return Answer(tuple(_ptr(view, qname, zone)))
        if qtype == dns.SOA and lname == lzone:
            return Answer((soa(zone, view.opts.ttl, int(view.store.last_modified)),))
        if qtype == dns.NS and lname == lzone:
            ttl = view.opts.ttl
            recs, extra, seen = [], [], set()
            for name, ip in view.ns_addrs(zone):
                extra.append(_address_rr(name, ip, ttl))
                if name not in seen:
                    seen.add(name)
                    recs.append(_rr(qname, dns.NS, ttl, dns.Record_NS(_name(name), ttl)))
            return Answer(tuple(recs), tuple(extra))
        if qtype == dns.CNAME:
            hits = _apex_or_services(view, qname, zone, qtype)
            recs = [_rr(qname, dns.CNAME, h.ttl, dns.Record_CNAME(_name(h.host), h.ttl)) for h in hits if h.kind == dns.CNAME]
            return Answer(tuple(recs))
        # Any other type: a fake A lookup decides NODATA versus NXDOMAIN.
        _apex_or_services(view, qname, zone, dns.A)
        return Answer()
    except NameError_:
        return Answer(name_error=True)


def _exists_empty(view: View, qname: str, zone: str) -> bool:
    """A zonal name whose service exists but has no endpoint in that zone."""
    try:
        r = parse_request(qname.lower(), zone.lower(), view.is_multicluster(zone), view.opts.zonal)
    except InvalidRequest:
        return False
    return bool(r.zone) and view.store.service(r.namespace, r.service) is not None


def _apex_or_services(view: View, qname: str, zone: str, qtype: int) -> list[Hit]:
    if qname.lower() == zone.lower():
        return []  # the apex has no A of its own: NODATA
    return _services(view, qname, zone, qtype)


def negative_soa(view: View, zone: str) -> dns.RRHeader:
    return soa(zone, view.opts.ttl, int(view.store.last_modified))
