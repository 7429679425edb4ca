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


def test_letter_case_shares_an_entry_proto_and_edns_do_not():
    f, store, _ = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    ask(f, "web.ns.svc.cluster.local")
    r = ask(f, "WEB.ns.svc.Cluster.LOCAL")  # DNS 0x20: a hit, in the new spelling (issue 12, item 7)
    assert r.question[0].name.to_text() == "WEB.ns.svc.Cluster.LOCAL."
    assert r.answer[0].name.to_text() == "WEB.ns.svc.Cluster.LOCAL."
    assert Counting.calls == 1
    ask(f, "web.ns.svc.cluster.local", proto="tcp")
    r = ask(f, "web.ns.svc.cluster.local", use_edns=0)
    assert r.edns == 0
    assert Counting.calls == 3


def test_an_answer_that_repeats_more_than_the_zone_is_answered_afresh_in_a_new_spelling():
    f, store, _ = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns", ports=[("http", "TCP", 80)]))
    synced(store)
    ask(f, "web.ns.svc.cluster.local", "SRV")
    r = ask(f, "WEB.ns.svc.CLUSTER.local", "SRV")
    # The target repeats the service's own (lower-case) name and the query's zone, as CoreDNS.
    assert r.answer[0][0].target.to_text() == "web.ns.svc.CLUSTER.local."
    assert Counting.calls == 2


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
    assert cache_key(q) == q[2:4] + q[12:]  # flags, question
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
    assert len(f.answer_cache) == 1
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
    f.answer_cache.capacity = 4
    ask(f, "web.ns.svc.cluster.local")
    hot = Counting.calls
    for i in range(40):  # a flood of names never asked before, the hot name asked in between
        ask(f, f"random-{i}.ns.svc.cluster.local")
        ask(f, "web.ns.svc.cluster.local")
    assert Counting.calls == hot + 40  # every random name once; the hot one never again
    assert len(f.answer_cache) == 4


def _spellings(name: str):
    """A strategy: ``name`` with each letter's case drawn at random (DNS 0x20)."""
    random = st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))
    )
    # As the data spells it (lower case), all upper case, or any mix: coincidences matter most.
    return st.one_of(st.just(name.lower()), st.just(name.upper()), random)


def _rich_store():
    from .fakeapi import slice_

    store = ClusterStore(clock=lambda: 1.0)
    for kind in ("Service", "EndpointSlice", "Namespace"):
        store.require((kind, ""))
    http = [("http", "TCP", 80)]
    objs = [namespace("ns"), namespace("svc"), service("web", "ns", ports=http)]
    objs += [service("head", "ns", ip=None, ports=http), slice_("head", ["10.1.0.1", "10.1.0.2"], "ns", ports=http)]
    objs += [service("ext", "ns", type="ExternalName", ip=None, external_name="web.ns.svc.cluster.local")]
    objs += [service("out", "ns", type="ExternalName", ip=None, external_name="example.org")]
    objs += [service("ext2", "ns", type="ExternalName", ip=None, external_name="ns.dns.cluster.local")]
    objs += [service("cluster", "svc", ports=http)]  # a service named like the zone's first label
    for obj in objs:
        add(store, obj)
    for kind in ("Service", "EndpointSlice", "Namespace"):
        store.relist((kind, ""), list(store.objects.get(kind, {}).values()))
    return store


