"""The DNS server factory: the fixes over stock twisted.names, on bytes in / bytes out."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.names import common
from twisted.names import dns as tdns
from twisted.names.error import AuthoritativeDomainError, DomainError
from twisted.test import proto_helpers

from kubernetai import outcome
from kubernetai.chain import chain
from kubernetai.rr import soa
from kubernetai.server import Block, KubeDNSServerFactory

from .conftest import result

ZONE = "example.test."


class TableResolver(common.ResolverBase):
    """A tiny authoritative resolver over a dict, for factory tests."""

    def __init__(self, zone: str, records: dict, fallthrough: bool = False):
        super().__init__()
        self.zone = zone
        self.records = records  # (lower name without dot, type) -> [Record]
        self.fallthrough = fallthrough

    def _lookup(self, name, cls, type, timeout):
        qname = name.decode() + "."
        key = qname.lower()
        if not (key == self.zone or key.endswith("." + self.zone)):
            return defer.fail(outcome.NotMine(name))
        owner_zone = qname[len(qname) - len(self.zone) :].rstrip(".")
        found = self.records.get((key.rstrip("."), type))
        if found:
            return defer.succeed(([tdns.RRHeader(name, type, tdns.IN, 5, r, auth=True) for r in found], [], []))
        s = soa(owner_zone + ".", 5, 1)
        if any(k[0] == key.rstrip(".") for k in self.records):
            return defer.succeed(([], [s], []))
        if self.fallthrough:
            return defer.fail(outcome.FallthroughNXDomain(name, [s]))
        return defer.fail(outcome.NXDomain(name, [s]))


RECORDS = {
    ("a.example.test", tdns.A): [tdns.Record_A("10.0.0.1", 5)],
    ("big.example.test", tdns.A): [tdns.Record_A(f"10.1.{i // 250}.{i % 250}", 5) for i in range(200)],
    ("big.example.test", tdns.TXT): [tdns.Record_TXT(b"x" * 200, ttl=5) for _ in range(10)],
}


def make_factory(**kw):
    resolver = TableResolver(ZONE, RECORDS, **kw)
    return KubeDNSServerFactory(blocks=[Block((ZONE,), chain([resolver]), label=ZONE)], clock=task.Clock())


def ask(factory, query: dns.message.Message | bytes, proto: str = "udp"):
    wire = query if isinstance(query, bytes) else query.to_wire()
    out = result(factory.handle_packet(wire, ("127.0.0.1", 5353), proto))
    return out


def answer(factory, name, rdtype="A", proto="udp", **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    out = ask(factory, q, proto)
    assert out is not None
    return dns.message.from_wire(out)


def test_positive_answer_is_authoritative():
    r = answer(make_factory(), "a.example.test")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA and r.flags & dns.flags.QR
    assert [rr.to_text() for rr in r.answer] == ["a.example.test. 5 IN A 10.0.0.1"]


def test_nxdomain_carries_soa_and_aa():
    r = answer(make_factory(), "nope.example.test")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.SOA
    assert r.authority[0].name.to_text() == "example.test."


def test_nodata_carries_soa_and_aa():
    r = answer(make_factory(), "a.example.test", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_letter_case_of_the_question_is_echoed():
    r = answer(make_factory(), "A.Example.TEST")
    assert r.question[0].name.to_text() == "A.Example.TEST."
    assert r.answer[0].name.to_text() == "A.Example.TEST."
    r = answer(make_factory(), "Nope.EXAMPLE.test")
    assert r.authority[0].name.to_text() == "EXAMPLE.test."


def test_fallthrough_nxdomain_off_the_end_of_the_chain_stays_nxdomain():
    r = answer(make_factory(fallthrough=True), "nope.example.test")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_name_no_plugin_serves_is_servfail():
    # Inside the block's zone but outside every resolver's: as CoreDNS.
    resolver = TableResolver(ZONE, RECORDS)
    f = KubeDNSServerFactory(blocks=[Block((".",), chain([resolver]))])
    assert answer(f, "example.org").rcode() == dns.rcode.SERVFAIL


def test_no_block_for_the_zone_is_refused():
    assert answer(make_factory(), "example.org").rcode() == dns.rcode.REFUSED


def test_longest_zone_wins_across_blocks():
    outer = TableResolver("test.", {("a.example.test", tdns.A): [tdns.Record_A("1.1.1.1", 5)]})
    inner = TableResolver(ZONE, RECORDS)
    f = KubeDNSServerFactory(blocks=[Block(("test.",), chain([outer])), Block((ZONE,), chain([inner]))])
    assert answer(f, "a.example.test").answer[0][0].address == "10.0.0.1"


def test_edns_is_echoed_with_our_payload_size():
    r = answer(make_factory(), "a.example.test", use_edns=0, payload=4096, want_dnssec=True)
    assert r.edns == 0
    assert r.payload == 1232
    assert r.ednsflags & dns.flags.DO


def test_no_edns_in_query_means_no_opt_in_answer():
    r = answer(make_factory(), "a.example.test")
    assert r.edns == -1


def test_edns_version_above_zero_gets_badvers():
    r = answer(make_factory(), "a.example.test", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0


def test_udp_answer_too_big_is_truncated_at_a_record_boundary():
    r = answer(make_factory(), "big.example.test")  # 200 A records, 512-byte limit
    assert r.flags & dns.flags.TC
    assert 0 < len(r.answer[0]) < 200
    out = ask(make_factory(), dns.message.make_query("big.example.test", "A"))
    assert len(out) <= 512


def test_client_udp_size_is_honoured_up_to_1232():
    small = answer(make_factory(), "big.example.test")
    assert small.flags & dns.flags.TC
    for payload in (1232, 4096, 65000):  # clamped at 1232, the flag-day value we advertise (issue 12, item 8)
        out = ask(make_factory(), dns.message.make_query("big.example.test", "A", use_edns=0, payload=payload))
        r = dns.message.from_wire(out)
        assert 512 < len(out) <= 1232 and r.flags & dns.flags.TC, payload
    r = answer(make_factory(), "a.example.test", use_edns=0, payload=4096)
    assert r.payload == 1232  # what we advertise


def test_a_malformed_edns_option_gets_formerr_not_a_traceback():
    from twisted.logger import globalLogPublisher

    q = dns.message.make_query("a.example.test", "A", use_edns=0).to_wire()
    # Replace the OPT record's empty RDATA with an option whose length runs past the record.
    assert q.endswith(b"\x00\x00")
    bad = q[:-2] + struct.pack("!HHH", 4, 10, 20)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        out = ask(make_factory(), bad)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert out is not None and dns.message.from_wire(out, question_only=True).rcode() == dns.rcode.FORMERR
    assert not [e for e in events if e.get("log_failure") is not None]


def test_a_question_name_over_255_octets_gets_formerr_and_is_not_echoed():
    labels = [b"a" * 63] * 4  # 4 × 64 + 1 = 257 octets on the wire
    qname = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
    packet = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    out = ask(make_factory(), packet)
    assert out is not None
    ident, flags, qd = struct.unpack_from("!HHH", out)
    assert ident == 0x1234 and flags & 0xF == dns.rcode.FORMERR and qd == 0


def test_tcp_gives_the_whole_answer():
    r = answer(make_factory(), "big.example.test", proto="tcp")
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == 200


def test_truncated_txt_keeps_the_opt_record():
    r = answer(make_factory(), "big.example.test", "TXT", use_edns=0, payload=1232)
    assert r.flags & dns.flags.TC
    assert r.edns == 0 and 0 < len(r.answer[0]) < 10


def test_garbage_with_readable_header_gets_formerr():
    q = dns.message.make_query("a.example.test", "A")
    wire = bytearray(q.to_wire())
    bad = bytes(wire[:14])  # header + a cut-off question
    out = ask(make_factory(), bad)
    ident, flags = struct.unpack("!HH", out[:4])
    assert ident == q.id and flags & 0x8000 and flags & 0xF == dns.rcode.FORMERR


def test_two_questions_get_formerr():
    q = dns.message.make_query("a.example.test", "A")
    wire = bytearray(q.to_wire())
    wire[4:6] = struct.pack("!H", 2)
    wire += wire[12:]
    out = ask(make_factory(), bytes(wire))
    assert struct.unpack("!H", out[2:4])[0] & 0xF == dns.rcode.FORMERR


def test_short_header_is_dropped():
    assert ask(make_factory(), b"\x00\x01\x02") is None


def test_responses_are_ignored():
    q = dns.message.make_query("a.example.test", "A")
    q.flags |= dns.flags.QR
    assert ask(make_factory(), q) is None


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE, 7])
def test_other_opcodes_get_notimp(opcode):
    q = dns.message.make_query("a.example.test", "A")
    q.set_opcode(opcode)
    out = ask(make_factory(), q)
    assert struct.unpack("!H", out[2:4])[0] & 0xF == dns.rcode.NOTIMP


def test_resolver_exception_becomes_servfail_and_reaches_observers():
    class Broken(common.ResolverBase):
        def _lookup(self, *a):
            raise RuntimeError("boom")

    seen = []
    f = KubeDNSServerFactory(blocks=[Block((".",), chain([Broken()]), observers=[seen.append])])
    assert answer(f, "x.example.org").rcode() == dns.rcode.SERVFAIL
    assert seen[0].failure.check(RuntimeError)
    assert seen[0].rcode == dns.rcode.SERVFAIL


def test_explicit_reply_code_passes_through():
    class Refusing(common.ResolverBase):
        def _lookup(self, *a):
            return defer.fail(outcome.Reply(tdns.EREFUSED))

    f = KubeDNSServerFactory(blocks=[Block((".",), chain([Refusing()]))])
    assert answer(f, "x.example.org").rcode() == dns.rcode.REFUSED


def test_stock_twisted_errors_map_sensibly():
    class Stock(common.ResolverBase):
        def __init__(self, exc):
            super().__init__()
            self.exc = exc

        def _lookup(self, *a):
            return defer.fail(self.exc)

    f = KubeDNSServerFactory(blocks=[Block((".",), chain([Stock(AuthoritativeDomainError("x"))]))])
    r = answer(f, "x.example.org")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    f = KubeDNSServerFactory(blocks=[Block((".",), chain([Stock(DomainError("x"))]))])
    assert answer(f, "x.example.org").rcode() == dns.rcode.SERVFAIL


def test_embedding_like_dnsserverfactory():
    f = KubeDNSServerFactory(authorities=[TableResolver(ZONE, RECORDS)])
    assert answer(f, "a.example.test").answer[0][0].address == "10.0.0.1"


def test_observer_sees_coredns_log_fields():
    seen = []
    resolver = TableResolver(ZONE, RECORDS)
    f = KubeDNSServerFactory(blocks=[Block((ZONE,), chain([resolver]), observers=[seen.append])], clock=task.Clock())
    answer(f, "a.example.test", use_edns=0, payload=1232)
    e = seen[0]
    assert (e.remote, e.port, e.type_name, e.class_name, e.qname, e.proto) == (
        "127.0.0.1",
        5353,
        "A",
        "IN",
        "a.example.test.",
        "udp",
    )
    assert e.flags == "qr,aa,rd" and e.bufsize == 1232 and e.rcode == 0 and e.ancount == 1


# ------------------------------------------------------------------ TCP protocol


def tcp_client(factory):
    proto = factory.buildProtocol(("127.0.0.1", 1))
    transport = proto_helpers.StringTransportWithDisconnection()
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto, transport


def frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        (n,) = struct.unpack("!H", data[:2])
        out.append(data[2 : 2 + n])
        data = data[2 + n :]
    return out


def test_tcp_pipelined_queries_on_one_connection():
    f = make_factory()
    proto, transport = tcp_client(f)
    q1 = dns.message.make_query("a.example.test", "A")
    q2 = dns.message.make_query("nope.example.test", "A")
    proto.dataReceived(b"".join(struct.pack("!H", len(w)) + w for w in (q1.to_wire(), q2.to_wire())))
    got = [dns.message.from_wire(x) for x in frames(transport.value())]
    assert [(m.id, m.rcode()) for m in got] == [(q1.id, 0), (q2.id, 3)]


def test_tcp_idle_timeout_closes_connection():
    f = make_factory()
    proto, transport = tcp_client(f)
    assert transport.connected
    f.clock.advance(f.tcp_idle_timeout + 1)
    assert not transport.connected
    assert f.connections == []


def test_tcp_connection_cap():
    f = make_factory()
    f.max_tcp_connections = 2
    clients = [tcp_client(f) for _ in range(3)]
    assert len(f.connections) == 2
    assert clients[2][1].disconnecting or not clients[2][1].connected


def test_tcp_unreadable_message_closes_connection():
    proto, transport = tcp_client(make_factory())
    proto.dataReceived(struct.pack("!H", 3) + b"abc")
    assert not transport.connected


# ------------------------------------------------------------------ never crashes

_BASE = [
    dns.message.make_query("a.example.test", "A").to_wire(),
    dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=600).to_wire(),
    dns.message.make_query("Nope.example.test", "AAAA", want_dnssec=True).to_wire(),
]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(_BASE)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut" and data:
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "set" and len(data) > 12:
            i = draw(st.integers(0, 11))
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600), mutated()), st.sampled_from(["udp", "tcp"]))
def test_any_packet_is_answered_or_dropped_never_raises(packet, proto):
    f = make_factory()
    out = result(f.handle_packet(packet, ("127.0.0.1", 1), proto))
    assert out is None or isinstance(out, bytes)
    if out is not None:
        assert len(out) >= 12
        if proto == "udp":
            assert len(out) <= 4096
        reply = dns.message.from_wire(out, ignore_trailing=True, question_only=True)
        assert reply.flags & dns.flags.QR
        assert reply.id == struct.unpack("!H", packet[:2])[0]


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_a_tcp_client_that_never_reads_costs_a_bounded_buffer_and_is_cut_off():
    """Issue 12, item 6: 30,000 pipelined queries, never read (was 168 MB, never closed)."""
    import socket
    import time

    from twisted.internet import reactor

    from kubernetai.listen import listen_udp_tcp

    def pause(seconds: float = 0.0):
        return task.deferLater(reactor, seconds, lambda: None)

    factory = KubeDNSServerFactory(
        blocks=[Block((ZONE,), chain([TableResolver(ZONE, RECORDS)]), label=ZONE)], tcp_idle_timeout=1.0
    )
    ports = listen_udp_tcp(reactor, 0, factory.datagram_protocol, factory, "127.0.0.1")
    query = dns.message.make_query("big.example.test", "A").to_wire()  # ~3 kB answers
    framed = struct.pack("!H", len(query)) + query
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", ports.port))
        s.setblocking(False)
        sent, deadline = 0, time.monotonic() + 10
        while sent < 30_000 and time.monotonic() < deadline:
            try:
                s.send(framed)
                sent += 1
            except BlockingIOError:  # the server stopped reading: what it has not read waits in the kernel
                yield pause(0.01)
                if time.monotonic() > deadline - 8:
                    break
            else:
                if sent % 100 == 0:
                    yield pause()
        yield pause(0.2)
        (conn,) = factory.connections
        transport = conn.transport
        buffered = len(transport.dataBuffer) + sum(len(b) for b in transport._tempDataBuffer)
        assert conn.paused and buffered < 2 * 2**20  # it stopped reading, with ~1 MB at most waiting
        for _ in range(40):  # the idle timeout (1 s) aborts it: a bounded wait
            yield pause(0.1)
            if not factory.connections:
                break
        assert not factory.connections
    finally:
        s.close()
        yield ports.stopListening()
