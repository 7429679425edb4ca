"""A stanza's short answer: a ClusterIP Service's own name, decided without the general path's objects.

The names asked most, ``service.namespace.svc.zone`` (its A and AAAA, the
NODATA of its other types, the NXDOMAIN of a Service or namespace that is
not there), cost an uncached answer ~60 µs through the general path
(``Question``, ``RecordRequest``, ``Hit``, ``RRHeader`` and the chain's and
server's bookkeeping, in Python).  Here the same decision is made from the
store directly and the answer records come out as wire bytes; whatever is
not exactly that shape or needs more thought (headless and ExternalName
Services, ports, endpoints, pods, multicluster and reverse zones,
``ignore empty_service``, a stanza not synced yet) is ``None``: the general
path answers it.  tests/test_short_path.py holds the two paths to the same
bytes and the same cache validity over random clusters, options and queries.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.names import dns

from kubernetai.cluster.lookup import port_matches, service_name
from kubernetai.cluster.names import strip_underscore, strip_zone
from kubernetai.cluster.records import _wire_name, negative_soa, srv_weight
from kubernetai.rr import owner_zone
from kubernetai.shortpath import NOT_MINE, NotMine, Short
from kubernetai.zones import label_count, match_zone

__all__ = ["short_answer"]

# An address record whose owner is the question itself: a pointer to offset 12.
_OWNER_IS_QUESTION = b"\xc0\x0c"
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength


def short_answer(resolver: Any, lname: str, name: str, qtype: int) -> Short | NotMine | None:
    """The stanza's answer to ``name`` (as asked, fully qualified; ``lname`` lower-cased), or None.

    ``KubernetesResolver.short_answer`` (``resolver`` is the stanza); class
    IN.  ``NOT_MINE`` when the name is outside its zones.  Every type but A,
    AAAA and SRV is NODATA for an existing Service's name, as in
    records.answer; transfers are the general path's (REFUSED).
    """
    lzone = match_zone(lname, resolver.zones)
    if lzone is None:
        return NOT_MINE
    if qtype == dns.AXFR or qtype == dns.IXFR:
        return None
    opts = resolver.opts
    store = resolver.store
    if lzone in opts.multicluster or lzone.endswith("arpa.") or opts.ignore_empty_service or not store.synced:
        return None
    labels = strip_zone(lname, lzone).split(".")
    srv = len(labels) == 5
    if not (len(labels) == 3 or srv) or labels[-1] != "svc" or srv != (qtype == dns.SRV):
        return None  # SRV only of _port._proto names; those names' other types go the general way
    service, namespace = labels[-3], labels[-2]
    fine = store.fine_version(namespace, service)
    version = (fine, fine())
    zone_labels = label_count(lzone)
    zone = owner_zone(name, lzone)
    svc = store.service(namespace, service) if resolver.view.namespace_exposed(namespace) else None
    if svc is not None and (svc.type == "ExternalName" or svc.headless):
        return None
    ports = svc.ports if svc is not None else ()
    if srv:
        port, protocol = strip_underscore(labels[0]), strip_underscore(labels[1])
        ports = tuple(p for p in ports if port_matches(port, protocol, p.name, p.protocol))
    if not ports:  # no such Service, or a ClusterIP one no port of which matches: NXDOMAIN (CoreDNS)
        soa = negative_soa(resolver.view, zone)
        return Short(dns.ENAME, version, zone_labels, soa=soa, fallthrough=opts.fallthrough.through(lname))
    assert svc is not None
    packed = []
    for ip in svc.cluster_ips:
        try:
            packed.append(socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip))
        except OSError:
            return None  # not an address: the general path decides what it is
    if srv:
        return _srv(zone, service, namespace, ports, svc.cluster_ips, packed, opts.ttl, version, zone_labels)
    if qtype == dns.A or qtype == dns.AAAA:
        size = 4 if qtype == dns.A else 16
        written = b""
        seen: set[str] = set()
        for text, ip in zip(svc.cluster_ips, packed, strict=True):
            if len(ip) == size and text not in seen:
                seen.add(text)
                written += _OWNER_IS_QUESTION + _RR_FIXED.pack(qtype, dns.IN, opts.ttl, size) + ip
        if seen:
            return Short(dns.OK, version, zone_labels, written, len(seen))
    return Short(dns.OK, version, zone_labels, soa=negative_soa(resolver.view, zone))  # NODATA


def _srv(
    zone: str,
    service: str,
    namespace: str,
    ports: tuple,
    ips: tuple[str, ...],
    packed: list[bytes],
    ttl: int,
    version: tuple[Any, object],
    zone_labels: int,
) -> Short | None:
    """SRV of ``_port._proto.service.namespace.svc.zone``: a record per port, the cluster IPs as glue.

    As records._srv: one hit per matching port and cluster IP, the weight
    shared by every hit, one SRV per port number, one glue record per IP.
    """
    hits = len(ports) * len(ips)
    if hits > 64:
        return None  # more than an answer holds: the general path truncates
    weight = srv_weight(hits)
    srv = tuple((weight, port) for port in dict.fromkeys(p.port for p in ports))
    glue = tuple(dict(zip(ips, packed, strict=True)).values())  # one per address as written
    return Short(
        dns.OK,
        version,
        zone_labels,
        srv=srv,
        target=_wire_name(service_name(service, namespace, zone)),
        glue=glue,
        ttl=ttl,
    )
