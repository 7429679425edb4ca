"""Issue 16: ``k8s_external`` over every kubernetai stanza, in process.

The single-cluster table is CoreDNS's own (plugin/k8s_external/external_test.go,
the same Services read from Kubernetes objects), then the apex, several clusters
with and without ``merge``, a stale cluster, filters, fallthrough, the answer
cache and the transfer.  The Corefile is parsed and built as the server does;
the stanzas' stores are filled directly (what their watches would do).
"""

from __future__ import annotations

import os
import re
import tempfile

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import pytest_twisted
from twisted.internet import reactor, task

from kubernetai.build import load_text
from kubernetai.cluster.kinds import convert
from kubernetai.corefile import CorefileError
from kubernetai.server import KubeDNSServerFactory

from .conftest import result
from .fakeapi import namespace, service, slice_
from .test_multicluster import clusters as clusters  # noqa: F401  (the fixture; re-exported for pytest)

HTTP = [("http", "TCP", 80)]
TESTNS = [
    namespace("testns"),
    namespace("hidden"),
    service("svc1", "testns", ip="10.0.0.1", ports=HTTP, external_ips=["1.2.3.4"]),
    service("svc6", "testns", ip="10.0.0.3", ports=HTTP, external_ips=["1:2::5"]),
    service("svc11", "testns", ip="10.0.0.4", ports=HTTP, type="LoadBalancer", ingress=[{"ip": "2.3.4.5"}]),
    service(
        "svc12", "testns", ip="10.0.0.5", ports=HTTP, type="LoadBalancer", ingress=[{"hostname": "dummy.hostname"}]
    ),
    service("svc-headless", "testns", ip=None, ports=HTTP),
    slice_(
        "svc-headless", ["1.2.3.4", "1.2.3.5"], "testns", hostnames=["endpoint-svc-0", "endpoint-svc-1"], ports=HTTP
    ),
    service("plain", "testns", ip="10.0.0.9", ports=HTTP),
    service("svc1", "hidden", ip="10.0.0.7", ports=HTTP, external_ips=["9.9.9.9"]),
]
SOA = "example.com. 5 IN SOA ns1.dns.example.com. hostmaster.dns.example.com. {serial} 7200 1800 86400 5"


def build(corefile: str, *contents: list[dict]):
    """The Corefile's plan, its stanzas filled with ``contents`` in order, and a server for its blocks."""
    clock = task.Clock()
    clock.advance(1_700_000_000)
    # The stanzas are never started: their files only have to exist.
    files = tempfile.mkdtemp()
    for name in set(re.findall(r"manifests (\S+)", corefile)):
        open(os.path.join(files, name), "w").close()
    plan = load_text(re.sub(r"manifests (\S+)", rf"manifests {files}/\1", corefile), 53, clock)
    for stanza, objects in zip(plan.server.clusters, contents, strict=True):
        fill(stanza.store, objects)
    f = KubeDNSServerFactory(blocks=[b.block for b in plan.blocks], clock=clock)
    return f, plan, clock


def fill(store, objects: list[dict]) -> None:
    for kind in ("Namespace", "Service", "EndpointSlice"):
        store.require((kind, ""))
        store.relist((kind, ""), [convert(kind, o) for o in objects if o["kind"] == kind])


def ask(f, name: str, rdtype: str = "A", proto: str = "udp") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    out = result(f.handle_packet(q.to_wire(), ("127.0.0.1", 5353), proto))
    return dns.message.from_wire(out)


def texts(section) -> list[str]:
    return sorted(rr.to_text() for rr in section if rr.rdtype != dns.rdatatype.OPT)


def lines(section) -> list[str]:
    out = []
    for rrset in section:
        for rd in rrset:
            out.append(f"{rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}")
    return sorted(out)


ONE = """\
. {
    k8s_external example.com in-addr.arpa {
        headless
    }
    kubernetai cluster.local {
        manifests never-read.yaml
        namespaces testns
    }
}
"""

