"""Kubernetes API JSON → compact frozen values holding only what DNS needs.

Objects are shrunk on arrival, one page or one watch event at a time, so raw
API JSON is never kept (see DESIGN.md: ~230–300 MB of parsed JSON for 10k
services / 100k endpoints versus ~32 MB of slotted values).  Strings that
repeat across objects (namespaces, port names, protocols) are interned.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from kubernetai.lazy_repr import LazyRepr

__all__ = [
    "Port",
    "Service",
    "Endpoint",
    "EndpointSlice",
    "Pod",
    "Namespace",
    "ServiceImport",
    "ObjectError",
    "SERVICE_NAME_LABEL",
    "MCS_SERVICE_NAME_LABEL",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MCS_SERVICE_NAME_LABEL = "multicluster.kubernetes.io/service-name"
MCS_CLUSTER_LABEL = "multicluster.kubernetes.io/source-cluster"

_intern = sys.intern


class ObjectError(ValueError):
    """An API object lacks a field DNS needs; the event is skipped and logged."""


@attrs.frozen(slots=True, repr=False)
class Port(LazyRepr):
    name: str
    protocol: str
    port: int


@attrs.frozen(slots=True, repr=False)
class Service(LazyRepr):
    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]
    ports: tuple[Port, ...]
    external_name: str = ""
    # What k8s_external publishes, in CoreDNS's order: spec.externalIPs, then each
    # status.loadBalancer.ingress's IP, or its hostname when it has no IP.
    external: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def headless(self) -> bool:
        return self.type != "ExternalName" and (not self.cluster_ips or self.cluster_ips[0] == "None")


@attrs.frozen(slots=True, repr=False)
class Endpoint(LazyRepr):
    addresses: tuple[str, ...]
    hostname: str = ""
    ready: bool = True
    pod: str = ""  # targetRef name when it is a Pod
    zone: str = ""


@attrs.frozen(slots=True, repr=False)
class EndpointSlice(LazyRepr):
    namespace: str
    name: str
    service: str
    endpoints: tuple[Endpoint, ...]
    ports: tuple[Port, ...]
    mcs: bool = False  # owned by a ServiceImport (multicluster.kubernetes.io/service-name)
    cluster: str = ""  # MCS source cluster label, if any
    # Addresses of ready endpoints, counted once: an answer's SRV weights need
    # the count of every hit, not the hits themselves.
    ready_addresses: int = attrs.field(
        init=False,
        eq=False,
        default=attrs.Factory(lambda s: sum(len(ep.addresses) for ep in s.endpoints if ep.ready), takes_self=True),
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@attrs.frozen(slots=True, repr=False)
class Pod(LazyRepr):
    namespace: str
    name: str
    ips: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@attrs.frozen(slots=True, repr=False)
class Namespace(LazyRepr):
    name: str

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)


@attrs.frozen(slots=True, repr=False)
class ServiceImport(LazyRepr):
    namespace: str
    name: str
    type: str  # ClusterSetIP or Headless
    ips: tuple[str, ...]
    ports: tuple[Port, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _reduce(self: Any) -> tuple:
    """Pickle as the class and its arguments: unpickling then makes no per-object state dict.

    attrs pickles slotted classes through a state dict per object; for the
    100,000 endpoints a manifests child sends back, those temporaries left
    the parent's heap half empty (bench/README.md, memory)."""
    cls = type(self)
    return cls, tuple(getattr(self, name) for name in _INIT_FIELDS[cls])


_INIT_FIELDS: dict[type, tuple[str, ...]] = {}
for _cls in (Port, Service, Endpoint, EndpointSlice, Pod, Namespace, ServiceImport):
    _INIT_FIELDS[_cls] = tuple(f.name for f in attrs.fields(_cls) if f.init)
    _cls.__reduce__ = _reduce  # type: ignore[method-assign]


def _meta(obj: Mapping[str, Any], in_dns: bool = True) -> tuple[str, str, Mapping[str, Any]]:
    """Namespace, name and metadata; the namespace (and, ``in_dns``, the name) must be DNS labels.

    Pods and EndpointSlices are named as DNS subdomains (up to 253 characters)
    and their names are not part of any answer: they pass ``in_dns=False``.
    """
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ObjectError("object without metadata.name")
    namespace = meta.get("namespace") or ""
    for label in [namespace] * bool(namespace) + [name] * in_dns:
        if not _is_label(label):
            raise ObjectError(f"{label!r} cannot be a DNS label")
    return _intern(namespace), name, meta


# What cannot be a DNS name is left out when objects arrive, so that one bad
# object never makes the answers, transfers or PTRs of others fail to encode.


