"""records.answer(), table-driven over one store: every record kind of the spec."""

from __future__ import annotations

import pytest
from twisted.names import dns

from kubernetai.cluster.kinds import convert
from kubernetai.cluster.lookup import View
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.records import answer
from kubernetai.cluster.selectors import Selector
from kubernetai.cluster.store import ClusterStore
from kubernetai.question import Question

from .fakeapi import namespace, pod, service, slice_

Z = "cluster.local."


def store_with(objects) -> ClusterStore:
    s = ClusterStore(clock=lambda: 1700000000.0)
    for obj in objects:
        s.apply("ADDED", obj["kind"], convert(obj["kind"], obj))
    return s


OBJECTS = [
    namespace("ns"),
    namespace("empty"),
    service("web", "ns", ip=["10.96.0.10", "fd00::10"], ports=[("http", "TCP", 80), ("dns", "UDP", 53)]),
    service("noport", "ns", ip="10.96.0.11", ports=[]),
    service("head", "ns", ip=None, ports=[("http", "TCP", 8080)]),
    slice_("head", ["10.1.0.1", "10.1.0.2"], "ns", hostnames=["alpha", None], ports=[("http", "TCP", 8080)]),
    slice_("head", ["10.1.0.2", "10.1.0.3"], "ns", name="head-dup", ports=[("http", "TCP", 8080)]),  # 10.1.0.2 again
    slice_("head", ["10.1.0.9"], "ns", name="head-unready", ready=False, ports=[("http", "TCP", 8080)]),
    service("ext", "ns", type="ExternalName", external_name="example.org"),
    service("lonely", "ns", ip="10.96.0.12", ports=[("http", "TCP", 80)]),
    pod("p1", "10.244.0.5", "ns"),
]


def ask(qname, qtype, **opts):
    opts.setdefault("zones", (Z,))
    o = KubernetesOptions(**opts)
    view = View(store_with(OBJECTS), o, ("192.0.2.53",))
    return answer(view, Question.under(qname, o.zones), qtype)


def texts(records):
    out = []
    for rr in records:
        p = rr.payload
        if rr.type == dns.A:
            data = p.dottedQuad()
        elif rr.type == dns.AAAA:
            import socket

            data = socket.inet_ntop(socket.AF_INET6, p.address)
        elif rr.type == dns.SRV:
            data = f"{p.priority} {p.weight} {p.port} {p.target.name.decode()}."
        elif rr.type in (dns.CNAME, dns.PTR, dns.NS):
            data = p.name.name.decode() + "."
        elif rr.type == dns.TXT:
            data = " ".join(x.decode() for x in p.data)
        else:
            data = ""
        out.append(f"{rr.name.name.decode()}. {rr.ttl} {dns.QUERY_TYPES[rr.type]} {data}".strip())
    return sorted(out)