# CoreDNS's external_test.go table: (name, type, rcode, answer, authority is the SOA, additional).
CASES = [
    ("4.3.2.1.in-addr.arpa.", "PTR", "NOERROR", ["4.3.2.1.in-addr.arpa. 5 IN PTR svc1.testns.example.com."], False, []),
    ("svc1.testns.example.com.", "PTR", "NOERROR", [], True, []),
    ("not-existing.testns.example.com.", "PTR", "NXDOMAIN", [], True, []),
    ("svc1.testns.example.com.", "A", "NOERROR", ["svc1.testns.example.com. 5 IN A 1.2.3.4"], False, []),
    (
        "svc1.testns.example.com.",
        "SRV",
        "NOERROR",
        ["svc1.testns.example.com. 5 IN SRV 0 100 80 svc1.testns.example.com."],
        False,
        ["svc1.testns.example.com. 5 IN A 1.2.3.4"],
    ),
    ("*._not-udp-or-tcp.svc1.testns.example.com.", "SRV", "NXDOMAIN", [], True, []),
    (
        "_http._tcp.svc1.testns.example.com.",
        "SRV",
        "NOERROR",
        ["_http._tcp.svc1.testns.example.com. 5 IN SRV 0 100 80 svc1.testns.example.com."],
        False,
        ["svc1.testns.example.com. 5 IN A 1.2.3.4"],
    ),
    ("svc1.testns.example.com.", "AAAA", "NOERROR", [], True, []),
    ("svc0.testns.example.com.", "AAAA", "NXDOMAIN", [], True, []),
    ("svc0.testns.example.com.", "A", "NXDOMAIN", [], True, []),
    ("svc0.svc-nons.example.com.", "A", "NXDOMAIN", [], True, []),
    ("svc6.testns.example.com.", "AAAA", "NOERROR", ["svc6.testns.example.com. 5 IN AAAA 1:2::5"], False, []),
    (
        "_http._tcp.svc6.testns.example.com.",
        "SRV",
        "NOERROR",
        ["_http._tcp.svc6.testns.example.com. 5 IN SRV 0 100 80 svc6.testns.example.com."],
        False,
        ["svc6.testns.example.com. 5 IN AAAA 1:2::5"],
    ),
    ("testns.example.com.", "A", "NOERROR", [], True, []),
    ("testns.example.com.", "SOA", "NOERROR", [], True, []),
    ("svc11.testns.example.com.", "A", "NOERROR", ["svc11.testns.example.com. 5 IN A 2.3.4.5"], False, []),
    (
        "svc11.testns.example.com.",
        "SRV",
        "NOERROR",
        ["svc11.testns.example.com. 5 IN SRV 0 100 80 svc11.testns.example.com."],
        False,
        ["svc11.testns.example.com. 5 IN A 2.3.4.5"],
    ),
    ("svc12.testns.example.com.", "A", "NOERROR", ["svc12.testns.example.com. 5 IN CNAME dummy.hostname."], False, []),
    (
        "_http._tcp.svc12.testns.example.com.",
        "SRV",
        "NOERROR",
        ["_http._tcp.svc12.testns.example.com. 5 IN SRV 0 100 80 dummy.hostname."],
        False,
        [],
    ),
    (
        "svc-headless.testns.example.com.",
        "A",
        "NOERROR",
        ["svc-headless.testns.example.com. 5 IN A 1.2.3.4", "svc-headless.testns.example.com. 5 IN A 1.2.3.5"],
        False,
        [],
    ),
    (
        "svc-headless.testns.example.com.",
        "SRV",
        "NOERROR",
        [
            "svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-0.svc-headless.testns.example.com.",
            "svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-1.svc-headless.testns.example.com.",
        ],
        False,
        [
            "endpoint-svc-0.svc-headless.testns.example.com. 5 IN A 1.2.3.4",
            "endpoint-svc-1.svc-headless.testns.example.com. 5 IN A 1.2.3.5",
        ],
    ),
    (
        "endpoint-svc-1.svc-headless.testns.example.com.",
        "SRV",
        "NOERROR",
        [
            "endpoint-svc-1.svc-headless.testns.example.com. 5 IN SRV 0 100 80 "
            "endpoint-svc-1.svc-headless.testns.example.com."
        ],
        False,
        ["endpoint-svc-1.svc-headless.testns.example.com. 5 IN A 1.2.3.5"],
    ),
    (
        "endpoint-svc-0.svc-headless.testns.example.com.",
        "A",
        "NOERROR",
        ["endpoint-svc-0.svc-headless.testns.example.com. 5 IN A 1.2.3.4"],
        False,
        [],
    ),
    # Ours beyond CoreDNS's table: a Service without external addresses, and one the namespace filter hides.
    ("plain.testns.example.com.", "A", "NXDOMAIN", [], True, []),
    ("svc1.hidden.example.com.", "A", "NXDOMAIN", [], True, []),
    ("a.b.c.svc1.testns.example.com.", "A", "NXDOMAIN", [], True, []),
    ("9.9.9.9.in-addr.arpa.", "PTR", "NXDOMAIN", [], True, []),
]


