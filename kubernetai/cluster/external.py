"""What ``k8s_external`` finds in one stanza's store, as CoreDNS's kubernetes/external.go.  Pure.

A Service's external addresses (``spec.externalIPs``, then its load
balancer's ingress IPs or hostnames) published under another zone as
``<service>.<namespace>.<zone>``, ``_<port>._<proto>.<service>.<namespace>.<zone>``
and, with ``headless``, a headless Service's endpoints, as lookup.py's
``Hit``s (the stanza's TTL: SRV and CNAME records keep it; the plugin's own
``ttl`` goes on addresses).
"""

from __future__ import annotations

import socket

from kubernetai.cluster.lookup import Hit, View, endpoint_hostname, port_matches, reverse_address
from kubernetai.cluster.names import strip_underscore, strip_zone
from kubernetai.cluster.objects import is_packed

__all__ = ["NXDOMAIN", "NOERROR", "SERVFAIL", "find", "find_reverse", "labels_under", "ns_addresses", "published"]

NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


def labels_under(lname: str, lzone: str) -> list[str]:
    """The labels of ``lname`` left of ``lzone`` (both lower-cased, fully qualified)."""
    base = strip_zone(lname, lzone)
    return base.split(".") if base else []


def _is_address(text: str) -> bool:
    return is_packed(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def find(view: View, lname: str, lzone: str, headless: bool) -> tuple[list[Hit], int]:
    """What ``lname`` (lower-cased, under ``lzone``) means in this stanza: hits and a response code.

    A hit's host is an IP address or a load balancer's hostname (``Hit.kind``
    CNAME), its target what an SRV record points at (lower-case), its TTL the
    stanza's.  NXDOMAIN when the namespace is not exposed or no Service
    matches with something to publish; NOERROR without hits for a bare
    namespace name.
    """
    segs = labels_under(lname, lzone)
    if not segs:
        return [], SERVFAIL
    namespace = segs.pop()
    if not view.namespace_exposed(namespace):
        return [], NXDOMAIN
    if not segs:
        return [], NOERROR
    service = segs.pop()
    port = protocol = endpoint = ""
    if len(segs) == 1:
        endpoint = strip_underscore(segs[0])
    elif len(segs) == 2:
        port, protocol = strip_underscore(segs[0]), strip_underscore(segs[1])
    elif segs:
        return [], NXDOMAIN
    svc = view.store.service(namespace, service)
    if svc is None:
        return [], NXDOMAIN
    suffix = lzone if lzone != "." else ""
    ttl = view.opts.ttl
    hits: list[Hit] = []
    if headless and not svc.external and (svc.headless or endpoint):
        for ep, addr, ports in view.endpoints_of(svc):
            host = endpoint_hostname(ep, addr, view.opts.endpoint_pod_names)
            if endpoint and endpoint != host.lower():
                continue
            target = f"{host.lower()}.{service}.{namespace}.{suffix}"
            hits.extend(
                Hit(addr, p.port, target, ttl) for p in ports if port_matches(port, protocol, p.name, p.protocol)
            )
        return hits, NOERROR if hits else NXDOMAIN
    target = f"{service}.{namespace}.{suffix}"
    for address in svc.external:
        hits.extend(
            Hit(address, p.port, target, ttl) for p in svc.ports if port_matches(port, protocol, p.name, p.protocol)
        )
    return hits, NOERROR if hits else NXDOMAIN


def find_reverse(view: View, lname: str) -> list[str] | None:
    """PTR of a reverse name: ``<service>.<namespace>`` of each Service with that external IP; None if not one."""
    ip = reverse_address(lname)
    if ip is None:
        return None
    return [
        f"{svc.name}.{svc.namespace}"
        for svc in view.store.services_with_external(ip)
        if not view.opts.namespaces or svc.namespace in view.opts.namespaces
    ]


def ns_addresses(view: View, headless: bool) -> tuple[bool, list[str]]:
    """Our own addresses as k8s_external publishes them (CoreDNS's nsAddrs with external set).

    The Services whose endpoints hold one of our addresses give their
    external addresses (a headless one with ``headless``: its endpoints');
    ``found`` is False when none does, and the addresses are then our own.
    """
    out: list[str] = []
    found, own = view.own_services()
    for sl, svc in own:
        if headless and svc.headless:
            out.extend(addr for ep in sl.endpoints if ep.ready for addr in ep.addresses)
        else:
            out.extend(a for a in svc.external if _is_address(a))
    if not found:
        return False, list(view.local_ips)
    return True, out


def published(view: View, headless: bool) -> list[tuple[str, str]]:
    """(namespace, service) of every Service this stanza gives k8s_external something for (a transfer's list)."""
    out = []
    for (ns, name), svc in sorted(view.store.objects["Service"].items()):
        if not view.namespace_exposed(ns):
            continue
        if svc.external or (headless and svc.headless):
            out.append((ns, name))
    return out