ROWS = [
    # ClusterIP: A and AAAA for every cluster IP (dual stack)
    ("web.ns.svc.cluster.local.", dns.A, {}, ["web.ns.svc.cluster.local. 5 A 10.96.0.10"]),
    ("web.ns.svc.cluster.local.", dns.AAAA, {}, ["web.ns.svc.cluster.local. 5 AAAA fd00::10"]),
    ("Web.NS.svc.Cluster.Local.", dns.A, {}, ["Web.NS.svc.Cluster.Local. 5 A 10.96.0.10"]),
    # SRV for a named port (protocol lower-cased) and on the bare name
    (
        "_dns._udp.web.ns.svc.cluster.local.",
        dns.SRV,
        {},
        ["_dns._udp.web.ns.svc.cluster.local. 5 SRV 0 50 53 web.ns.svc.cluster.local."],
    ),
    (
        "web.ns.svc.cluster.local.",
        dns.SRV,
        {},
        [
            "web.ns.svc.cluster.local. 5 SRV 0 25 53 web.ns.svc.cluster.local.",
            "web.ns.svc.cluster.local. 5 SRV 0 25 80 web.ns.svc.cluster.local.",
        ],
    ),
    # Headless: ready endpoints only, duplicates across slices merged
    (
        "head.ns.svc.cluster.local.",
        dns.A,
        {},
        [
            "head.ns.svc.cluster.local. 5 A 10.1.0.1",
            "head.ns.svc.cluster.local. 5 A 10.1.0.2",
            "head.ns.svc.cluster.local. 5 A 10.1.0.3",
        ],
    ),
    ("alpha.head.ns.svc.cluster.local.", dns.A, {}, ["alpha.head.ns.svc.cluster.local. 5 A 10.1.0.1"]),
    ("10-1-0-3.head.ns.svc.cluster.local.", dns.A, {}, ["10-1-0-3.head.ns.svc.cluster.local. 5 A 10.1.0.3"]),
    ("10-1-0-9.head.ns.svc.cluster.local.", dns.A, {}, "NXDOMAIN"),  # not ready
    (
        "_http._tcp.head.ns.svc.cluster.local.",
        dns.SRV,
        {},
        [
            # 10.1.0.2 is in two slices: CoreDNS counts it twice for the weight (4 endpoints, 25 each)
            # and keeps one record (issue 11, item 9; was 33 here before).
            "_http._tcp.head.ns.svc.cluster.local. 5 SRV 0 25 8080 10-1-0-2.head.ns.svc.cluster.local.",
            "_http._tcp.head.ns.svc.cluster.local. 5 SRV 0 25 8080 10-1-0-3.head.ns.svc.cluster.local.",
            "_http._tcp.head.ns.svc.cluster.local. 5 SRV 0 25 8080 alpha.head.ns.svc.cluster.local.",
        ],
    ),
    # ExternalName: a CNAME, no SRV
    ("ext.ns.svc.cluster.local.", dns.A, {}, ["ext.ns.svc.cluster.local. 5 CNAME example.org."]),
    ("ext.ns.svc.cluster.local.", dns.CNAME, {}, ["ext.ns.svc.cluster.local. 5 CNAME example.org."]),
    ("ext.ns.svc.cluster.local.", dns.SRV, {}, []),
    # PTR for service IPs and endpoint IPs
    (
        "10.0.96.10.in-addr.arpa.",
        dns.PTR,
        {"zones": (Z, "10.in-addr.arpa.")},
        ["10.0.96.10.in-addr.arpa. 5 PTR web.ns.svc.cluster.local."],
    ),
    (
        "1.0.1.10.in-addr.arpa.",
        dns.PTR,
        {"zones": (Z, "10.in-addr.arpa.")},
        ["1.0.1.10.in-addr.arpa. 5 PTR alpha.head.ns.svc.cluster.local."],
    ),
    # pods
    ("10-244-0-5.ns.pod.cluster.local.", dns.A, {}, "NXDOMAIN"),
    (
        "10-244-0-5.ns.pod.cluster.local.",
        dns.A,
        {"pods": "insecure"},
        ["10-244-0-5.ns.pod.cluster.local. 5 A 10.244.0.5"],
    ),
    (
        "10-244-0-6.ns.pod.cluster.local.",
        dns.A,
        {"pods": "insecure"},
        ["10-244-0-6.ns.pod.cluster.local. 5 A 10.244.0.6"],
    ),
    (
        "10-244-0-5.ns.pod.cluster.local.",
        dns.A,
        {"pods": "verified"},
        ["10-244-0-5.ns.pod.cluster.local. 5 A 10.244.0.5"],
    ),
    ("10-244-0-6.ns.pod.cluster.local.", dns.A, {"pods": "verified"}, "NXDOMAIN"),
    ("10-244-0-5.empty.pod.cluster.local.", dns.A, {"pods": "verified"}, "NXDOMAIN"),
    # schema version, apex
    ("dns-version.cluster.local.", dns.TXT, {}, ["dns-version.cluster.local. 28800 TXT 1.1.0"]),
    ("cluster.local.", dns.SOA, {}, ["cluster.local. 5 SOA"]),
    ("cluster.local.", dns.NS, {}, ["cluster.local. 5 NS ns.dns.cluster.local."]),
    ("ns.dns.cluster.local.", dns.A, {}, ["ns.dns.cluster.local. 5 A 192.0.2.53"]),
    # NXDOMAIN versus NODATA
    ("web.ns.svc.cluster.local.", dns.MX, {}, []),
    ("ns.svc.cluster.local.", dns.A, {}, []),
    ("nothere.svc.cluster.local.", dns.A, {}, "NXDOMAIN"),
    ("nope.ns.svc.cluster.local.", dns.A, {}, "NXDOMAIN"),
    ("nope.ns.svc.cluster.local.", dns.MX, {}, "NXDOMAIN"),
    ("web.ns.pood.cluster.local.", dns.A, {}, "NXDOMAIN"),
    ("noport.ns.svc.cluster.local.", dns.A, {}, "NXDOMAIN"),  # as CoreDNS: a port-less ClusterIP has no records
    # wildcards are not wildcards any more
    ("*.ns.svc.cluster.local.", dns.A, {}, "NXDOMAIN"),
    ("web.any.svc.cluster.local.", dns.A, {}, "NXDOMAIN"),
    # options
    ("lonely.ns.svc.cluster.local.", dns.A, {"ignore_empty_service": True}, "NXDOMAIN"),
    ("web.ns.svc.cluster.local.", dns.A, {"namespaces": ("other",)}, "NXDOMAIN"),
    ("head.ns.svc.cluster.local.", dns.A, {"noendpoints": True}, "NXDOMAIN"),
    ("web.ns.svc.cluster.local.", dns.A, {"ttl": 30}, ["web.ns.svc.cluster.local. 30 A 10.96.0.10"]),
    (
        "10-1-0-2.head.ns.svc.cluster.local.",
        dns.A,
        {"endpoint_pod_names": True},
        ["10-1-0-2.head.ns.svc.cluster.local. 5 A 10.1.0.2"],
    ),
]