@pytest.fixture(scope="module")
def one():
    f, plan, _ = build(ONE, TESTNS)
    return f, plan


@pytest.mark.parametrize(("name", "rdtype", "rcode", "answer", "soa", "additional"), CASES)
def test_corednss_table(one, name, rdtype, rcode, answer, soa, additional):
    f, plan = one
    r = ask(f, name, rdtype)
    assert dns.rcode.to_text(r.rcode()) == rcode
    assert r.flags & dns.flags.AA
    assert lines(r.answer) == sorted(answer)
    assert lines(r.additional) == sorted(additional)
    authority = lines(r.authority)
    if soa:
        serial = int(plan.server.clusters[0].store.last_modified)
        zone = "in-addr.arpa." if name.endswith("in-addr.arpa.") else "example.com."
        want = SOA.format(serial=serial).replace("example.com.", zone)
        assert authority == [want]
    else:
        assert authority == []


def test_the_apex_soa_ns_and_glue_under_the_apex_label():
    f, plan, _ = build(ONE.replace("headless", "headless\n        apex ext\n        ttl 30"), TESTNS)
    serial = int(plan.server.clusters[0].store.last_modified)
    soa = f"example.com. 30 IN SOA ns1.ext.example.com. hostmaster.ext.example.com. {serial} 7200 1800 86400 30"
    r = ask(f, "example.com.", "SOA")
    assert lines(r.answer) == [soa] and r.flags & dns.flags.AA
    r = ask(f, "example.com.", "NS")
    assert lines(r.answer) == ["example.com. 30 IN NS ns1.ext.example.com."]
    # No Service of ours has our address: the glue is our own address (none here: bound to no address).
    for name, rdtype, rcode in [
        ("example.com.", "A", "NOERROR"),
        ("ext.example.com.", "A", "NOERROR"),
        ("ns1.ext.example.com.", "TXT", "NOERROR"),
        ("ns2.ext.example.com.", "A", "NXDOMAIN"),
        ("a.b.ext.example.com.", "A", "NXDOMAIN"),
    ]:
        r = ask(f, name, rdtype)
        assert dns.rcode.to_text(r.rcode()) == rcode, name
        assert lines(r.authority) == [soa], name


def test_the_glue_is_the_external_address_of_the_service_in_front_of_us():
    text = ONE.replace(". {", ".:53 {\n    bind 10.1.0.7")
    objects = [
        *TESTNS,
        service("dns", "testns", ip="10.0.0.53", ports=[("dns", "UDP", 53)], external_ips=["203.0.113.53"]),
        slice_("dns", ["10.1.0.7"], "testns", ports=[("dns", "UDP", 53)]),
    ]
    f, _, _ = build(text, objects)
    r = ask(f, "example.com.", "NS")
    assert lines(r.additional) == ["ns1.dns.example.com. 5 IN A 203.0.113.53"]
    r = ask(f, "ns1.dns.example.com.", "A")
    assert lines(r.answer) == ["ns1.dns.example.com. 5 IN A 203.0.113.53"]
    r = ask(f, "ns1.dns.example.com.", "AAAA")
    assert r.answer == [] and len(r.authority) == 1


# ------------------------------------------------------------------ several clusters

THREE = """\
. {
    k8s_external example.com {
        %s
    }
    kubernetai cluster.local {
        manifests a.yaml
        name east
        fallthrough
    }
    kubernetai cluster.local {
        manifests b.yaml
        name west
        fallthrough
    }
    kubernetai cluster.local {
        manifests c.yaml
        name north
    }
}
"""


def cluster(*services: dict) -> list[dict]:
    return [namespace("default"), *services]


