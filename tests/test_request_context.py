"""The request context reaches every resolver, and bounds what one request may cost.

Regression tests for three defects of the request context living in the
server module: non-IN classes answered with IN records, a CNAME-chase limit
shared by all requests in flight, and a request seen only by resolvers asked
synchronously.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
from twisted.internet import defer, task
from twisted.names import common
from twisted.names import dns as tdns
from twisted.names.error import DomainError

from kubernetai.chain import chain
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.plugins.whoami import WhoamiResolver
from kubernetai.server import Block, KubeDNSServerFactory

from .conftest import result
from .fakeapi import namespace, service
from .test_records import store_with

ZONE = "cluster.local."


def factory_for(*resolvers, zones=(ZONE,)) -> KubeDNSServerFactory:
    c = chain(list(resolvers))
    for r in resolvers:
        if hasattr(r, "upstream"):
            r.upstream = c
    return KubeDNSServerFactory(blocks=[Block(zones, c, label=zones[0])], clock=task.Clock())


def ask(factory, name, rdtype="A", rdclass="IN", address=("127.0.0.9", 5353)):
    q = dns.message.make_query(name, rdtype, rdclass)
    return factory.handle_packet(q.to_wire(), address, "udp")


def message(d) -> dns.message.Message:
    out = result(d)
    assert isinstance(out, bytes), out
    return dns.message.from_wire(out)


def stanza(objects, zones=(ZONE,)) -> KubernetesResolver:
    return KubernetesResolver(KubernetesOptions(zones=zones), store_with(objects))


def test_non_in_classes_are_refused_before_any_resolver():
    f = factory_for(stanza([namespace("ns"), service("web", "ns", ip="10.96.0.1")]))
    assert message(ask(f, "web.ns.svc.cluster.local", "A")).answer  # IN: answered
    for cls in ("CH", "HS", "ANY"):
        r = message(ask(f, "web.ns.svc.cluster.local", "A", cls))
        assert r.rcode() == dns.rcode.REFUSED and not r.answer, cls


class SlowUpstream(common.ResolverBase):
    """Answers every name with an A record, but only when ``release()`` is called."""

    def __init__(self):
        super().__init__()
        self.waiting: list[tuple[defer.Deferred, bytes]] = []

    def _lookup(self, name, cls, type, timeout):
        d = defer.Deferred()
        self.waiting.append((d, name))
        return d

    def release(self):
        waiting, self.waiting = self.waiting, []
        for d, name in waiting:
            d.callback(([tdns.RRHeader(name, tdns.A, tdns.IN, 5, tdns.Record_A("192.0.2.1", 5))], [], []))


def test_concurrent_external_name_chases_are_not_limited_by_each_other():
    ext = stanza([namespace("ns"), service("ext", "ns", type="ExternalName", external_name="target.example.test")])
    slow = SlowUpstream()
    f = factory_for(ext, slow, zones=(".",))
    pending = [ask(f, "ext.ns.svc.cluster.local") for _ in range(12)]
    assert len(slow.waiting) == 12  # every request chases, none is cut short by the others
    slow.release()
    for d in pending:
        r = message(d)
        assert [rr.rdtype for rrset in r.answer for rr in rrset] == [tdns.CNAME, tdns.A]


def test_a_chase_loop_between_clusters_ends_at_the_depth_limit():
    a = stanza(
        [namespace("ns"), service("x", "ns", type="ExternalName", external_name="x.ns.svc.b.local")], ("a.local.",)
    )
    b = stanza(
        [namespace("ns"), service("x", "ns", type="ExternalName", external_name="x.ns.svc.a.local")], ("b.local.",)
    )
    f = factory_for(a, b, zones=(".",))
    r = message(ask(f, "x.ns.svc.a.local"))
    cnames = [rr for rrset in r.answer for rr in rrset]
    assert r.rcode() == dns.rcode.NOERROR and 2 <= len(cnames) <= 20
    assert all(rr.rdtype == tdns.CNAME for rr in cnames)


class LateDecline(common.ResolverBase):
    """Declines every name, but only after a tick of the clock (as a resolver waiting on I/O would)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def _lookup(self, name, cls, type, timeout):
        return task.deferLater(self.clock, 0.1, lambda: (_ for _ in ()).throw(DomainError(name)))