@pytest.mark.parametrize(
    "qname,qtype,opts,want", ROWS, ids=[f"{r[0]} {dns.QUERY_TYPES.get(r[1])} {r[2]}" for r in ROWS]
)
def test_answer(qname, qtype, opts, want):
    ans = ask(qname, qtype, **opts)
    if want == "NXDOMAIN":
        assert ans.name_error
        return
    assert not ans.name_error
    assert texts(ans.answers) == sorted(want)


def test_srv_glue_in_additional():
    ans = ask("_http._tcp.head.ns.svc.cluster.local.", dns.SRV)
    assert texts(ans.additional) == [
        "10-1-0-2.head.ns.svc.cluster.local. 5 A 10.1.0.2",
        "10-1-0-3.head.ns.svc.cluster.local. 5 A 10.1.0.3",
        "alpha.head.ns.svc.cluster.local. 5 A 10.1.0.1",
    ]


def test_axfr_is_refused_without_transfer():
    assert ask("cluster.local.", dns.AXFR).refused


def test_ns_glue_in_additional():
    ans = ask("cluster.local.", dns.NS)
    assert texts(ans.additional) == ["ns.dns.cluster.local. 5 A 192.0.2.53"]


def test_namespace_labels_limit_namespaces():
    # namespace_labels is applied server-side on the Namespace watch: what the
    # store holds is what exists.  An unlisted namespace's names do not exist.
    s = store_with([o for o in OBJECTS if not (o["kind"] == "Namespace" and o["metadata"]["name"] == "ns")])
    view = View(s, KubernetesOptions(zones=(Z,), namespace_labels=Selector()), ())
    assert answer(view, Question.under("web.ns.svc.cluster.local.", (Z,)), dns.A).name_error


# ---------------------------------------------------------------- issue 11: as the Go kubernetai answers


def view_of(objects, **opts) -> View:
    opts.setdefault("zones", (Z,))
    return View(store_with(objects), KubernetesOptions(**opts), ())


def answer_of(view: View, qname: str, qtype: int):
    return answer(view, Question.under(qname, view.opts.zones), qtype)


@pytest.mark.parametrize("qname", ["a.b.ext.ns.svc.cluster.local.", "_x._tcp.ext.ns.svc.cluster.local."])
def test_an_external_name_has_no_port_or_protocol_names(qname):
    for qtype in (dns.A, dns.CNAME, dns.SRV):
        assert ask(qname, qtype).name_error, (qname, qtype)


def test_one_ptr_for_an_endpoint_in_two_slices_of_a_service():
    assert texts(ask("2.0.1.10.in-addr.arpa.", dns.PTR, zones=(Z, "in-addr.arpa.")).answers) == [
        "2.0.1.10.in-addr.arpa. 5 PTR 10-1-0-2.head.ns.svc.cluster.local."
    ]


def test_ignore_empty_service_applies_to_clusterset_imports():
    imp = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.100.0.7"], "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    zones = ("clusterset.local.",)
    view = view_of([namespace("ns"), imp], zones=zones, multicluster=zones, ignore_empty_service=True)
    assert answer_of(view, "db.ns.svc.clusterset.local.", dns.A).name_error
    view = view_of([namespace("ns"), imp], zones=zones, multicluster=zones)
    assert texts(answer_of(view, "db.ns.svc.clusterset.local.", dns.A).answers) == [
        "db.ns.svc.clusterset.local. 5 A 10.100.0.7"
    ]