def _is_label(text: Any) -> bool:
    return isinstance(text, str) and 0 < len(text) <= 63 and "." not in text


def _is_domain(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    name = text.rstrip(".")
    return 0 < len(name) <= 253 and all(0 < len(label) <= 63 for label in name.split("."))


def is_packed(family: int, text: str) -> bool:
    """Whether ``text`` is an address of ``family`` (socket.AF_INET or AF_INET6)."""
    try:
        socket.inet_pton(family, text)
    except OSError:
        return False
    return True


def _is_ip(text: Any) -> bool:
    return isinstance(text, str) and (is_packed(socket.AF_INET, text) or is_packed(socket.AF_INET6, text))


def _ports(items: Any) -> tuple[Port, ...]:
    out = []
    for p in items or ():
        port = p.get("port")
        if port is None:
            continue
        out.append(Port(_intern(p.get("name") or ""), _intern((p.get("protocol") or "TCP").upper()), int(port)))
    return tuple(out)


def service(obj: Mapping[str, Any]) -> Service:
    ns, name, meta = _meta(obj)
    spec = obj.get("spec") or {}
    svc_type = _intern(spec.get("type") or "ClusterIP")
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    for ip in ips:
        if ip != "None" and not _is_ip(ip):
            raise ObjectError(f"clusterIP {ip!r} is not an IP address")
    external = (spec.get("externalName") or "") if svc_type == "ExternalName" else ""
    if external and not _is_domain(external):
        raise ObjectError(f"externalName {external[:80]!r} cannot be a DNS name")
    return Service(ns, name, svc_type, tuple(ips), _ports(spec.get("ports")), external, _external_addresses(obj))


def _external_addresses(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """spec.externalIPs and the load balancer's ingress (an IP, else a hostname); what is neither is left out."""
    out = [ip for ip in (obj.get("spec") or {}).get("externalIPs") or () if _is_ip(ip)]
    for ingress in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ():
        if not isinstance(ingress, Mapping):
            continue
        if ingress.get("ip"):
            if _is_ip(ingress["ip"]):
                out.append(ingress["ip"])
        elif _is_domain(ingress.get("hostname")):
            out.append(ingress["hostname"])
    return tuple(out)


def endpoint_slice(obj: Mapping[str, Any]) -> EndpointSlice:
    ns, name, meta = _meta(obj, in_dns=False)
    labels = meta.get("labels") or {}
    mcs = SERVICE_NAME_LABEL not in labels and MCS_SERVICE_NAME_LABEL in labels
    owner = labels.get(MCS_SERVICE_NAME_LABEL if mcs else SERVICE_NAME_LABEL) or ""
    endpoints = []
    for ep in obj.get("endpoints") or ():
        conditions = ep.get("conditions") or {}
        ref = ep.get("targetRef") or {}
        hostname = ep.get("hostname") or ""
        endpoints.append(
            Endpoint(
                tuple(a for a in ep.get("addresses") or () if _is_ip(a)),
                hostname if _is_label(hostname) else "",  # not a label: named by its address instead
                # Kubernetes: a nil ready condition means ready.
                conditions.get("ready") is not False,
                ref.get("name", "") if ref.get("kind") == "Pod" else "",
                _intern(ep.get("zone") or ""),
            )
        )
    return EndpointSlice(
        ns,
        name,
        owner,
        tuple(endpoints),
        _ports(obj.get("ports")),
        mcs,
        _intern(labels.get(MCS_CLUSTER_LABEL) or ""),
    )


def pod(obj: Mapping[str, Any]) -> Pod:
    ns, name, meta = _meta(obj, in_dns=False)
    status = obj.get("status") or {}
    # As CoreDNS (1.15): every address in status.podIPs, and a terminating pod has none (it is not indexed).
    if meta.get("deletionTimestamp"):
        return Pod(ns, name, ())
    ips = [str(p["ip"]) for p in status.get("podIPs") or () if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]  # an old API server that fills podIP only
    return Pod(ns, name, tuple(ips))


def namespace(obj: Mapping[str, Any]) -> Namespace:
    _, name, _ = _meta(obj)
    return Namespace(name)


def service_import(obj: Mapping[str, Any]) -> ServiceImport:
    ns, name, _ = _meta(obj)
    spec = obj.get("spec") or {}
    ips = tuple(spec.get("ips") or ())
    if not all(_is_ip(ip) for ip in ips):
        raise ObjectError(f"ServiceImport ips {list(ips)[:4]!r}: not all IP addresses")
    return ServiceImport(ns, name, _intern(spec.get("type") or "ClusterSetIP"), ips, _ports(spec.get("ports")))