EAST = cluster(
    service("web", ip="10.96.0.1", ports=HTTP, type="LoadBalancer", ingress=[{"ip": "198.51.100.1"}]),
    service("only-east", ip="10.96.0.2", ports=HTTP, external_ips=["198.51.100.2"]),
    service("internal", ip="10.96.0.3", ports=HTTP),
)
WEST = cluster(
    service(
        "web",
        ip="10.97.0.1",
        ports=HTTP,
        type="LoadBalancer",
        ingress=[{"ip": "198.51.100.11"}, {"ip": "2001:db8::11"}],
    ),
    service("internal", ip="10.97.0.3", ports=HTTP, external_ips=["198.51.100.13"]),
)
NORTH = cluster(
    service("web", ip="10.98.0.1", ports=HTTP, type="LoadBalancer", ingress=[{"ip": "198.51.100.21"}]),
    service("only-north", ip="10.98.0.4", ports=HTTP, external_ips=["198.51.100.24"]),
)


def addresses(r) -> list[str]:
    return sorted(rd.address for rrset in r.answer for rd in rrset if rrset.rdtype in (1, 28))


def test_three_clusters_the_first_that_publishes_a_service_answers():
    f, _, _ = build(THREE % "", EAST, WEST, NORTH)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1"]
    assert addresses(ask(f, "web.default.example.com.", "AAAA")) == []  # east answers, and has no IPv6
    assert addresses(ask(f, "only-north.default.example.com.")) == ["198.51.100.24"]
    # east has "internal" without an external address: west, which publishes it, answers
    assert addresses(ask(f, "internal.default.example.com.")) == ["198.51.100.13"]
    r = ask(f, "nowhere.default.example.com.")
    assert r.rcode() == dns.rcode.NXDOMAIN and len(r.authority) == 1
    srv = ask(f, "_http._tcp.web.default.example.com.", "SRV")
    assert lines(srv.additional) == ["web.default.example.com. 5 IN A 198.51.100.1"]


def test_two_clusters_with_merge_answer_every_clusters_addresses():
    two = (THREE % "merge").replace(
        "    kubernetai cluster.local {\n        manifests c.yaml\n        name north\n    }\n", ""
    )
    f, _, _ = build(two, EAST, WEST)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.11"]
    assert addresses(ask(f, "web.default.example.com.", "AAAA")) == ["2001:db8::11"]
    assert addresses(ask(f, "only-east.default.example.com.")) == ["198.51.100.2"]
    # SRV is not merged: the first cluster's
    srv = ask(f, "web.default.example.com.", "SRV")
    assert lines(srv.additional) == ["web.default.example.com. 5 IN A 198.51.100.1"]


def test_three_clusters_with_merge():
    f, _, _ = build(THREE % "merge", EAST, WEST, NORTH)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.11", "198.51.100.21"]


class Down:
    """A stand-in for a stanza's watches: down since ``since`` (None: up)."""

    def __init__(self, since):
        self.since = since

    def __call__(self):
        return self.since


def test_a_stale_cluster_is_left_out_of_merged_answers_and_back_when_it_returns():
    f, plan, clock = build(THREE % "merge\n        stale 30s", EAST, WEST, NORTH)
    west = plan.server.clusters[1]
    west.down_since = Down(None)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.11", "198.51.100.21"]
    west.down_since = Down(clock.seconds())
    clock.advance(29)
    assert "198.51.100.11" in addresses(ask(f, "web.default.example.com."))  # not stale yet (and cached)
    clock.advance(2)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.21"]  # the cache knows
    # Only a stale cluster has it: its addresses, rather than nothing.
    assert addresses(ask(f, "internal.default.example.com.")) == ["198.51.100.13"]
    west.down_since = Down(None)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.11", "198.51.100.21"]


def test_answers_are_cached_while_the_stores_are_unchanged_and_change_with_them():
    f, plan, _ = build(THREE % "merge", EAST, WEST, NORTH)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.11", "198.51.100.21"]
    hits = f.answer_cache.hits
    ask(f, "web.default.example.com.")
    assert f.answer_cache.hits == hits + 1
    north = plan.server.clusters[2].store
    north.apply(
        "MODIFIED",
        "Service",
        convert("Service", service("web", ip="10.98.0.1", ports=HTTP, external_ips=["198.51.100.99"])),
    )
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.11", "198.51.100.99"]


def test_fallthrough_passes_nxdomain_on_and_only_that():
    text = """\
. {
    k8s_external example.com {
        fallthrough
    }
    kubernetai cluster.local {
        manifests a.yaml
    }
    hosts {
        192.0.2.80 other.default.example.com
        fallthrough
    }
}
"""
    f, _, _ = build(text, EAST)
    assert addresses(ask(f, "other.default.example.com.")) == ["192.0.2.80"]
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1"]
    r = ask(f, "default.example.com.")  # NODATA does not fall through
    assert r.rcode() == dns.rcode.NOERROR and r.answer == [] and len(r.authority) == 1