def test_a_resolver_after_an_asynchronous_decline_still_sees_the_request():
    clock = task.Clock()
    f = factory_for(LateDecline(clock), WhoamiResolver(), zones=(".",))
    d = ask(f, "who.example.test", address=("127.0.0.9", 4242))
    clock.advance(1)
    r = message(d)
    assert [rr.address for rrset in r.additional for rr in rrset if rrset.rdtype == tdns.A] == ["127.0.0.9"]
    assert [rr.port for rrset in r.additional for rr in rrset if rrset.rdtype == tdns.SRV] == [4242]


def test_a_fallthrough_nxdomain_is_not_hidden_by_a_later_resolver_for_other_zones():
    from kubernetai.cluster.options import KubernetesOptions
    from kubernetai.fallthrough import Fallthrough

    first = KubernetesResolver(
        KubernetesOptions(zones=(ZONE,), fallthrough=Fallthrough((".",))), store_with([namespace("ns")])
    )
    other = stanza([namespace("ns")], ("other.local.",))
    r = message(ask(factory_for(first, other, zones=(".",)), "missing.ns.svc.cluster.local"))
    assert r.rcode() == dns.rcode.NXDOMAIN  # not SERVFAIL: nothing after it served the name at all
    assert [rrset.name.to_text() for rrset in r.authority] == ["cluster.local."]


def test_what_cannot_be_a_dns_name_is_left_out_on_arrival_and_breaks_nothing_else():
    """Issue 12, item 9: one bad object used to make a whole SRV answer, AXFR or PTR fail to encode."""
    import pytest

    from kubernetai.cluster.kinds import convert
    from kubernetai.cluster.objects import ObjectError

    from .fakeapi import slice_

    with pytest.raises(ObjectError, match="externalName"):
        convert("Service", service("ext", "ns", type="ExternalName", external_name="x" * 64 + ".example.org"))
    with pytest.raises(ObjectError, match="is not an IP address"):
        convert("Service", service("bad", "ns", ip="not-an-ip"))
    http = [("http", "TCP", 80)]
    long_host = slice_("head", ["10.1.0.1", "10.1.0.2"], "ns", hostnames=["h" * 70, "ok"], ports=http)
    head = service("head", "ns", ip=None, ports=http)
    r = stanza([namespace("ns"), head, long_host])
    f = factory_for(r)
    srv = message(ask(f, "_http._tcp.head.ns.svc.cluster.local", "SRV"))
    assert srv.rcode() == dns.rcode.NOERROR
    targets = sorted(rr.target.to_text() for rrset in srv.answer for rr in rrset)
    assert targets == ["10-1-0-1.head.ns.svc.cluster.local.", "ok.head.ns.svc.cluster.local."]
    assert r.transfer("cluster.local.") is not None


def test_a_udp_answer_builds_no_more_records_than_can_fit(monkeypatch):
    """Issue 12, item 7 (in part): a 58-byte query for a Service with 5,000 endpoints built 5,000 records."""
    from kubernetai.cluster import records

    from .fakeapi import slice_

    http = [("http", "TCP", 80)]
    ips = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(5000)]
    objs = [namespace("ns"), service("big", "ns", ip=None, ports=http)]
    objs += [slice_("big", ips[k : k + 100], "ns", name=f"big-{k}", ports=http) for k in range(0, 5000, 100)]
    f = factory_for(stanza(objs))
    from kubernetai.cluster import lookup

    built, hits = [], []
    real_rr, real_hit = records.rr, lookup.Hit
    monkeypatch.setattr(records, "rr", lambda *a: built.append(1) or real_rr(*a))
    monkeypatch.setattr(lookup, "Hit", lambda *a: hits.append(1) or real_hit(*a))
    for rdtype in ("A", "SRV"):
        built.clear()
        hits.clear()
        out = result(ask(f, "big.ns.svc.cluster.local", rdtype))
        r = dns.message.from_wire(out)
        assert r.flags & dns.flags.TC and len(out) <= 512, rdtype
        # at most that many per section (SRV: its records and their glue), not 5,000
        assert len(built) <= 2 * records.max_records(1232), (rdtype, len(built))
        # and only the endpoints read for them become hits (SRV weights count the rest per slice)
        assert len(hits) <= records.max_records(1232) + 1, (rdtype, len(hits))
        if rdtype == "SRV":
            assert r.answer[0][0].weight == 1  # 100 / 5,000 hits, rounded up to 1 as CoreDNS
