"""Query name under a stanza zone → RecordRequest.  Pure.

The shapes of the Kubernetes DNS specification, as CoreDNS parses them::

    service.namespace.svc.zone
    endpoint.service.namespace.svc.zone
    _port._proto.service.namespace.svc.zone
    endpoint.cluster.service.namespace.svc.zone            (multicluster zones)
    topozone.pin|prefer._zone.service.namespace.svc.zone   (zonal)
    dashed-ip.namespace.pod.zone

Labels are compared lower-cased; the query's own spelling is kept by the
caller for the answer's owner names.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["RecordRequest", "InvalidRequest", "parse_request", "strip_zone", "strip_underscore"]


class InvalidRequest(ValueError):
    """Not a name of the Kubernetes DNS schema: the answer is NXDOMAIN."""


class RecordRequest(NamedTuple):
    """The labels of a schema name (a tuple: one is made for every answer not cached)."""

    pod_or_svc: str = ""  # "svc", "pod" or "" for the apex, bare svc/pod
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""
    cluster: str = ""
    zone: str = ""  # topology zone of a zonal name
    zone_mode: str = ""  # "pin" or "prefer"

    @property
    def is_srv_form(self) -> bool:
        return bool(self.port or self.protocol)


def strip_zone(qname: str, zone: str) -> str:
    """``a.b.zone.`` → ``a.b`` (both lower-cased, fully qualified)."""
    if qname == zone:
        return ""
    return qname[: -len(zone) - 1] if zone != "." else qname.rstrip(".")


def strip_underscore(label: str) -> str:
    return label[1:] if label.startswith("_") else label


def parse_request(qname: str, zone: str, multicluster: bool = False, zonal: bool = False) -> RecordRequest:
    """Parse a lower-cased query name in ``zone``; raises InvalidRequest."""
    if zone != "." and qname != zone and not qname.endswith("." + zone):
        raise InvalidRequest(f"{qname} is not in zone {zone}")
    base = strip_zone(qname, zone)
    if base in ("", "svc", "pod"):
        return RecordRequest()
    segs = base.split(".")
    last = len(segs) - 1
    kind = segs[last]
    if kind not in ("svc", "pod"):
        raise InvalidRequest(f"{qname}: neither svc nor pod")
    if last < 1:
        return RecordRequest(kind)
    if last < 2:
        return RecordRequest(kind, segs[last - 1])
    if last < 3:  # service.namespace.kind: the common name, made without the fields dict below
        return RecordRequest(kind, segs[1], segs[0])
    fields: dict[str, str] = {"pod_or_svc": kind, "namespace": segs[last - 1], "service": segs[last - 2]}
    last -= 3
    left = segs[: last + 1]
    if len(left) == 1:
        fields["endpoint"] = left[0]
    elif len(left) == 2:
        # A leading underscore on either label makes it _port._proto (CoreDNS), even in a multicluster zone.
        if multicluster and not (left[0].startswith("_") or left[1].startswith("_")):
            fields["endpoint"], fields["cluster"] = left[0], left[1]
        else:
            fields["port"], fields["protocol"] = strip_underscore(left[0]), strip_underscore(left[1])
    elif len(left) >= 3 and zonal and left[-1] == "_zone":
        if kind != "svc" or multicluster or left[-2] not in ("pin", "prefer"):
            raise InvalidRequest(f"{qname}: not a valid zonal name")
        # Every label left of pin|prefer._zone is the topology zone (zones may hold dots).
        fields["zone"], fields["zone_mode"] = ".".join(left[:-2]), left[-2]
    else:
        raise InvalidRequest(f"{qname}: too many labels")
    return RecordRequest(**fields)
