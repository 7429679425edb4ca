"""Finding what a name means in one stanza's store, as CoreDNS's kubernetes.go.  Pure.

``View`` holds a stanza's store and options and makes the lookups CoreDNS's
``Records()``/``findServices``/``findPods`` make: a name becomes ``Hit``s
(an address or external name, a port, a target name), or ``NoSuchName``
(NXDOMAIN).  Shaping hits into DNS records is records.py's job.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, overload

import attrs
from twisted.names import dns

from kubernetai.cluster.names import InvalidRequest, RecordRequest, parse_request
from kubernetai.cluster.objects import Endpoint, EndpointSlice, Port, Service, is_packed
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.store import ClusterStore
from kubernetai.lazy_repr import LazyRepr
from kubernetai.question import Question

__all__ = ["Hit", "NoSuchName", "View", "endpoint_hostname", "port_matches", "reverse_address", "service_name"]


class NoSuchName(Exception):
    """The name does not exist (CoreDNS's errNoItems): NXDOMAIN."""


class Hit(NamedTuple):
    """CoreDNS's msg.Service: an address or external name, a port, a name.

    A tuple, not an attrs class: a Service with thousands of endpoints makes
    thousands per query, and a tuple is several times cheaper to make.
    """

    host: str
    port: int
    target: str  # the record's own name (SRV target, glue owner)
    ttl: int
    weight: int = 0

    @property
    def kind(self) -> int:
        if ":" in self.host:
            return dns.AAAA if is_packed(socket.AF_INET6, self.host) else dns.CNAME
        return dns.A if is_packed(socket.AF_INET, self.host) else dns.CNAME


class LazyHits(Sequence[Hit]):
    """Hits made only as far as they are read; their number is known up front.

    A Service with 5,000 endpoints answers with the ~80 records a UDP answer
    can carry, but its SRV weights count every hit: counting is cheap (per
    slice), making 5,000 names and tuples per query is not.
    """

    __slots__ = ("_count", "_make")

    def __init__(self, count: int, make: Callable[[], Iterator[Hit]]) -> None:
        self._count = count
        self._make = make

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Hit]:
        return self._make()

    @overload
    def __getitem__(self, i: int) -> Hit: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Hit]: ...
    def __getitem__(self, i: int | slice) -> Hit | Sequence[Hit]:
        return list(self._make())[i]


def endpoint_hostname(ep: Endpoint, address: str, pod_names: bool) -> str:
    if ep.hostname:
        return ep.hostname
    if pod_names and ep.pod and len(ep.pod) <= 63:
        return ep.pod
    if "." in address:
        return address.replace(".", "-")
    label = address.replace(":", "-")
    # "2001:db8::" would end with a dash: pad it with 0, as CoreDNS (which leaves a leading "--" alone).
    if label.endswith("-"):
        label += "0"
    return label


def service_name(service: str, namespace: str, zone: str) -> str:
    """``service.namespace.svc.zone.``: a Service's own name (SRV target, answer owner)."""
    return f"{service}.{namespace}.svc.{zone}" if zone != "." else f"{service}.{namespace}.svc."