def test_pods_verified_ignores_terminating_pods_but_knows_every_pod_ip():
    terminating = pod("old", "10.244.0.6", "ns")
    terminating["metadata"]["deletionTimestamp"] = "2026-12-02T08:00:00Z"
    two = pod("two", "10.244.0.7", "ns")
    two["status"]["podIPs"] = [{"ip": "10.244.0.7"}, {"ip": "fd00::7"}]
    view = view_of([namespace("ns"), terminating, two], pods="verified")
    assert answer_of(view, "10-244-0-6.ns.pod.cluster.local.", dns.A).name_error
    assert texts(answer_of(view, "10-244-0-7.ns.pod.cluster.local.", dns.A).answers)
    # CoreDNS 1.15 indexes every status.podIPs address (the issue said podIP only; the reference disagrees)
    assert texts(answer_of(view, "fd00--7.ns.pod.cluster.local.", dns.AAAA).answers)


def test_ipv6_endpoint_names_pad_only_a_trailing_dash():
    from kubernetai.cluster.lookup import endpoint_hostname
    from kubernetai.cluster.objects import Endpoint

    assert endpoint_hostname(Endpoint(("::5",)), "::5", False) == "--5"
    assert endpoint_hostname(Endpoint(("fd00::",)), "fd00::", False) == "fd00--0"


def test_srv_weight_counts_an_endpoint_in_two_slices_twice():
    objs = [
        namespace("ns"),
        service("h", "ns", ip=None, ports=[("http", "TCP", 80)]),
        slice_("h", ["10.1.0.1"], "ns", name="h-a", ports=[("http", "TCP", 80)]),
        slice_("h", ["10.1.0.1"], "ns", name="h-b", ports=[("http", "TCP", 80)]),
    ]
    ans = answer_of(view_of(objs), "_http._tcp.h.ns.svc.cluster.local.", dns.SRV)
    assert texts(ans.answers) == ["_http._tcp.h.ns.svc.cluster.local. 5 SRV 0 50 80 10-1-0-1.h.ns.svc.cluster.local."]


def test_no_loopback_address_is_our_own():
    from kubernetai.hostaddrs import own_addresses

    assert own_addresses(["127.0.0.1", "::1"]) == ()
    assert own_addresses(["127.0.0.1", "192.0.2.53"]) == ("192.0.2.53",)
    view = View(store_with([namespace("ns")]), KubernetesOptions(zones=(Z,)), own_addresses(["127.0.0.1"]))
    ans = answer_of(view, "cluster.local.", dns.NS)
    assert not ans.answers and not ans.additional and not ans.name_error  # NODATA, as CoreDNS


def test_pod_srv_weight_counts_every_pod_sharing_the_address():
    objs = [namespace("ns"), pod("a", "172.18.0.3", "ns"), pod("b", "172.18.0.3", "ns")]  # host-network pods
    view = view_of(objs, pods="verified")
    ans = answer_of(view, "172-18-0-3.ns.pod.cluster.local.", dns.SRV)
    assert texts(ans.answers) == ["172-18-0-3.ns.pod.cluster.local. 5 SRV 0 50 0 172-18-0-3.ns.pod.cluster.local."]
    assert texts(answer_of(view, "172-18-0-3.ns.pod.cluster.local.", dns.A).answers) == [
        "172-18-0-3.ns.pod.cluster.local. 5 A 172.18.0.3"
    ]


def test_an_endpoint_url_with_credentials_is_refused_without_repeating_them():
    from kubernetai.build import load_text
    from kubernetai.corefile import CorefileError

    text = ". {\n kubernetai cluster.local {\n  endpoint https://admin:s3cret@192.0.2.1:6443\n }\n}"
    with pytest.raises(CorefileError) as e:
        load_text(text, 53, None)
    assert "Corefile:3: endpoint: credentials in an endpoint URL are not accepted" in str(e.value)
    assert "s3cret" not in str(e.value) and "admin" not in str(e.value)


def test_pods_and_slices_may_have_long_names_services_may_not():
    """Pod and EndpointSlice names are DNS subdomains (up to 253 characters), not part of any answer."""
    from kubernetai.cluster.objects import ObjectError

    long = "p" * 40 + "." + "q" * 60  # 101 characters, with a dot: a valid pod name
    view = view_of([namespace("ns"), pod(long, "10.244.0.9", "ns")], pods="verified")
    assert texts(answer_of(view, "10-244-0-9.ns.pod.cluster.local.", dns.A).answers)
    with pytest.raises(ObjectError):
        convert("Service", service("s" * 64, "ns"))