def test_label_and_namespace_filters_are_the_owning_stanzas():
    text = """\
. {
    k8s_external example.com
    kubernetai cluster.local {
        manifests a.yaml
        namespaces default
        fallthrough
    }
    kubernetai cluster.local {
        manifests b.yaml
        labels tier=edge
    }
}
"""
    other = [namespace("other"), service("web", "other", ip="10.0.0.1", ports=HTTP, external_ips=["192.0.2.9"])]
    edge = [
        namespace("other"),
        service("edge", "other", ip="10.0.0.2", ports=HTTP, external_ips=["192.0.2.10"], labels={"tier": "edge"}),
    ]
    f, plan, _ = build(text, EAST + other, edge)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1"]
    assert ask(f, "web.other.example.com.").rcode() == dns.rcode.NXDOMAIN  # first stanza: namespaces default
    assert addresses(ask(f, "edge.other.example.com.")) == ["192.0.2.10"]
    # (the label selector is applied by the API server; what a stanza holds passed it)
    assert str(plan.server.clusters[1].opts.labels) == "tier=edge"


def test_a_block_without_stanzas_reads_every_stanza_of_the_corefile():
    text = """\
example.com {
    k8s_external
}
cluster.local {
    kubernetai {
        manifests a.yaml
    }
}
"""
    f, _, _ = build(text, EAST)
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1"]


def test_a_cluster_not_synced_yet_gives_servfail_not_a_false_nxdomain():
    f, plan, _ = build(THREE % "", EAST, WEST, NORTH)
    plan.server.clusters[2].store.require(("Pod", ""))  # north waits for a list it has not had
    assert ask(f, "nowhere.default.example.com.").rcode() == dns.rcode.SERVFAIL
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1"]


def test_transfer_lists_what_queries_would_answer():
    text = """\
. {
    transfer example.com {
        to *
    }
    k8s_external example.com {
        headless
    }
    kubernetai cluster.local {
        manifests a.yaml
        fallthrough
    }
    kubernetai cluster.local {
        manifests b.yaml
    }
}
"""
    headless = [
        service("db", ip=None, ports=HTTP),
        slice_("db", ["10.1.0.1"], "default", hostnames=["db-0"], ports=HTTP),
    ]
    f, plan, _ = build(text, EAST + headless, WEST)
    q = dns.message.make_query("example.com.", "AXFR")
    out = result(f.handle_packet(q.to_wire(), ("127.0.0.1", 5353), "tcp"))
    messages = [dns.message.from_wire(m, xfr=True) for m in (out if isinstance(out, list) else [out])]
    answer = [rrset for m in messages for rrset in m.answer]
    got = lines(answer)
    serial = int(max(c.store.last_modified for c in plan.server.clusters))
    soa = f"example.com. 5 IN SOA ns1.dns.example.com. hostmaster.dns.example.com. {serial} 7200 1800 86400 5"
    assert answer[0].rdtype == dns.rdatatype.SOA and answer[-1].rdtype == dns.rdatatype.SOA
    assert got.count(soa) == 2
    for want in [
        "example.com. 5 IN NS ns1.dns.example.com.",
        "web.default.example.com. 5 IN A 198.51.100.1",  # east's: it comes first
        "_http._tcp.web.default.example.com. 5 IN SRV 0 100 80 web.default.example.com.",
        "web.default.example.com. 5 IN SRV 0 100 80 web.default.example.com.",
        "only-east.default.example.com. 5 IN A 198.51.100.2",
        "internal.default.example.com. 5 IN A 198.51.100.13",  # only west publishes it
        "db.default.example.com. 5 IN A 10.1.0.1",
        "db-0.db.default.example.com. 5 IN A 10.1.0.1",
    ]:
        assert want in got, want
    assert not any("198.51.100.11" in line for line in got)  # west's web: east answers for it
    for line in got:  # every name in it answers the same to a query
        name, _, _, rdtype = line.split()[:4]
        if rdtype in ("A", "AAAA", "SRV"):
            assert line in lines(ask(f, name, rdtype).answer), line


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("ttl 4000", "ttl"),
        ("ttl", "argument"),
        ("apex a.b", "one DNS label"),
        ("stale 10s", "stale applies to merged answers"),
        ("merge now", "argument"),
        ("nonsense", "unknown property 'nonsense'"),
        ("", "no kubernetai (or kubernetes) stanza"),
    ],
)
def test_option_errors_name_the_line(body, problem):
    with pytest.raises(CorefileError) as e:
        load_text(". {\n    k8s_external example.com {\n        " + body + "\n    }\n}\n", 53, task.Clock())
    assert problem in str(e.value) and "Corefile:" in str(e.value)


