"""Our own query parser and answer writer against Twisted's, byte for byte (issue 15, uncached answers).

``wire.parse_request`` decodes the common query without Twisted's Message;
``wire.encode_response`` writes records itself.  Both must give exactly what
Twisted gives: the references below are the code they replaced.
"""

from __future__ import annotations

import struct
from io import BytesIO

import dns.edns
import dns.message
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.names import dns as tdns

from kubernetai import wire

LABELS = ["a", "B", "web", "Web", "ns", "svc", "cluster", "local", "_http", "_tcp", "x-1", "9"]
names = st.lists(st.sampled_from(LABELS), min_size=0, max_size=6).map(lambda labels: ".".join(labels).encode())
# Names as records may carry them: empty labels too (a leading dot, "a..b", a final dot), which
# Twisted writes its own way (a rest starting with a dot is one label).
odd_names = st.lists(st.sampled_from([*LABELS, ""]), min_size=0, max_size=6).map(lambda ls: ".".join(ls).encode())


def _fields(req):
    if req is None:
        return None
    base = (type(req).__name__, req.id, req.opcode, req.rd)
    if isinstance(req, wire.Malformed):
        return (*base, req.rcode, req.reason)
    q = req.question
    return (*base, req.cd, q.name.name, q.type, q.cls, req.size, req.edns_version, req.edns_payload, req.dnssec_ok)


def _full_parse(data, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(wire, "_parse_plain", lambda *a: None)
        return wire.parse_request(data)


@st.composite
def queries(draw):
    name = draw(names).decode() or "."
    rdtype = draw(st.sampled_from(["A", "AAAA", "SRV", "PTR", "TXT", "ANY", "NS", "SOA", "CNAME", "TYPE99"]))
    edns = draw(st.sampled_from([None, 0, 1]))
    options = []
    if edns is not None and draw(st.booleans()):
        options = [dns.edns.GenericOption(10, draw(st.binary(min_size=8, max_size=16)))]  # a cookie
    q = dns.message.make_query(
        name,
        rdtype,
        use_edns=edns if edns is not None else False,
        payload=draw(st.integers(0, 65535)),
        want_dnssec=draw(st.booleans()) if edns is not None else False,
        options=options,
    )
    q.id = draw(st.integers(0, 65535))
    if draw(st.booleans()):
        q.flags &= ~dns.flags.RD
    if draw(st.booleans()):
        q.flags |= dns.flags.CD
    return q.to_wire()


@st.composite
def mutated_queries(draw):
    data = bytearray(draw(queries()))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    elif draw(st.booleans()):
        data += draw(st.binary(max_size=8))
    return bytes(data)


@settings(max_examples=400)
@given(queries())
def test_a_common_query_decodes_as_twisted_decodes_it(data):
    """Well-formed queries: the plain parser takes them, and gives what the full parser gives."""
    import pytest

    with pytest.MonkeyPatch.context() as monkeypatch:
        full = _full_parse(data, monkeypatch)
    assert wire._parse_plain(data, *_header(data)) is not None
    assert _fields(wire.parse_request(data)) == _fields(full)


@settings(max_examples=600)
@given(st.one_of(mutated_queries(), st.binary(max_size=80)))
def test_any_packet_decodes_as_twisted_decodes_it(data):
    """Mutated and random packets: the same Request, the same FORMERR, or both dropped."""
    import pytest

    with pytest.MonkeyPatch.context() as monkeypatch:
        full = _full_parse(data, monkeypatch)
    assert _fields(wire.parse_request(data)) == _fields(full)


def _header(data):
    ident, byte3, byte4, _qd, _an, _ns, ar = wire.HEADER.unpack_from(data)
    return ident, (byte3 >> 3) & 0xF, bool(byte3 & 1), bool(byte4 & 0x10), ar


# ---------------------------------------------------------------- encoding


class _Compression(dict):
    def __setitem__(self, name, offset):
        if offset < 0x4000:
            super().__setitem__(name, offset)


def _reference_encode(*, id, question, answers, authority, additional, edns, max_size, rcode=0, aa=False):
    """The Twisted-based writer ``encode_response`` replaced (its logic, unchanged)."""
    body = BytesIO()
    comp = _Compression()
    question.encode(body, comp)
    opt = b""
    if edns:
        buf = BytesIO()
        tdns._OPTHeader(udpPayloadSize=wire.EDNS_PAYLOAD, extendedRCODE=rcode >> 4, version=0).encode(buf)
        opt = buf.getvalue()
    room = max_size - 12 - len(opt)
    counts = [0, 0, 0]
    truncated = False
    for index, section in enumerate((answers, authority, additional)):
        for rr in section:
            mark = body.tell()
            rr.encode(body, comp)
            if body.tell() > room:
                body.seek(mark)
                body.truncate()
                for name in [n for n, off in comp.items() if off >= mark + 12]:
                    del comp[name]
                truncated = index < 2
                break
            counts[index] += 1
            if rr.type == tdns.SRV:
                target = rr.payload.target.name
                labels = [label for label in target.split(b".") if label]
                offset = body.tell() - (sum(len(label) + 1 for label in labels) + 1) + 12
                for i in range(len(labels)):
                    suffix = b".".join(labels[i:])
                    if suffix not in comp:
                        comp[suffix] = offset
                    offset += len(labels[i]) + 1
        else:
            continue
        break
    byte3 = 0x80 | (0x04 if aa else 0) | (0x02 if truncated else 0)
    header = struct.pack("!HBBHHHH", id, byte3, rcode & 0xF, 1, counts[0], counts[1], counts[2] + (1 if edns else 0))
    return header + body.getvalue() + opt, truncated


@st.composite
def records(draw):
    owner = draw(odd_names)
    ttl = draw(st.integers(0, 3600))
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "PTR", "NS", "SRV", "SOA", "TXT", "MX"]))
    if kind == "A":
        payload, t = tdns.Record_A(draw(st.sampled_from(["10.0.0.1", "192.0.2.7"])), ttl), tdns.A
    elif kind == "AAAA":
        payload, t = tdns.Record_AAAA(draw(st.sampled_from(["2001:db8::1", "fd00::7"])), ttl), tdns.AAAA
    elif kind == "CNAME":
        payload, t = tdns.Record_CNAME(draw(odd_names), ttl), tdns.CNAME
    elif kind == "PTR":
        payload, t = tdns.Record_PTR(draw(names), ttl), tdns.PTR
    elif kind == "NS":
        payload, t = tdns.Record_NS(draw(names), ttl), tdns.NS
    elif kind == "SRV":
        payload, t = (
            tdns.Record_SRV(0, draw(st.integers(0, 100)), draw(st.integers(0, 65535)), draw(names), ttl),
            tdns.SRV,
        )
    elif kind == "SOA":
        payload = tdns.Record_SOA(
            mname=draw(names), rname=draw(names), serial=draw(st.integers(0, 2**32 - 1)), minimum=ttl, ttl=ttl
        )
        t = tdns.SOA
    elif kind == "TXT":
        payload, t = tdns.Record_TXT(b"1.1.0", ttl=ttl), tdns.TXT  # written by Twisted: the fallback
    else:
        payload, t = tdns.Record_MX(10, draw(names), ttl), tdns.MX  # written by Twisted: the fallback
    return tdns.RRHeader(owner, t, tdns.IN, ttl, payload, auth=True)


