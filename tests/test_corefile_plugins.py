"""Issue 14: cache, acl, loadbalance, any and the ``kubernetes`` name, in process."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from twisted.internet import defer, task
from twisted.names import dns as tdns

from kubernetai.build import load_text
from kubernetai.chain import chain
from kubernetai.corefile import CorefileError, parse_text
from kubernetai.plugins import cache as cache_plugin
from kubernetai.server import Block, KubeDNSServerFactory

from .conftest import result
from .test_server import TableResolver

UPSTREAM = {
    ("www.example.org", tdns.A): [tdns.Record_A("192.0.2.1", 300)],
    ("mx.example.org", tdns.MX): [tdns.Record_MX(10, b"a.example.org", 300), tdns.Record_MX(20, b"b.example.org", 300)],
    ("many.example.org", tdns.A): [tdns.Record_A(f"192.0.2.{i}", 300) for i in range(1, 5)],
}


class Upstream(TableResolver):
    """Like forward: no cache_version (the server never keeps its answers), counts what it is asked."""

    def __init__(self, records=UPSTREAM, fail: bool = False):
        super().__init__("example.org.", records)
        self.asked = 0
        self.fail = fail

    def _lookup(self, name, cls, type, timeout):
        self.asked += 1
        if self.fail:
            from kubernetai import outcome

            return defer.fail(outcome.ServerFailure("upstream down"))
        found = self.records.get((name.decode().lower(), type))
        if found:  # the records' own TTLs, as an upstream gives them
            return defer.succeed(([tdns.RRHeader(name, type, tdns.IN, r.ttl, r) for r in found], [], []))
        return super()._lookup(name, cls, type, timeout)


def directive(text: str):
    (block,) = parse_text(". {\n" + text + "\n}", "Corefile", lambda n: True)
    return block.directives[0]


def cached(text: str = "cache", upstream: Upstream | None = None, clock: task.Clock | None = None):
    clock = clock or task.Clock()
    clock.advance(1000)
    upstream = upstream or Upstream()
    r = cache_plugin.parse(directive(text), (".",), clock.seconds)
    r.rest = chain([upstream])
    f = KubeDNSServerFactory(blocks=[Block((".",), chain([r]))], clock=clock)
    return f, r, upstream, clock


def ask(f, name, rdtype="A", proto="udp", source="127.0.0.1", **kw) -> dns.message.Message | None:
    q = dns.message.make_query(name, rdtype, **kw)
    out = result(f.handle_packet(q.to_wire(), (source, 5353), proto))
    return None if out is None else dns.message.from_wire(out)


# ------------------------------------------------------------------ cache


def test_cache_answers_again_with_ttls_counting_down():
    f, r, upstream, clock = cached()
    first = ask(f, "www.example.org")
    assert first.answer[0].ttl == 300 and upstream.asked == 1
    clock.advance(100)
    again = ask(f, "WWW.example.org")
    assert upstream.asked == 1
    assert again.answer[0].ttl == 200 and again.answer[0][0].address == "192.0.2.1"
    assert again.question[0].name.to_text() == "WWW.example.org."
    clock.advance(201)
    ask(f, "www.example.org")
    assert upstream.asked == 2  # expired: asked again
    assert r.counts["hits_success"] == 1 and r.counts["misses"] == 2


def test_cache_ttl_caps_and_keeps_dnssec_ok_apart():
    f, r, upstream, clock = cached("cache 30")
    assert ask(f, "www.example.org").answer[0].ttl == 300  # the first answer is relayed as it came
    assert ask(f, "www.example.org").answer[0].ttl == 30  # then at most 30 s
    ask(f, "www.example.org", use_edns=0, want_dnssec=True)
    assert upstream.asked == 2  # DO set: its own entry


def test_cache_denial_uses_the_soa_minimum_and_its_own_cap():
    f, r, upstream, clock = cached("cache {\n  denial 100 60\n }")
    no = ask(f, "nothing.example.org")
    assert no.rcode() == dns.rcode.NXDOMAIN and upstream.asked == 1
    clock.advance(2)
    again = ask(f, "nothing.example.org")
    assert again.rcode() == dns.rcode.NXDOMAIN and upstream.asked == 1
    assert again.authority[0].ttl == 3  # the SOA's TTL 5 minus 2 s (below the 60 s cap)
    assert r.counts["hits_denial"] == 1


def test_cache_servfail_for_a_while_then_asks_again():
    upstream = Upstream(fail=True)
    f, r, _, clock = cached("cache {\n  servfail 2s\n }", upstream)
    assert ask(f, "www.example.org").rcode() == dns.rcode.SERVFAIL
    assert ask(f, "www.example.org").rcode() == dns.rcode.SERVFAIL
    assert upstream.asked == 1
    clock.advance(3)
    ask(f, "www.example.org")
    assert upstream.asked == 2


def test_cache_disable_and_keepttl():
    f, r, upstream, clock = cached("cache {\n  disable success example.org\n }")
    ask(f, "www.example.org")
    ask(f, "www.example.org")
    assert upstream.asked == 2
    f, r, upstream, clock = cached("cache {\n  keepttl\n }")
    ask(f, "www.example.org")
    clock.advance(50)
    assert ask(f, "www.example.org").answer[0].ttl == 300 and upstream.asked == 1


def test_cache_prefetches_a_popular_name_before_it_expires():
    f, r, upstream, clock = cached("cache 100 {\n  prefetch 2 1m 20%\n }")
    ask(f, "www.example.org")  # stored with TTL 100
    clock.advance(85)  # 15 s left: below 20%
    ask(f, "www.example.org")
    assert upstream.asked == 1  # one hit is not enough
    ask(f, "www.example.org")
    assert upstream.asked == 2 and r.counts["prefetch"] == 1  # refreshed in the background
    clock.advance(20)
    assert ask(f, "www.example.org").answer[0].ttl > 0 and upstream.asked == 2  # the refreshed copy


def test_cache_serves_stale_while_it_refreshes():
    upstream = Upstream()
    f, r, _, clock = cached("cache 10 {\n  serve_stale 1h\n }", upstream)
    ask(f, "www.example.org")
    clock.advance(20)  # expired 10 s ago
    upstream.fail = True
    stale = ask(f, "www.example.org")
    assert stale.rcode() == dns.rcode.NOERROR and stale.answer[0].ttl == 0
    assert r.counts["served_stale"] == 1 and upstream.asked == 2  # and it tried to refresh


def test_cache_leaves_what_the_answer_cache_keeps_to_it():
    """A kubernetai answer is kept by the server, exactly, while its data holds: not copied into cache."""
    from kubernetai.cluster.options import KubernetesOptions
    from kubernetai.cluster.store import ClusterStore

    from .test_cache import Counting, add, namespace, service

    store = ClusterStore(clock=lambda: 1.0)
    store.require(("Service", ""))
    k8s = Counting(KubernetesOptions(zones=("cluster.local.",)), store)
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    store.relist(("Service", ""), list(store.objects["Service"].values()))
    clock = task.Clock()
    r = cache_plugin.parse(directive("cache"), (".",), clock.seconds)
    r.rest = chain([k8s, Upstream()])
    f = KubeDNSServerFactory(blocks=[Block((".",), chain([r]))], clock=clock)
    Counting.calls = 0
    ask(f, "web.ns.svc.cluster.local")
    ask(f, "web.ns.svc.cluster.local")
    assert Counting.calls == 1 and len(f.answer_cache) == 1
    assert not r._items["success"]  # the server's answer cache has it
    ask(f, "www.example.org")
    ask(f, "www.example.org")
    assert len(r._items["success"]) == 1  # forward-like answers are cache's


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cache {\n  servfail 10m\n }", "servfail cannot exceed 300s"),
        ("cache {\n  disable everything\n }", "cannot disable 'everything'"),
        ("cache {\n  prefetch 2 1m 95%\n }", "PERCENTAGE"),
        ("cache {\n  success 100 10 20\n }", "MINTTL 20 is larger than TTL 10"),
        ("cache {\n  serve_stale 1h sometimes\n }", "invalid refresh mode"),
        ("cache {\n  prefetchx 1\n }", "prefetchx"),
    ],
)
def test_cache_option_errors_name_the_line(text, problem):
    with pytest.raises(CorefileError, match=problem) as e:
        load_text(". {\n " + text + "\n}", 53, task.Clock())
    assert e.value.line == 3


# ------------------------------------------------------------------ acl


def acl_factory(rules: str):
    plan = load_text(
        ". {\n acl example.org {\n" + rules + "\n }\n whoami\n hosts {\n  10.0.0.1 www.example.org\n }\n}",
        53,
        task.Clock(),
    )
    return KubeDNSServerFactory(blocks=[plan.blocks[0].block], clock=task.Clock())


def test_acl_block_filter_drop_and_allow():
    f = acl_factory(
        "  block type AAAA net 192.0.2.0/24\n  filter net 198.51.100.0/24\n  drop net 2001:db8::/32\n  allow"
    )
    assert ask(f, "www.example.org", "AAAA", source="192.0.2.7").rcode() == dns.rcode.REFUSED
    assert ask(f, "www.example.org", "A", source="192.0.2.7").answer  # only AAAA is blocked there
    filtered = ask(f, "www.example.org", source="198.51.100.1")
    assert filtered.rcode() == dns.rcode.NOERROR and not filtered.answer
    assert ask(f, "www.example.org", source="2001:db8::1") is None
    assert ask(f, "www.example.org", source="::ffff:192.0.2.7", rdtype="AAAA").rcode() == dns.rcode.REFUSED
    assert ask(f, "www.example.org", source="203.0.113.1").answer
    assert ask(f, "other.test", "A", source="192.0.2.7") is not None  # outside the acl's zone


def test_acl_applies_to_cached_answers_too():
    f = acl_factory("  block net 192.0.2.0/24")
    assert ask(f, "www.example.org", source="203.0.113.1").answer  # cached now
    assert len(f.answer_cache) == 1
    assert ask(f, "www.example.org", source="192.0.2.9").rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("  permit", "unknown action 'permit'"),
        ("  block type NOPE", "invalid query type 'NOPE'"),
        ("  block net 10.0.0.0/33", "invalid network"),
        ("  block 10.0.0.0/8", "unexpected '10.0.0.0/8'"),
        ("  block net", "need at least one value"),
    ],
)
def test_acl_errors_name_the_line(rules, problem):
    with pytest.raises(CorefileError, match=problem) as e:
        acl_factory(rules)
    assert e.value.line == 3


# ------------------------------------------------------------------ loadbalance


def test_loadbalance_rotates_fresh_and_cached_answers():
    plan = load_text(
        ". {\n loadbalance\n hosts {\n" + "".join(f"  10.0.0.{i} many.example.org\n" for i in range(1, 5)) + " }\n}",
        53,
        task.Clock(),
    )
    f = KubeDNSServerFactory(blocks=[plan.blocks[0].block], clock=task.Clock())
    firsts = []
    for _ in range(8):
        r = ask(f, "many.example.org")
        addresses = [rr.address for rr in r.answer[0]]
        assert sorted(addresses) == [f"10.0.0.{i}" for i in range(1, 5)]
        firsts.append(addresses[0])
    assert len(f.answer_cache) == 1 and f.answer_cache.hits == 7  # still cached
    assert set(firsts) == {f"10.0.0.{i}" for i in range(1, 5)}  # every address led in turn


def test_rotating_records_keeps_others_in_place():
    from kubernetai.rotation import rotate_records

    cname = tdns.RRHeader(b"a", tdns.CNAME, payload=tdns.Record_CNAME(b"b"))
    a1, a2 = (tdns.RRHeader(b"b", tdns.A, payload=tdns.Record_A(ip)) for ip in ("10.0.0.1", "10.0.0.2"))
    assert rotate_records([cname, a1, a2], 1) == [cname, a2, a1]


def test_loadbalance_refuses_other_policies():
    with pytest.raises(CorefileError, match="unknown policy 'weighted'"):
        load_text(". {\n loadbalance weighted\n}", 53, task.Clock())


# ------------------------------------------------------------------ any and kubernetes


def test_any_gets_the_rfc8482_answer_and_other_types_pass():
    plan = load_text(". {\n any\n hosts {\n  10.0.0.1 www.example.org\n }\n}", 53, task.Clock())
    f = KubeDNSServerFactory(blocks=[plan.blocks[0].block], clock=task.Clock())
    r = ask(f, "www.example.org", "ANY")
    (rrset,) = r.answer
    assert rrset.rdtype == dns.rdatatype.HINFO and rrset.ttl == 8482
    assert rrset[0].cpu == b"ANY obsoleted" and rrset[0].os == b"See RFC 8482"
    assert ask(f, "www.example.org").answer[0][0].address == "10.0.0.1"


def test_kubernetes_is_kubernetai_once_per_block(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    plan = load_text(f". {{\n kubernetes cluster.local {{\n  manifests {tmp_path}/c.yaml\n }}\n}}", 53, task.Clock())
    (stanza,) = plan.server.clusters
    assert stanza.plugin_name == "kubernetai" and stanza.opts.zones == ("cluster.local.",)
    with pytest.raises(CorefileError, match="can only be used once per server block"):
        load_text(
            f". {{\n kubernetes a.local {{\n  manifests {tmp_path}/c.yaml\n }}\n"
            f" kubernetes b.local {{\n  manifests {tmp_path}/c.yaml\n }}\n}}",
            53,
            task.Clock(),
        )


def test_every_unknown_directive_is_reported_in_one_run():
    with pytest.raises(CorefileError) as e:
        load_text(". {\n chaos\n log\n kubernets\n nonsense\n}", 53, task.Clock())
    assert [str(x) for x in e.value.errors] == [
        "Corefile:2: CoreDNS plugin 'chaos' is not available in kubernetai",
        "Corefile:4: unknown directive 'kubernets' (did you mean 'kubernetes'?)",
        "Corefile:5: unknown directive 'nonsense'",
    ]
    assert str(e.value).count("\n") == 2


# ------------------------------------------------------------------ reload


def test_reload_directive_checks_the_checksum_every_interval(tmp_path):
    import attrs

    from kubernetai.reload import Reloader

    path = tmp_path / "Corefile"
    path.write_text(". {\n reload 2s 1s\n whoami\n}\n")
    clock = task.Clock()
    plan = load_text(path.read_text(), 53, clock)
    assert plan.server.reload_every == (2.0, 1.0)

    @attrs.define
    class Service:
        plan: object
        reactor: object
        loads: list = attrs.Factory(list)

        def loader(self, previous):
            self.loads.append(previous)
            raise CorefileError("Corefile", 1, "not this time")

    svc = Service(plan, clock)
    reloader = Reloader(svc, str(path), rand=lambda: 0.5)  # no jitter: every 2 s
    reloader.startService()
    try:
        clock.advance(2)
        assert svc.loads == []  # unchanged: nothing to do
        path.write_text(". {\n reload 2s 1s\n whoami\n log\n}\n")
        clock.advance(2)
        assert len(svc.loads) == 1 and reloader.failed == 1  # changed: reloaded (and refused here)
    finally:
        reloader.stopService()


@pytest.mark.parametrize(
    ("text", "problem"),
    [("reload 1s", "greater or equal to 2s"), ("reload 10s 0.5s", "greater or equal to 1s"), ("reload 1 2 3", "count")],
)
def test_reload_directive_errors(text, problem):
    with pytest.raises(CorefileError, match=problem):
        load_text(". {\n " + text + "\n}", 53, task.Clock())


def test_the_corednss_stock_corefile_example_uses_only_what_we_have():
    from pathlib import Path

    from kubernetai.cluster.options import parse_options
    from kubernetai.corefile import parse_file
    from kubernetai.directives import registry

    path = Path(__file__).parent.parent / "etc" / "Corefile.coredns"
    directives = registry()
    (block,) = parse_file(str(path), directives.__contains__, {}, directives)
    names = [d.name for d in block.directives]
    assert names == [
        "errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload", "loadbalance",
    ]  # fmt: skip
    (k8s,) = [d for d in block.directives if d.name == "kubernetes"]
    opts = parse_options(k8s, (".",))
    assert opts.kubeconfig and opts.pods == "insecure" and opts.ttl == 30


def _autopath_block(tmp_path):
    """An autopath block over one stanza: namespaces b, c, x; pods client (10.0.0.1, in b) and other (10.0.0.2, in c)."""
    from kubernetai.cluster.kinds import convert

    from .fakeapi import namespace, pod

    (tmp_path / "c.yaml").write_text("")
    plan = load_text(
        f". {{\n autopath @kubernetai\n kubernetai cluster.local {{\n  manifests {tmp_path}/c.yaml\n  pods verified\n }}\n}}",
        53,
        task.Clock(),
    )
    store = plan.server.clusters[0].store
    objs = [
        namespace("b"),
        namespace("c"),
        namespace("x"),
        pod("client", "10.0.0.1", "b"),
        pod("other", "10.0.0.2", "c"),
    ]
    for kind in ("Namespace", "Pod", "Service", "EndpointSlice", "ServiceImport"):
        store.relist((kind, ""), [convert(kind, o) for o in objs if o["kind"] == kind])
    return store, KubeDNSServerFactory(blocks=[plan.blocks[0].block], clock=task.Clock())


def test_autopath_answers_are_cached_per_client_namespace(tmp_path):
    """Issue 15: an autopath block's answers are cached, keyed by the asking pod's namespace."""
    _, f = _autopath_block(tmp_path)
    for _ in range(2):
        from_b = ask(f, "x.b.svc.cluster.local", source="10.0.0.1")
        assert from_b.rcode() == dns.rcode.NOERROR and not from_b.answer  # completed: the namespace x (NODATA)
        from_c = ask(f, "x.b.svc.cluster.local", source="10.0.0.2")
        assert from_c.rcode() == dns.rcode.NXDOMAIN  # not its search path: asked as it is
    assert f.answer_cache.hits == 2 and f.answer_cache.misses == 2


def test_autopath_hits_over_udp_are_sent_at_once_per_client_and_follow_the_pod(tmp_path):
    """Issue 15: an autopath block's cached answers take the UDP fast path too, picked by the client's namespace."""
    from kubernetai.cluster.kinds import convert

    from .fakeapi import pod
    from .test_cache import _Port

    store, f = _autopath_block(tmp_path)
    port = _Port()
    proto = f.datagram_protocol()
    proto.makeConnection(port)
    slow = []
    cached_answer = f.cached_answer
    f.cached_answer = lambda *a: slow.append(a) or cached_answer(*a)  # the path hits should not need

    def ask_udp(source):
        q = dns.message.make_query("x.b.svc.cluster.local", "A")
        proto.datagramReceived(q.to_wire(), (source, 5353))
        (data, addr), *more = port.socket.sent
        port.socket.sent.clear()
        assert not more and addr == (source, 5353)
        return dns.message.from_wire(data)

    for _ in range(3):
        assert ask_udp("10.0.0.1").rcode() == dns.rcode.NOERROR  # b's search path: the namespace x (NODATA)
        assert ask_udp("10.0.0.2").rcode() == dns.rcode.NXDOMAIN  # c's: asked as it is
    assert f.answer_cache.hits == 4 and len(slow) == 2  # the first two asked; every hit sent at once
    store.apply("DELETED", "Pod", convert("Pod", pod("client", "10.0.0.1", "b")))
    store.apply("ADDED", "Pod", convert("Pod", pod("client", "10.0.0.1", "c")))  # the client moved to c
    assert ask_udp("10.0.0.1").rcode() == dns.rcode.NXDOMAIN
    assert f.answer_cache.hits == 5  # c's answer, already cached