def reverse_address(lname: str) -> str | None:
    """The IP address a reverse name (lower-cased) stands for, or None."""
    if lname.endswith(".in-addr.arpa."):
        parts = lname[: -len(".in-addr.arpa.")].split(".")
        if len(parts) != 4:
            return None
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return None
    if lname.endswith(".ip6.arpa."):
        nibbles = lname[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        try:
            return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
        except ValueError:
            return None
    return None


@attrs.define(repr=False)
class View(LazyRepr):
    """One stanza's store and options, with the lookups CoreDNS's findServices makes."""

    store: ClusterStore
    opts: KubernetesOptions
    local_ips: tuple[str, ...] = ()
    # The last question parsed and its parse: an answer and its cache validity (resolver._narrow)
    # read the same question's parse.
    _last: tuple = attrs.field(default=(None, None), init=False, eq=False, repr=False)

    def own_services(self) -> tuple[bool, list[tuple[EndpointSlice, Service]]]:
        """The slices holding one of our addresses, with their Services: CoreDNS's nsAddrs walk.

        ``found`` is whether any slice holds one (a slice whose Service is gone counts, as in CoreDNS)."""
        found = False
        out = []
        for ip in self.local_ips:
            for sl in self.store.slices_with_ip(ip):
                found = True
                svc = self.store.service(sl.namespace, sl.service)
                if svc is not None:
                    out.append((sl, svc))
        return found, out

    def ns_addrs(self, zone: str) -> list[tuple[str, str]]:
        """(name, address) of our own NS, as CoreDNS's nsAddrs.

        The Services whose endpoints hold one of our addresses name us
        (cluster IPs of a ClusterIP Service, endpoint names of a headless
        one); failing that, ``ns.dns.<zone>`` with our own addresses.
        """
        out: list[tuple[str, str]] = []
        found, own = self.own_services()
        for sl, svc in own:
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

    def is_multicluster(self, lzone: str) -> bool:
        return lzone in self.opts.multicluster

    def request(self, q: Question) -> RecordRequest:
        """The name parsed against the schema; NoSuchName if it is not of it."""
        last_q, last = self._last
        if last_q is q:
            return last
        try:
            r = parse_request(q.lname, q.lzone, self.is_multicluster(q.lzone), self.opts.zonal)
        except InvalidRequest:
            raise NoSuchName() from None
        self._last = (q, r)
        return r

    # ------------------------------------------------------------ names → hits
    def records(self, q: Question) -> Sequence[Hit]:
        """Services or pods a name means: CoreDNS's Records()."""
        r = self.request(q)
        if not r.pod_or_svc:
            return []
        if q.lname.endswith(("in-addr.arpa.", "ip6.arpa.")):
            raise NoSuchName()
        if r.pod_or_svc == "pod":
            return self.find_pods(r, q.zone)
        if self.is_multicluster(q.lzone):
            return self.find_multicluster(r, q.zone)
        if r.zone:
            return self.find_zonal(r, q.zone)
        return self.find_services(r, q.zone)

    def services(self, q: Question, qtype: int) -> Sequence[Hit]:
        """CoreDNS's Kubernetes.Services(): the special names, then Records()."""
        if q.lname == ("ns.dns." + q.lzone if q.lzone != "." else "ns.dns."):
            return [Hit(ip, 0, q.name, self.opts.ttl) for _, ip in self.ns_addrs(q.zone)]
        hits = self.records(q)
        # SRV has no CNAME targets.  Only an ExternalName's single hit can be a name: every
        # address was checked to be an IP on arrival, so longer lists need no look.
        if qtype == dns.SRV and len(hits) == 1 and hits[0].kind == dns.CNAME:
            return []
        return hits

    def apex_or_services(self, q: Question, qtype: int) -> Sequence[Hit]:
        if q.apex:
            return []  # the apex has no A of its own: NODATA
        return self.services(q, qtype)

    def exists_empty(self, q: Question) -> bool:
        """A zonal name whose service exists but has no endpoint in that zone."""
        try:
            r = self.request(q)
        except NoSuchName:
            return False
        return bool(r.zone) and self.store.service(r.namespace, r.service) is not None

    def endpoints_of(self, svc: Service) -> Iterator[tuple[Endpoint, str, tuple[Port, ...]]]:
        """Ready (endpoint, address, ports) of a service, slice by slice.

        An endpoint listed in two slices comes twice, as in CoreDNS: records
        are deduplicated when shaped, but SRV weights count both.
        """
        for ep, addr, sl in _ready(self.store.slices(svc.namespace, svc.name), merge=False):
            yield ep, addr, sl.ports

    def has_endpoints(self, svc: Service) -> bool:
        return any(sl.ready_addresses for sl in self.store.slices(svc.namespace, svc.name))

    def find_services(self, r: RecordRequest, zone: str) -> Sequence[Hit]:
        if not self.namespace_exposed(r.namespace):
            raise NoSuchName()
        if not r.service:
            return []  # NODATA: the namespace exists
        svc = self.store.service(r.namespace, r.service)
        if svc is None:
            raise NoSuchName()
        ttl = self.opts.ttl
        base = service_name(r.service, r.namespace, zone)
        if self.opts.ignore_empty_service and svc.type != "ExternalName" and not svc.headless:
            if not self.has_endpoints(svc):
                raise NoSuchName()
        if svc.type == "ExternalName":
            # No endpoint names and no _port._proto names under an ExternalName.
            if r.endpoint or r.port or r.protocol or not svc.external_name:
                raise NoSuchName()
            hit = Hit(svc.external_name, 0, base, ttl)
            if hit.kind != dns.CNAME:
                raise NoSuchName()
            return [hit]
        if svc.headless or r.endpoint:
            if self.opts.noendpoints:
                raise NoSuchName()
            return self._slice_hits(r, self.store.slices(svc.namespace, svc.name), base, ttl)
        return _ip_hits(r, svc.ports, svc.cluster_ips, base, ttl)

    def _slice_hits(
        self, r: RecordRequest, slices: Iterable[EndpointSlice], base: str, ttl: int, mcs: bool = False
    ) -> Sequence[Hit]:
        """Hits of ready endpoints: ``<host>[.<cluster>].<base>`` per matching port, in slice-name order.

        Without an endpoint name to match they are made lazily (``LazyHits``);
        with one, the few that match are made at once.
        """
        ordered = sorted(slices, key=lambda s: s.name)
        pod_names = self.opts.endpoint_pod_names

        def rows() -> Iterator[tuple[str, str, tuple[Port, ...]]]:
            for ep, addr, sl in _ready(ordered, merge=False):
                host = endpoint_hostname(ep, addr, pod_names)
                if r.endpoint and (host != r.endpoint or (mcs and r.cluster != sl.cluster)):
                    continue
                yield addr, f"{host}.{sl.cluster}.{base}" if mcs else f"{host}.{base}", sl.ports

        if r.endpoint:
            return _endpoint_hits(r, rows(), ttl)
        count = sum(sl.ready_addresses * _matching_ports(r, sl.ports) for sl in ordered)
        if not count:
            raise NoSuchName()
        return LazyHits(count, lambda: _hits_of(r, rows(), ttl))

    def find_pods(self, r: RecordRequest, zone: str) -> list[Hit]:
        mode = self.opts.pods
        if mode == "disabled":
            raise NoSuchName()
        if not self.namespace_exposed(r.namespace):
            raise NoSuchName()
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
            raise NoSuchName() from None
        target = f"{name}.{r.namespace}.pod.{zone}"
        if mode == "insecure":
            return [Hit(ip, 0, target, self.opts.ttl)]
        # One hit per pod with that address in the namespace (host-network pods share one), as
        # CoreDNS: A answers are deduplicated, SRV weights count every pod.
        hits = [Hit(ip, 0, target, self.opts.ttl) for p in self.store.pods_with_ip(ip) if p.namespace == r.namespace]
        if not hits:
            raise NoSuchName()
        return hits

    def find_multicluster(self, r: RecordRequest, zone: str) -> Sequence[Hit]:
        if not self.namespace_exposed(r.namespace):
            raise NoSuchName()
        if not r.service:
            return []
        imp = self.store.service_import(r.namespace, r.service)
        if imp is None:
            raise NoSuchName()
        ttl = self.opts.ttl
        base = f"{r.service}.{r.namespace}.svc.{zone}"
        if self.opts.ignore_empty_service and imp.type != "Headless":
            if not any(sl.ready_addresses for sl in self.store.mcs_slices(r.namespace, r.service)):
                raise NoSuchName()
        if imp.type == "Headless" or r.endpoint:
            return self._slice_hits(r, self.store.mcs_slices(r.namespace, r.service), base, ttl, mcs=True)
        return _ip_hits(r, imp.ports, imp.ips, base, ttl)

    def find_zonal(self, r: RecordRequest, zone: str) -> list[Hit]:
        svc = self.store.service(r.namespace, r.service)
        if not self.namespace_exposed(r.namespace) or svc is None or not svc.headless:
            raise NoSuchName()
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

    # ------------------------------------------------------------ addresses → names
    def reverse_targets(self, ip: str) -> list[str]:
        """The names an IP address stands for (PTR targets, in the primary zone); NoSuchName if none."""
        zone = self.primary_zone()
        for svc in self.store.services_with_ip(ip):
            if self.opts.namespaces and svc.namespace not in self.opts.namespaces:
                continue
            return [f"{svc.name}.{svc.namespace}.svc.{zone}"]
        out = []
        for sl in self.store.slices_with_ip(ip):
            if self.opts.namespaces and sl.namespace not in self.opts.namespaces:
                continue
            for ep in sl.endpoints:
                if not ep.ready or ip not in ep.addresses:
                    continue
                host = endpoint_hostname(ep, ip, self.opts.endpoint_pod_names)
                out.append(f"{host}.{sl.service}.{sl.namespace}.svc.{zone}")
        if not out:
            raise NoSuchName()
        return list(dict.fromkeys(out))  # one endpoint listed in two slices of a Service: one PTR


def _ready(slices: Iterable[EndpointSlice], merge: bool) -> Iterator[tuple[Endpoint, str, EndpointSlice]]:
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


def _hits_of(r: RecordRequest, items: Iterable[tuple[str, str, tuple[Port, ...]]], ttl: int) -> Iterator[Hit]:
    """(address, name, ports) → a hit per matching port (port -1 when the slice has none)."""
    for addr, target, ports in items:
        if not ports:
            if not r.is_srv_form:
                yield Hit(addr, -1, target, ttl)
            continue
        for p in ports:
            if port_matches(r.port, r.protocol, p.name, p.protocol):
                yield Hit(addr, p.port, target, ttl)


def _endpoint_hits(r: RecordRequest, items: Iterable[tuple[str, str, tuple[Port, ...]]], ttl: int) -> list[Hit]:
    hits = list(_hits_of(r, items, ttl))
    if not hits:
        raise NoSuchName()
    return hits


def _matching_ports(r: RecordRequest, ports: tuple[Port, ...]) -> int:
    """How many hits one address of a slice with these ports makes (as ``_hits_of``)."""
    if not ports:
        return 0 if r.is_srv_form else 1
    return sum(1 for p in ports if port_matches(r.port, r.protocol, p.name, p.protocol))


def _ip_hits(r: RecordRequest, ports: Iterable[Port], ips: Iterable[str], target: str, ttl: int) -> list[Hit]:
    """Cluster IPs × matching ports; NXDOMAIN when no port matches (as CoreDNS)."""
    hits: list[Hit] = []
    found = False
    for p in ports:
        if port_matches(r.port, r.protocol, p.name, p.protocol):
            found = True
            hits.extend(Hit(ip, p.port, target, ttl) for ip in ips)
    if not found:
        raise NoSuchName()
    return hits


def port_matches(port: str, protocol: str, name: str, proto: str) -> bool:
    """A name's ``_port._proto`` (lower-cased; empty: any) against a Service or slice port (CoreDNS's)."""
    return (not port or port == name.lower()) and (not protocol or protocol == proto.lower())