CASE_QUESTIONS = [
    ("web.ns.svc.cluster.local", "A"),
    ("web.ns.svc.cluster.local", "SRV"),
    ("_http._tcp.web.ns.svc.cluster.local", "SRV"),
    ("head.ns.svc.cluster.local", "A"),
    ("head.ns.svc.cluster.local", "SRV"),
    ("10-1-0-1.head.ns.svc.cluster.local", "A"),
    ("ext.ns.svc.cluster.local", "A"),
    ("ext.ns.svc.cluster.local", "CNAME"),
    ("ext2.ns.svc.cluster.local", "A"),
    ("ext2.ns.svc.cluster.local", "CNAME"),
    ("nothing.ns.svc.cluster.local", "A"),
    ("web.ns.svc.cluster.local", "TXT"),
    ("cluster.local", "NS"),
    ("cluster.local", "SOA"),
    ("ns.dns.cluster.local", "A"),
    ("dns-version.cluster.local", "TXT"),
    ("cluster.svc.svc.cluster.local", "A"),
    ("cluster.svc.svc.cluster.local", "SRV"),
    ("10.0.96.10.in-addr.arpa", "PTR"),
    ("2.0.1.10.in-addr.arpa", "PTR"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(CASE_QUESTIONS).flatmap(
        lambda q: st.tuples(st.just(q), _spellings(q[0]), _spellings(q[0]), st.sampled_from(["udp", "tcp"]))
    ),
    st.booleans(),
)
def test_a_cached_answer_in_another_spelling_equals_a_fresh_one(case, edns):
    """Issue 12, item 7: the cache is keyed case-insensitively, and what it serves is exactly what we would make."""
    (_, rdtype), first, second, proto = case
    store = _rich_store()
    opts = KubernetesOptions(zones=("cluster.local.", "in-addr.arpa."))

    def factory():
        r = KubernetesResolver(opts, store, ("192.0.2.53",))
        return KubeDNSServerFactory(blocks=[Block((".",), chain([r]))], clock=task.Clock())

    cached = factory()
    kw = {"use_edns": 0} if edns else {}
    ask(cached, first, rdtype, proto, **kw)
    q = dns.message.make_query(second, rdtype, **kw)
    from_cache = result(cached.handle_packet(q.to_wire(), ("127.0.0.1", 9), proto))
    fresh = result(factory().handle_packet(q.to_wire(), ("127.0.0.1", 9), proto))
    assert from_cache == fresh


def test_a_name_pointing_into_more_of_the_question_than_its_zone_is_not_portable():
    from kubernetai.answercache import is_portable
    from kubernetai.wire import encode_response

    question = tdns.Query(b"_http._tcp.web.ns.svc.cluster.local", tdns.SRV, tdns.IN)
    glue = tdns.RRHeader(b"web.ns.svc.cluster.local", tdns.A, tdns.IN, 5, tdns.Record_A("10.0.0.1", 5))
    out, _ = encode_response(id=1, question=question, additional=[glue])
    assert out.count(b"\x03web") == 1  # the glue's owner points into the question
    assert not is_portable(out, zone_labels=2)  # "web.ns.svc" would read in the next query's spelling
    assert is_portable(out, zone_labels=5)
    owner = tdns.RRHeader(question.name.name, tdns.A, tdns.IN, 5, tdns.Record_A("10.0.0.1", 5))
    assert is_portable(encode_response(id=1, question=question, answers=[owner])[0], zone_labels=2)
    assert not is_portable(b"\x00" * 11, zone_labels=2)


def test_flags_and_edns_fields_we_do_not_echo_share_an_entry():
    f, store, _ = rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    ask(f, "web.ns.svc.cluster.local", use_edns=0, payload=1232)
    r = ask(f, "web.ns.svc.cluster.local", use_edns=0, payload=4096)  # clamped to 1232 alike
    assert r.flags & dns.flags.RD and r.answer
    ad = dns.message.make_query("web.ns.svc.cluster.local", "A", use_edns=0, payload=1232)
    ad.flags |= dns.flags.AD
    out = dns.message.from_wire(result(f.handle_packet(ad.to_wire(), ("127.0.0.1", 9), "udp")))
    assert out.id == ad.id and not out.flags & dns.flags.AD
    assert Counting.calls == 1
    ask(f, "web.ns.svc.cluster.local", proto="tcp", use_edns=0, payload=512)
    ask(f, "web.ns.svc.cluster.local", proto="tcp", use_edns=0, payload=65000)  # TCP: the size does not matter
    assert Counting.calls == 2
    ask(f, "web.ns.svc.cluster.local", use_edns=0, payload=512)  # UDP: a smaller answer may be cut
    norecurse = dns.message.make_query("web.ns.svc.cluster.local", "A", use_edns=0, payload=1232)
    norecurse.flags &= ~dns.flags.RD  # RD is echoed: its own entry
    out = dns.message.from_wire(result(f.handle_packet(norecurse.to_wire(), ("127.0.0.1", 9), "udp")))
    assert not out.flags & dns.flags.RD
    assert Counting.calls == 4


def test_under_churn_cached_answers_are_never_stale():
    """Issue 15: answers about one Service are kept while only other Services change; never served stale."""
    import random

    from .fakeapi import pod, slice_

    names = ["web", "db", "api", "head"]
    namespaces = ["ns", "other"]
    queries = [
        (f"{n}.{ns}.svc.cluster.local", t)
        for n in names + ["missing"]
        for ns in namespaces + ["gone"]
        for t in ("A", "SRV", "AAAA", "TXT")
    ]
    queries += [(f"10-1-0-{i}.head.ns.svc.cluster.local", "A") for i in range(1, 4)]
    queries += [(f"_http._tcp.{n}.ns.svc.cluster.local", "SRV") for n in names]
    queries += [("ns.svc.cluster.local", "A"), ("cluster.local", "NS"), ("10-1-0-1.ns.pod.cluster.local", "A")]
    queries += [("1.0.1.10.in-addr.arpa", "PTR"), ("10.0.96.10.in-addr.arpa", "PTR")]
    for seed in range(12):
        rnd = random.Random(seed)
        store = ClusterStore(clock=lambda: 1.0)
        for kind in ("Service", "EndpointSlice", "Namespace", "Pod"):
            store.require((kind, ""))
        opts = KubernetesOptions(zones=("cluster.local.", "in-addr.arpa."), pods="verified")
        r = KubernetesResolver(opts, store, ("192.0.2.53",))
        cached = KubeDNSServerFactory(blocks=[Block((".",), chain([r]))], clock=task.Clock())
        for kind in ("Service", "EndpointSlice", "Namespace", "Pod"):
            store.relist((kind, ""), [])
        for step in range(40):
            ns, name = rnd.choice(namespaces), rnd.choice(names)
            change = rnd.randrange(6)
            if change == 0:
                add(store, namespace(ns))
            elif change == 1 and store.namespace(ns):
                store.apply("DELETED", "Namespace", convert("Namespace", namespace(ns)))
            elif change == 2:
                headless = name == "head"
                ip = None if headless else f"10.96.0.{rnd.randrange(1, 4)}"
                add(store, service(name, ns, ip=ip, ports=[("http", "TCP", rnd.choice([80, 8080]))]))
            elif change == 3 and store.service(ns, name):
                store.apply("DELETED", "Service", convert("Service", service(name, ns)))
            elif change == 4:
                ips = [f"10.1.0.{i}" for i in range(1, rnd.randrange(2, 5))]
                add(store, slice_(name, ips, ns, ports=[("http", "TCP", 80)], ready=rnd.random() < 0.8))
            else:
                add(store, pod(f"p{rnd.randrange(3)}", f"10.1.0.{rnd.randrange(1, 4)}", ns))
            for qname, qtype in rnd.sample(queries, 12):
                for proto in ("udp", "tcp"):
                    q = dns.message.make_query(qname, qtype).to_wire()
                    got = result(cached.handle_packet(q, ("127.0.0.1", 9), proto))
                    fresh_factory = KubeDNSServerFactory(blocks=[Block((".",), chain([r]))], clock=task.Clock())
                    want = result(fresh_factory.handle_packet(q, ("127.0.0.1", 9), proto))
                    if qtype == "NS" or "in-addr" in qname or got[6:8] == b"\x00\x00":
                        # negative answers may carry an older SOA serial (documented); compare all but it
                        got_m, want_m = dns.message.from_wire(got), dns.message.from_wire(want)
                        assert (got_m.rcode(), got_m.answer, got_m.additional) == (
                            want_m.rcode(),
                            want_m.answer,
                            want_m.additional,
                        ), (seed, step, qname, qtype)
                        assert [rr.name for rr in got_m.authority] == [rr.name for rr in want_m.authority]
                    else:
                        assert got == want, (seed, step, qname, qtype, proto)
        assert cached.answer_cache.hits > 0


class _Socket:
    """What the UDP protocol sends through; ``refuse`` makes sendto fail as a full buffer does."""

    def __init__(self):
        self.sent = []
        self.refuse = False

    def sendto(self, data, addr):
        if self.refuse:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.sent.append((data, addr))


class _Port:
    def __init__(self):
        self.socket = _Socket()
        self.written = []

    def write(self, data, addr):
        self.written.append((data, addr))


def udp_rig():
    """A block with nothing to do on a hit (no observers): hits take the UDP fast path."""
    store = ClusterStore(clock=lambda: 1.0)
    store.require(("Service", ""))
    r = Counting(KubernetesOptions(zones=("cluster.local.",)), store)
    f = KubeDNSServerFactory(blocks=[Block((".",), chain([r]))], clock=task.Clock())
    port = _Port()
    proto = f.datagram_protocol()
    proto.makeConnection(port)
    Counting.calls = 0
    return f, store, proto, port


def udp_ask(proto, port, name):
    q = dns.message.make_query(name, "A")
    q.id = 4242
    proto.datagramReceived(q.to_wire(), ("127.0.0.1", 9))
    (data, addr), *more = port.socket.sent or port.written
    assert not more and addr == ("127.0.0.1", 9)
    port.socket.sent.clear(), port.written.clear()
    r = dns.message.from_wire(data)
    assert r.id == 4242
    return r


def test_a_udp_hit_is_sent_at_once_and_a_change_shows_at_once():
    """Issue 15: hits skip key, Deferred and Port.write; validity is still checked on every one."""
    f, store, proto, port = udp_rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    assert udp_ask(proto, port, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.10"
    for _ in range(3):
        assert udp_ask(proto, port, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.10"
    assert Counting.calls == 1 and f.answer_cache.hits == 3
    add(store, service("web", "ns", ip="10.96.0.99"))  # one watch event
    assert udp_ask(proto, port, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.99"
    relist = store.begin_relist(("Service", ""))  # a relist's first page, the relist not finished
    relist.page([convert("Service", service("web", "ns", ip="10.96.0.7"))])
    assert udp_ask(proto, port, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.7"
    relist.finish()
    add(store, service("other", "ns"))  # another Service: the answer stays cached (and right)
    assert udp_ask(proto, port, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.7"
    assert Counting.calls == 3


def test_a_udp_answer_the_socket_refuses_goes_through_port_write():
    f, store, proto, port = udp_rig()
    add(store, namespace("ns"))
    add(store, service("web", "ns"))
    synced(store)
    port.socket.refuse = True
    for _ in range(3):  # the first answer is made afresh, the others are hits
        assert udp_ask(proto, port, "web.ns.svc.cluster.local").answer[0][0].address == "10.96.0.10"
    assert f.answer_cache.hits == 2


def test_an_answer_that_does_not_depend_on_stores_only_is_checked_on_every_hit():
    """Only store-derived versions are trusted by the change count; a hosts table's version is asked each time."""
    from kubernetai.answercache import AnswerCache

    table = {"v": 1}
    cache = AnswerCache()
    q = dns.message.make_query("web.example.", "A")
    q.id = 1
    data = q.to_wire()
    resp = dns.message.make_response(q).to_wire()
    cache.remember(data, "udp", resp, [(lambda: table["v"], 1)], 1, object())
    assert cache.answer(data, "udp") is not None
    assert cache.answer(data, "udp") is not None
    table["v"] = 2  # no store changed: the change count is the same
    assert cache.answer(data, "udp") is None


def test_a_change_to_one_service_rechecks_only_the_answers_of_its_bucket():
    """Issue 15, churn: an answer about one Service watches its (namespace, service) bucket, not every change."""
    from kubernetai.changes import bucket

    f, store, proto, port = udp_rig()
    add(store, namespace("ns"))
    names = [f"svc{i}" for i in range(200)]
    other = next(n for n in names[1:] if bucket(("ns", n)) is not bucket(("ns", names[0])))
    for name in (names[0], other):
        add(store, service(name, "ns"))
    synced(store)
    for name in (names[0], other):
        udp_ask(proto, port, f"{name}.ns.svc.cluster.local")
    entries = {e.spelling.split(b"\x02ns")[0][1:].decode(): e for e in f.answer_cache._entries.values()}
    changed, untouched = entries[names[0]], entries[other]
    assert changed.checked_at == changed.counter[0] and untouched.checked_at == untouched.counter[0]
    add(store, service(names[0], "ns", ip="10.96.0.77"))
    assert changed.checked_at != changed.counter[0]  # checked again on its next hit...
    assert untouched.checked_at == untouched.counter[0]  # ...this one is not
    assert udp_ask(proto, port, f"{names[0]}.ns.svc.cluster.local").answer[0][0].address == "10.96.0.77"
    store.apply("DELETED", "Namespace", convert("Namespace", namespace("ns")))  # every answer is checked again
    assert untouched.checked_at != untouched.counter[0]