# ------------------------------------------------------------------ end to end: two API servers, one lost


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_two_api_servers_merged_and_one_lost_goes_stale(clusters):  # noqa: F811
    from .test_multicluster import addrs, port_of, serve
    from .test_multicluster import ask as ask_udp

    clusters.add("east", EAST)
    clusters.add("west", WEST)
    svc = yield serve(f"""\
.:0 {{
    bind 127.0.0.1
    k8s_external example.com {{
        merge
        stale 1s
    }}
    kubernetai cluster.local {{
        endpoint {clusters.url("east")}
        fallthrough
    }}
    kubernetai cluster.local {{
        endpoint {clusters.url("west")}
    }}
}}""")
    try:
        port = port_of(svc)
        for _ in range(100):
            if all(c.synced for c in svc.plan.server.clusters):
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        r = yield ask_udp(port, "web.default.example.com")
        assert addrs(r) == ["198.51.100.1", "198.51.100.11"]
        # A change in west's API reaches the (cached) merged answer at once.
        clusters.clusters["west"].add(
            service("web", ip="10.97.0.1", ports=HTTP, type="LoadBalancer", ingress=[{"ip": "198.51.100.12"}]),
            "MODIFIED",
        )
        for _ in range(100):
            r = yield ask_udp(port, "web.default.example.com")
            if "198.51.100.12" in addrs(r):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        assert addrs(r) == ["198.51.100.1", "198.51.100.12"]
        clusters.stop("west")  # its API is gone: after 1 s its addresses leave merged answers
        for _ in range(150):
            r = yield ask_udp(port, "web.default.example.com")
            if addrs(r) == ["198.51.100.1"]:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert addrs(r) == ["198.51.100.1"]
        r = yield ask_udp(port, "internal.default.example.com")  # only west has it: still answered
        assert addrs(r) == ["198.51.100.13"]
    finally:
        yield svc.stopService()


def test_the_gateway_example_builds_and_reads_both_clusters():
    from pathlib import Path

    from kubernetai.plugins.k8s_external import ExternalResolver

    text = (Path(__file__).parent.parent / "etc" / "Corefile.gateway").read_text()
    text = re.sub(r"kubeconfig \S+", "endpoint http://127.0.0.1:1", text)
    f, plan, _ = build(text, EAST, WEST)
    (ext,) = [r for r in plan.blocks[0].block.resolver.resolvers if isinstance(r, ExternalResolver)]
    assert [s.opts.name() for s in ext.stanzas] == ["east", "west"]
    assert ext.merge and ext.stale == 120 and ext.ttl == 30
    r = ask(f, "web.default.example.com.")
    assert addresses(r) == ["198.51.100.1", "198.51.100.11"] and r.answer[0].ttl == 30


def test_churn_elsewhere_leaves_an_answer_cached_and_its_own_services_change_shows():
    f, plan, _ = build(THREE % "merge", EAST, WEST, NORTH)
    ask(f, "web.default.example.com.")
    west = plan.server.clusters[1].store
    for i in range(5):  # another Service changes, in another cluster
        west.apply(
            "MODIFIED",
            "Service",
            convert("Service", service("internal", ip="10.97.0.3", ports=HTTP, external_ips=[f"198.51.100.{30 + i}"])),
        )
    hits = f.answer_cache.hits
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.11", "198.51.100.21"]
    assert f.answer_cache.hits == hits + 1
    assert addresses(ask(f, "internal.default.example.com.")) == ["198.51.100.34"]
    west.apply("DELETED", "Service", convert("Service", service("web", ip="10.97.0.1", ports=HTTP)))
    assert addresses(ask(f, "web.default.example.com.")) == ["198.51.100.1", "198.51.100.21"]
