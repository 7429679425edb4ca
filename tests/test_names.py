"""The query-name parser, table-driven (CoreDNS parse.go's shapes)."""

from __future__ import annotations

import pytest

from kubernetai.cluster.names import InvalidRequest, RecordRequest, parse_request

Z = "cluster.local."

GOOD = [
    ("cluster.local.", {}, RecordRequest()),
    ("svc.cluster.local.", {}, RecordRequest()),
    ("pod.cluster.local.", {}, RecordRequest()),
    ("ns.svc.cluster.local.", {}, RecordRequest("svc", "ns")),
    ("web.ns.svc.cluster.local.", {}, RecordRequest("svc", "ns", "web")),
    ("ep1.web.ns.svc.cluster.local.", {}, RecordRequest("svc", "ns", "web", endpoint="ep1")),
    ("_http._tcp.web.ns.svc.cluster.local.", {}, RecordRequest("svc", "ns", "web", port="http", protocol="tcp")),
    ("http.tcp.web.ns.svc.cluster.local.", {}, RecordRequest("svc", "ns", "web", port="http", protocol="tcp")),
    ("1-2-3-4.ns.pod.cluster.local.", {}, RecordRequest("pod", "ns", "1-2-3-4")),
    (
        "ep.c1.web.ns.svc.cluster.local.",
        {"multicluster": True},
        RecordRequest("svc", "ns", "web", endpoint="ep", cluster="c1"),
    ),
    (
        "_http._tcp.web.ns.svc.cluster.local.",
        {"multicluster": True},
        RecordRequest("svc", "ns", "web", port="http", protocol="tcp"),
    ),
    (
        "us-1a.pin._zone.web.ns.svc.cluster.local.",
        {"zonal": True},
        RecordRequest("svc", "ns", "web", zone="us-1a", zone_mode="pin"),
    ),
    (
        "us-1a.prefer._zone.web.ns.svc.cluster.local.",
        {"zonal": True},
        RecordRequest("svc", "ns", "web", zone="us-1a", zone_mode="prefer"),
    ),
    ("web.ns.svc.", {"zone": "."}, RecordRequest("svc", "ns", "web")),
    # issue 11: an underscore on either label is _port._proto, also in a multicluster zone
    (
        "_http.tcp.web.ns.svc.cluster.local.",
        {"multicluster": True},
        RecordRequest("svc", "ns", "web", port="http", protocol="tcp"),
    ),
    (
        "http._tcp.web.ns.svc.cluster.local.",
        {"multicluster": True},
        RecordRequest("svc", "ns", "web", port="http", protocol="tcp"),
    ),
    # issue 11: a topology zone with dots: every label left of pin|prefer._zone
    (
        "zone.a.pin._zone.svc.ns.svc.cluster.local.",
        {"zonal": True},
        RecordRequest("svc", "ns", "svc", zone="zone.a", zone_mode="pin"),
    ),
]


@pytest.mark.parametrize("qname,kw,want", GOOD, ids=[g[0] for g in GOOD])
def test_parse(qname, kw, want):
    zone = kw.pop("zone", Z)
    assert parse_request(qname, zone, **kw) == want


BAD = [
    ("web.ns.pood.cluster.local.", {}),
    ("too.long.for.what.i.am.ns.svc.cluster.local.", {}),
    ("us-1a.pin._zone.web.ns.svc.cluster.local.", {}),  # zonal names need `zonal`
    ("us-1a.florp._zone.web.ns.svc.cluster.local.", {"zonal": True}),
    ("us-1a.pin._zone.web.ns.pod.cluster.local.", {"zonal": True}),
    ("us-1a.pin._zone.web.ns.svc.cluster.local.", {"zonal": True, "multicluster": True}),
    ("web.ns.svc.other.local.", {}),
]


@pytest.mark.parametrize("qname,kw", BAD, ids=[b[0] for b in BAD])
def test_invalid(qname, kw):
    with pytest.raises(InvalidRequest):
        parse_request(qname, Z, **kw)