@settings(max_examples=500)
@given(
    odd_names,
    st.lists(records(), max_size=12),
    st.lists(records(), max_size=3),
    st.lists(records(), max_size=12),
    st.booleans(),
    st.sampled_from([512, 600, 1232, 65535]),
    st.sampled_from([0, 3, 5]),
)
def test_answers_are_written_byte_for_byte_as_twisted_writes_them(qname, an, ns, ar, edns, max_size, rcode):
    question = tdns.Query(qname, tdns.A, tdns.IN)
    ours = wire.encode_response(
        id=7,
        question=question,
        answers=an,
        authority=ns,
        additional=ar,
        edns=edns,
        max_size=max_size,
        rcode=rcode,
    )
    reference = _reference_encode(
        id=7, question=question, answers=an, authority=ns, additional=ar, edns=edns, max_size=max_size, rcode=rcode
    )
    assert ours == reference
    dns.message.from_wire(ours[0])  # and it is a readable message


def test_a_long_tcp_answer_never_points_past_a_14_bit_offset():
    many = [
        tdns.RRHeader(f"host-{i}.example".encode(), tdns.A, tdns.IN, 5, tdns.Record_A("10.0.0.1", 5))
        for i in range(2000)
    ]
    out, truncated = wire.encode_response(id=1, question=tdns.Query(b"example", tdns.A), answers=many)
    assert not truncated and len(out) > 0x4000
    assert len(dns.message.from_wire(out).answer) == 2000


@settings(max_examples=400)
@given(
    st.lists(st.binary(min_size=1, max_size=63), max_size=6).filter(lambda ls: sum(len(x) + 1 for x in ls) < 250),
    st.lists(records(), max_size=6),
)
def test_the_question_copied_from_the_query_is_what_writing_it_gives(labels, an):
    """Any label octets, dots among them: the answer copies the query's name only where writing it gives the same."""
    data = struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0) + b"".join(bytes((len(x),)) + x for x in labels) + b"\x00"
    req = wire.parse_request(data + struct.pack("!HH", tdns.A, tdns.IN))
    assert isinstance(req, wire.Request)
    assert req.name_wire in (b"", data[12:])
    assert bool(req.name_wire) == (bool(labels) and not any(b"." in x for x in labels))
    name = req.question.name.name
    # Records named by each suffix of the question's name (pointers into it), then others.
    suffixes = [name[i + 1 :] for i in range(len(name)) if name[i : i + 1] == b"."] + [name, b"x." + name]
    an = [tdns.RRHeader(s, tdns.A, tdns.IN, 5, tdns.Record_A("10.0.0.1", 5)) for s in suffixes] + an
    copied = wire.encode_response(id=7, question=req.question, answers=an, name_wire=req.name_wire)
    assert copied == wire.encode_response(id=7, question=req.question, answers=an)
