"""The server's wire-answer cache: reused only while what produced it is unchanged."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
from twisted.internet import task
from twisted.names import dns as tdns

from kubernetai.chain import chain
from kubernetai.cluster.kinds import convert
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.cluster.store import ClusterStore
from kubernetai.server import Block, KubeDNSServerFactory

from .conftest import result
from .fakeapi import namespace, service
from .test_server import TableResolver


class Counting(KubernetesResolver):
    calls = 0

    def _lookup(self, *a):
        Counting.calls += 1
        return super()._lookup(*a)


def rig(*extra):
    store = ClusterStore(clock=lambda: 1.0)
    store.require(("Service", ""))
    r = Counting(KubernetesOptions(zones=("cluster.local.",)), store)
    seen = []
    f = KubeDNSServerFactory(blocks=[Block((".",), chain([r, *extra]), observers=[seen.append])], clock=task.Clock())
    Counting.calls = 0
    return f, store, seen


def add(store, obj):
    store.apply("ADDED", obj["kind"], convert(obj["kind"], obj))


def ask(f, name, rdtype="A", proto="udp", **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    out = result(f.handle_packet(q.to_wire(), ("127.0.0.1", 9), proto))
    r = dns.message.from_wire(out)
    assert r.id == q.id
    return r


def synced(store):
    store.relist(("Service", ""), list(store.objects["Service"].values()))


def test_hit_reuses_the_answer_with_the_clients_id():
    f, store, seen = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    a = ask(f, "web.ns.svc.cluster.local")
    b = ask(f, "web.ns.svc.cluster.local")
    assert Counting.calls == 1
    assert a.answer == b.answer and a.answer[0][0].address == "10.96.0.10"
    assert len(seen) == 2 and seen[1].rcode == 0 and seen[1].ancount == 1  # observers still see hits


def test_store_change_invalidates():
    f, store, _ = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    assert ask(f, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.10"
    add(store, service("web", "ns", ip="10.96.0.99"))
    assert ask(f, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.99"
    store.apply("DELETED", "Service", convert("Service", service("web", "ns")))
    assert ask(f, "web.ns.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_sync_state_invalidates():
    f, store, _ = rig()
    assert ask(f, "web.ns.svc.cluster.local").rcode() == dns.rcode.SERVFAIL  # not synced yet
    add(store, namespace("ns"))
    synced(store)
    assert ask(f, "web.ns.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_letter_case_proto_and_edns_are_separate_entries():
    f, store, _ = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    ask(f, "web.ns.svc.cluster.local")
    r = ask(f, "WEB.ns.svc.cluster.local")
    assert r.answer[0].name.to_text() == "WEB.ns.svc.cluster.local."
    ask(f, "web.ns.svc.cluster.local", proto="tcp")
    r = ask(f, "web.ns.svc.cluster.local", use_edns=0)
    assert r.edns == 0
    assert Counting.calls == 4


def test_answers_through_uncacheable_resolvers_are_not_cached():
    upstream = TableResolver("example.org.", {("x.example.org", tdns.A): [tdns.Record_A("192.0.2.1", 5)]})
    calls = []
    original = upstream._lookup
    upstream._lookup = lambda *a: (calls.append(1), original(*a))[1]
    f, store, _ = rig(upstream)
    synced(store)
    ask(f, "x.example.org")
    ask(f, "x.example.org")
    assert len(calls) == 2  # the second resolver has no cache_version: never cached


def test_large_axfr_spans_several_tcp_messages():
    from kubernetai.plugins.transfer import TransferResolver

    store = ClusterStore(clock=lambda: 1.0)
    add(store, namespace("ns"))
    for i in range(3000):
        add(
            store,
            service(f"svc-with-a-long-name-{i}", "ns", ip=f"10.96.{i // 250}.{i % 250}", ports=[("http", "TCP", 80)]),
        )
    k8s = KubernetesResolver(KubernetesOptions(zones=("cluster.local.",)), store, ("192.0.2.53",))
    xfr = TransferResolver(("cluster.local.",), ["*"])
    block_chain = chain([xfr, k8s])
    xfr.upstream = block_chain
    f = KubeDNSServerFactory(blocks=[Block((".",), block_chain)])
    q = dns.message.make_query("cluster.local", "AXFR")
    out = result(f.handle_packet(q.to_wire(), ("127.0.0.1", 9), "tcp"))
    assert isinstance(out, list) and len(out) > 1
    messages = [dns.message.from_wire(m, xfr=True) for m in out]
    assert all(len(m) <= 65535 for m in out) and all(m.id == q.id for m in messages)
    records = [rd for m in messages for rrset in m.answer for rd in rrset]
    assert len(records) == 1 + 1 + 1 + 3000 * 3 + 1  # SOA, NS, glue, (A, SRV, _http SRV) per service, SOA
    assert messages[0].answer[0].rdtype == 6 and messages[-1].answer[-1].rdtype == 6
    # Over UDP the same request is refused.
    udp = dns.message.from_wire(result(f.handle_packet(q.to_wire(), ("127.0.0.1", 9), "udp")))
    assert udp.rcode() == dns.rcode.REFUSED


def test_edns_cookies_share_one_entry_and_are_not_echoed():
    import os as _os

    import dns.edns

    f, store, _ = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    for _ in range(3):
        cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, _os.urandom(8))
        r = ask(f, "web.ns.svc.cluster.local", use_edns=0, options=[cookie])
        assert r.answer[0][0].address == "10.96.0.10" and not r.options
    assert Counting.calls == 1


def test_cache_key_refuses_what_it_cannot_read():
    from kubernetai.wire import cache_key

    q = dns.message.make_query("web.ns.svc.cluster.local", "A").to_wire()
    assert cache_key(q) == q[2:]
    assert cache_key(q + b"x") is None  # trailing bytes
    assert cache_key(q[:-1]) is None  # cut short
    assert cache_key(q[:12]) is None
    two = bytearray(q)
    two[5] = 2
    assert cache_key(bytes(two)) is None


def test_cache_key_checks_the_opt_length():
    from kubernetai.wire import cache_key

    q = dns.message.make_query("web.ns.svc.cluster.local", "A", use_edns=0).to_wire()
    assert cache_key(q) is not None
    assert cache_key(q + b"\x00") is None


def test_transfer_and_hosts_do_not_prevent_caching(tmp_path):
    from kubernetai.build import load_text

    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 gw.example.org\n")
    (tmp_path / "none.yaml").write_text("")  # an empty cluster (a path matching nothing is an error)
    plan = load_text(
        f""". {{
 transfer {{
  to *
 }}
 hosts {hosts} example.org {{
  reload 0
 }}
 kubernetai cluster.local {{
  manifests {tmp_path}/none.yaml
 }}
}}""",
        53,
        task.Clock(),
    )
    f = KubeDNSServerFactory(blocks=[plan.blocks[0].block], clock=task.Clock())
    ask(f, "gw.example.org")
    assert len(f._cache) == 1
    hosts_resolver = plan.blocks[0].block.resolver.resolvers[1]
    hosts.write_text("10.0.0.2 gw.example.org\n" + "#" * 10)
    hosts_resolver.reload()  # a new table: the cached answer is stale
    assert ask(f, "gw.example.org").answer[0][0].address == "10.0.0.2"


# ------------------------------------------------------------------ fuzzing the cache path

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .test_server import mutated  # noqa: E402


@settings(
    max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.one_of(st.binary(max_size=300), mutated()), st.sampled_from(["udp", "tcp"]))
def test_any_packet_twice_gives_the_same_answer(packet, proto):
    f, store, _ = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    first = result(f.handle_packet(packet, ("127.0.0.1", 1), proto))
    second = result(f.handle_packet(packet, ("127.0.0.1", 1), proto))
    assert first == second


def test_a_full_cache_evicts_the_least_recently_used_not_everything():
    f, store, seen = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    f.MAX_CACHED = 4
    ask(f, "web.ns.svc.cluster.local")
    hot = Counting.calls
    for i in range(40):  # a flood of names never asked before, the hot name asked in between
        ask(f, f"random-{i}.ns.svc.cluster.local")
        ask(f, "web.ns.svc.cluster.local")
    assert Counting.calls == hot + 40  # every random name once; the hot one never again
    assert len(f._cache) == 4
