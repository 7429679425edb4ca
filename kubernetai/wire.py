"""DNS wire format for the server side: strict request parsing, response encoding.

Twisted's ``dns.Message`` decodes leniently (a short packet silently yields
fewer records) and truncates answers in the middle of a record.  A server
needs the opposite: decide FORMERR/drop for bad input, and cut responses at a
record boundary with TC set.  Records themselves are still Twisted's
``RRHeader``/``Record_*`` objects; the kinds we answer with are written by our
own writer, byte for byte what Twisted's ``encode`` gives (tests/test_wire.py),
any other kind by Twisted.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from io import BytesIO
from typing import Any, NamedTuple, cast

import attrs
from twisted.names import dns

from kubernetai.lazy_repr import LazyRepr

__all__ = [
    "Request",
    "Malformed",
    "parse_request",
    "encode_response",
    "EDNS_PAYLOAD",
    "BADVERS",
]

HEADER = struct.Struct("!HBBHHHH")
EDNS_PAYLOAD = 1232  # what we advertise (DNS flag day 2020)
# The largest UDP answer we send, whatever the client offers: the DNS flag-day
# value, which is also what we advertise (a reflected answer is at most this).
MAX_UDP_PAYLOAD = EDNS_PAYLOAD
MAX_NAME_TEXT = 253  # a name of 255 octets on the wire, without the final dot
BADVERS = 16
OPT = 41


def udp_limit_of(edns_payload: int) -> int:
    """The UDP answer size for a client offering ``edns_payload``: at least 512, at most ours."""
    return max(512, min(edns_payload, MAX_UDP_PAYLOAD))


class Request(NamedTuple):
    """A decoded query: just what answering and logging need (a tuple: one is made per query answered)."""

    id: int
    opcode: int
    rd: bool
    cd: bool
    question: dns.Query
    size: int
    edns_version: int | None = None
    edns_payload: int = 512
    dnssec_ok: bool = False
    ixfr_serial: int | None = None  # IXFR: the client's SOA serial (authority section)
    # The question name as the query wrote it, when writing ``question.name`` again gives
    # the same octets (no label holds a dot): the answer copies it (``encode_response``).
    name_wire: bytes = b""

    @property
    def has_edns(self) -> bool:
        return self.edns_version is not None

    def udp_limit(self) -> int:
        """The largest UDP response this client can take."""
        return udp_limit_of(self.edns_payload) if self.has_edns else 512


@attrs.frozen(repr=False)
class Malformed(LazyRepr):
    """A packet whose header is readable but whose body is not: FORMERR."""

    id: int
    opcode: int
    rd: bool
    reason: str
    question: dns.Query | None = None
    rcode: int = dns.EFORMAT


def parse_request(data: bytes) -> Request | Malformed | None:
    """Decode a query; None means drop it (unreadable header, or a response)."""
    if len(data) < HEADER.size:
        return None
    ident, byte3, byte4, qd, an, ns, ar = HEADER.unpack_from(data)
    if byte3 & 0x80:  # QR set: a response, never answer it
        return None
    opcode = (byte3 >> 3) & 0xF
    rd = bool(byte3 & 1)
    cd = bool(byte4 & 0x10)
    if opcode != dns.OP_QUERY:
        return Malformed(ident, opcode, rd, f"opcode {opcode} not implemented", rcode=dns.ENOTIMP)
    if qd != 1:
        return Malformed(ident, opcode, rd, f"{qd} questions (need exactly 1)")
    if an == ns == 0 and ar <= 1:
        plain = _parse_plain(data, ident, opcode, rd, cd, ar)
        if plain is not None:
            return plain
    message = dns.Message()
    try:
        message.fromStr(data)
    except Exception as e:  # any decoding problem is the client's
        return Malformed(ident, opcode, rd, f"undecodable message: {e!r}")
    got = (len(message.queries), len(message.answers), len(message.authority), len(message.additional))
    if got != (qd, an, ns, ar):
        question = message.queries[0] if message.queries else None
        return Malformed(ident, opcode, rd, "message shorter than its counts", question)
    question = message.queries[0]
    if len(question.name.name) > MAX_NAME_TEXT:
        # Longer than 255 octets on the wire: not a domain name (RFC 1035 §2.3.4); not echoed back.
        return Malformed(ident, opcode, rd, "question name longer than 255 octets")
    ixfr = None
    if question.type == dns.IXFR:
        soas = [rr for rr in message.authority if rr.type == dns.SOA]
        ixfr = cast(dns.Record_SOA, soas[0].payload).serial if soas else None
    opts = [rr for rr in message.additional if rr.type == OPT]
    if len(opts) > 1:
        return Malformed(ident, opcode, rd, "more than one OPT record", question)
    if opts:
        try:
            opt = dns._OPTHeader.fromRRHeader(opts[0])
        except Exception as e:  # an option whose length runs past the record, and the like
            return Malformed(ident, opcode, rd, f"malformed OPT record: {e!r}", question)
        return Request(
            ident,
            opcode,
            rd,
            cd,
            question,
            len(data),
            edns_version=opt.version,
            edns_payload=opt.udpPayloadSize,
            dnssec_ok=bool(opt.dnssecOK),
            ixfr_serial=ixfr,
        )
    return Request(ident, opcode, rd, cd, question, len(data), ixfr_serial=ixfr)


QTAIL = struct.Struct("!HH")  # a question's type and class
_OPT_FIXED = struct.Struct("!BHHBBHH")  # root name, type, class (payload), ext. rcode, version, DO+Z, rdlength


def plain_name(data: bytes) -> tuple[list[bytes], int] | None:
    """The question name of a query as queries write it (labels, no pointers): its labels and where it ends.

    None if a label is a pointer (or of a reserved kind) or the packet ends first.
    """
    labels = []
    at = HEADER.size
    n = len(data)
    while True:
        if at >= n:
            return None
        size = data[at]
        if size == 0:
            break
        if size & 0xC0:
            return None
        labels.append(data[at + 1 : at + 1 + size])
        at += 1 + size
    return labels, at + 1


def plain_opt(data: bytes, at: int) -> tuple[int, int, bool] | None:
    """The OPT record that ends a query at ``at``: (EDNS version, UDP payload, DO); None unless it is
    one whose options add up exactly to the packet's end (the full parser judges the others)."""
    n = len(data)
    if at + _OPT_FIXED.size > n:
        return None
    root, rtype, payload, _ext, version, flags, rdlength = _OPT_FIXED.unpack_from(data, at)
    at += _OPT_FIXED.size
    if root != 0 or rtype != OPT or at + rdlength != n:
        return None
    while at < n:
        if at + 4 > n:
            return None
        at += 4 + int.from_bytes(data[at + 2 : at + 4], "big")
    if at != n:
        return None
    return version, payload, bool(flags & 0x8000)


def _parse_plain(data: bytes, ident: int, opcode: int, rd: bool, cd: bool, ar: int) -> Request | None:
    """The common query, decoded without Twisted's Message: one question and at most a well-formed OPT.

    None when the packet is anything else (compressed question name, IXFR,
    another additional record, an OPT whose options do not add up, bytes
    left over): the full parser then decides, FORMERR included.  Whatever
    it accepts decodes to exactly what the full parser gives.
    """
    read = plain_name(data)
    if read is None:
        return None
    labels, at = read
    n = len(data)
    if at + 4 > n or at - HEADER.size > 255:
        return None
    qtype, qcls = QTAIL.unpack_from(data, at)
    at += 4
    if qtype == dns.IXFR:
        return None
    name = b".".join(labels)
    if len(name) > MAX_NAME_TEXT:
        return None
    question = dns.Query(name, qtype, qcls)
    # Written again, the name gives these very octets unless a label holds a dot.
    name_wire = data[HEADER.size : at - 4] if name.count(b".") + 1 == len(labels) else b""
    if ar == 0:
        return Request(ident, opcode, rd, cd, question, n, name_wire=name_wire) if at == n else None
    opt = plain_opt(data, at)
    if opt is None:
        return None
    version, payload, dnssec_ok = opt
    return Request(
        ident,
        opcode,
        rd,
        cd,
        question,
        n,
        edns_version=version,
        edns_payload=payload,
        dnssec_ok=dnssec_ok,
        name_wire=name_wire,
    )


# Name compression: a name's suffix (bytes, as written) → its offset in the message.  A pointer
# has 14 bits: offsets past 0x3FFF are never remembered (Twisted's own table would store them
# and write corrupt pointers in large TCP answers).
MAX_POINTER = 0x3FFF


def _remember_target(comp: dict[bytes, int], target: bytes, end: int) -> None:
    """Let later names point into an SRV target written uncompressed.

    RFC 2782 forbids compressing the target itself, but nothing forbids
    other names pointing at it (miekg/dns, hence CoreDNS, does).  Without
    this, the SRV glue alone overflows a 512-byte answer.
    """
    labels = [label for label in target.split(b".") if label]
    size = sum(len(label) + 1 for label in labels) + 1
    offset = end - size + HEADER.size
    for i in range(len(labels)):
        suffix = b".".join(labels[i:])
        if suffix not in comp and offset <= MAX_POINTER:
            comp[suffix] = offset
        offset += len(labels[i]) + 1


def question_name_length(data: bytes) -> int:
    """Octets of the question name of a query ``cache_key`` accepted: up to its first zero octet."""
    return data.index(0, HEADER.size) + 1 - HEADER.size


def _labels_end(data: bytes) -> int:
    """Where the question name's labels end (its root octet), or -1 if it has a pointer or runs out."""
    i = HEADER.size
    n = len(data)
    while i < n and data[i] != 0:  # the question name, uncompressed in queries
        if data[i] & 0xC0:
            return -1
        i += data[i] + 1
    return i if i < n else -1


_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"


def cache_key(data: bytes, udp: bool = True) -> bytes | None:
    """What our answer to a query depends on, besides its ID and letter case.

    The query after its ID with the question name case-folded, only the
    header flags we echo (RD, CD; QR and the opcode, which decide whether we
    answer at all), and of the OPT record only its version, DO bit and (over
    UDP) the answer size the client can take, clamped as ``udp_limit`` does:
    cookies and other options differ per client and we echo none of them.
    None for anything but one question and at most one additional record
    (the OPT), which is never cached.

    This runs for every packet, so the name's end is found with ``find``.
    Without an OPT that is all it takes: the key is the packet up to the
    first zero octet case-folded (length octets are below 64, never a
    letter) and the rest as it is, so two packets share a key only if they
    differ in letter case there.  With an OPT, whose fields are normalised,
    the labels are walked to be sure where the name ends.
    """
    n = len(data)
    if n < HEADER.size + 5 or data[4:10] != _ONE_QUESTION:
        return None
    end = data.find(0, HEADER.size)  # the name's root octet, unless a label holds a zero octet
    if end < 0:
        return None
    flags = bytes((data[2] & 0xF9, data[3] & 0x10))
    arcount = data[10:12]
    if arcount == b"\x00\x00":
        return flags + data[HEADER.size : end].lower() + data[end:] if end + 5 == n else None
    if arcount != b"\x00\x01" or _labels_end(data) != end:
        return None
    q_end = end + 5  # root label, qtype, qclass
    # One OPT: root name, type 41, class (payload), ttl (ext rcode, version, DO), rdlength, options.
    if n < q_end + 11 or data[q_end] != 0 or data[q_end + 1 : q_end + 3] != b"\x00\x29":
        return None
    if q_end + 11 + int.from_bytes(data[q_end + 9 : q_end + 11], "big") != n:
        return None  # the OPT's length does not add up: let the full parser judge it
    payload = udp_limit_of(int.from_bytes(data[q_end + 3 : q_end + 5], "big")) if udp else 0
    return (
        flags
        + data[HEADER.size : end].lower()
        + data[end:q_end]
        + payload.to_bytes(2, "big")
        + data[q_end + 5 : q_end + 9]
    )


_OPT_CACHE: dict[tuple[int, bool], bytes] = {}


def _opt_bytes(rcode: int, dnssec_ok: bool) -> bytes:
    """Our OPT record for this extended RCODE and DO bit (four possible values: made once each)."""
    key = (rcode >> 4, dnssec_ok)
    found = _OPT_CACHE.get(key)
    if found is None:
        opt = dns._OPTHeader(udpPayloadSize=EDNS_PAYLOAD, extendedRCODE=key[0], version=0, dnssecOK=dnssec_ok)
        buf = BytesIO()
        opt.encode(buf)
        found = _OPT_CACHE[key] = buf.getvalue()
    return found


# ---------------------------------------------------------------- encoding
# Our own writer for the records we answer with, byte for byte what Twisted's
# ``encode`` methods write (same names, same compression choices), into one
# bytearray: Twisted's per-name BytesIO writes, struct packs and seeks were a
# sixth of an uncached answer.  Any other record type is written by Twisted.
_RR_FIXED = struct.Struct("!HHIH")
_SRV_FIXED = struct.Struct("!HHH")
_SOA_FIXED = struct.Struct("!LlllL")


def _write_name(buf: bytearray, name: bytes, comp: dict | None) -> None:
    """Twisted's ``Name.encode``: suffixes seen before become pointers, new ones are remembered.

    Only where a 14-bit pointer can reach (``MAX_POINTER``).  Labels are cut
    as Twisted cuts them: at each dot, except that a rest starting with a dot
    (an empty label) is written whole as one label.
    """
    start = 0
    n = len(name)
    while start < n:
        if comp is not None:
            suffix = name[start:] if start else name
            at = comp.get(suffix)
            if at is not None:
                buf += (0xC000 | at).to_bytes(2, "big")
                return
            at = len(buf) + HEADER.size
            if at <= MAX_POINTER:
                comp[suffix] = at
        dot = name.find(b".", start)
        if dot <= start:  # the last label, or a rest starting with a dot: written whole
            dot = n
        buf.append((dot - start) & 0xFF)
        buf += name[start:dot]
        start = dot + 1
    buf.append(0)


def _copy_first_name(buf: bytearray, name: bytes, name_wire: bytes, comp: dict) -> None:
    """``_write_name`` of the question (the first name, nothing to point at): the query's octets, copied.

    ``name_wire`` is ``name`` as the query wrote it, labels without dots
    (``Request.name_wire``): the same octets and the same suffixes
    remembered as writing it label by label, for less than half the work.
    """
    at = 0
    start = 0
    size = name_wire[0]
    while size:
        comp[name[start:] if start else name] = at + HEADER.size
        at += size + 1
        start += size + 1
        size = name_wire[at]
    buf += name_wire


def _rdata_address(buf: bytearray, payload: Any, comp: dict | None) -> None:
    buf += payload.address


def _rdata_name(buf: bytearray, payload: Any, comp: dict | None) -> None:
    _write_name(buf, payload.name.name, comp)


def _rdata_srv(buf: bytearray, srv: Any, comp: dict | None) -> None:
    buf += _SRV_FIXED.pack(srv.priority, srv.weight, srv.port)
    _write_name(buf, srv.target.name, None)  # never compressed (RFC 2782)


def _rdata_soa(buf: bytearray, soa: Any, comp: dict | None) -> None:
    _write_name(buf, soa.mname.name, comp)
    _write_name(buf, soa.rname.name, comp)
    buf += _SOA_FIXED.pack(soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)


_RDATA = {
    dns.Record_A: _rdata_address,
    dns.Record_AAAA: _rdata_address,
    dns.Record_CNAME: _rdata_name,
    dns.Record_PTR: _rdata_name,
    dns.Record_NS: _rdata_name,
    dns.Record_SRV: _rdata_srv,
    dns.Record_SOA: _rdata_soa,
}


def _write_rr(buf: bytearray, rr: dns.RRHeader, comp: dict) -> None:
    """Twisted's ``RRHeader.encode`` of one record, appended to ``buf``."""
    payload = rr.payload
    write = _RDATA.get(type(payload))
    if write is None:  # a type we do not build ourselves: Twisted writes it, at the right offset
        out = BytesIO()
        out.write(buf)
        rr.encode(out, comp)
        buf[len(buf) :] = out.getvalue()[len(buf) :]
        return
    _write_name(buf, rr.name.name, comp)
    buf += _RR_FIXED.pack(rr.type, rr.cls, rr.ttl, 0)
    start = len(buf)
    write(buf, payload, comp)
    size = len(buf) - start
    buf[start - 2] = size >> 8
    buf[start - 1] = size & 0xFF


def encode_response(
    *,
    id: int,
    opcode: int = dns.OP_QUERY,
    rd: bool = False,
    cd: bool = False,
    rcode: int = dns.OK,
    aa: bool = False,
    ra: bool = False,
    question: dns.Query | None = None,
    answers: Sequence[dns.RRHeader] = (),
    authority: Sequence[dns.RRHeader] = (),
    additional: Sequence[dns.RRHeader] = (),
    edns: bool = False,
    dnssec_ok: bool = False,
    max_size: int = 65535,
    name_wire: bytes = b"",
) -> tuple[bytes, bool]:
    """Encode a response no larger than ``max_size``; returns (bytes, truncated).

    Records that do not fit are left out whole.  TC is set when an answer or
    authority record had to go; dropping additional records alone does not
    set it (RFC 2181 §9).  The OPT record always fits: its room is reserved.
    ``name_wire``: the question's name as the query wrote it (``Request.name_wire``), copied.
    """
    body = bytearray()
    comp: dict[bytes, int] = {}
    if question is not None:
        if name_wire:
            _copy_first_name(body, question.name.name, name_wire, comp)
        else:
            _write_name(body, question.name.name, comp)
        body += question.type.to_bytes(2, "big") + question.cls.to_bytes(2, "big")
    opt = _opt_bytes(rcode, dnssec_ok) if edns else b""
    room = max_size - HEADER.size - len(opt)
    counts = [0, 0, 0]
    truncated = False
    for index, section in enumerate((answers, authority, additional)):
        for rr in section:
            mark = len(body)
            _write_rr(body, rr, comp)
            if len(body) > room:
                del body[mark:]
                limit = mark + HEADER.size
                for name in [n for n, off in comp.items() if off >= limit]:
                    del comp[name]
                truncated = index < 2
                break
            counts[index] += 1
            if rr.type == dns.SRV:
                _remember_target(comp, cast(dns.Record_SRV, rr.payload).target.name, len(body))
        else:
            continue
        break
    byte3 = 0x80 | ((opcode & 0xF) << 3) | (0x04 if aa else 0) | (0x02 if truncated else 0) | (1 if rd else 0)
    byte4 = (0x80 if ra else 0) | (0x10 if cd else 0) | (rcode & 0xF)
    header = HEADER.pack(
        id,
        byte3,
        byte4,
        1 if question is not None else 0,
        counts[0],
        counts[1],
        counts[2] + (1 if edns else 0),
    )
    return header + bytes(body) + opt, truncated


def self_test() -> str:
    """Encode an answer of every record kind we build; '' if it works, else why not.

    Run before twistd drops privileges, so that what encoding imports lazily
    (the idna codec for names given as text, among others) is loaded while the
    code is still readable; and by /health, which fails if answering is broken.
    """
    try:
        name = "self-test.kubernetai.invalid"
        records = [
            dns.RRHeader(name, dns.A, dns.IN, 5, dns.Record_A("192.0.2.1", 5)),
            dns.RRHeader(name, dns.AAAA, dns.IN, 5, dns.Record_AAAA("2001:db8::1", 5)),
            dns.RRHeader(name, dns.SRV, dns.IN, 5, dns.Record_SRV(0, 100, 80, "target." + name, 5)),
            dns.RRHeader(name, dns.PTR, dns.IN, 5, dns.Record_PTR("ptr." + name, 5)),
            dns.RRHeader(name, dns.CNAME, dns.IN, 5, dns.Record_CNAME("cname." + name, 5)),
            dns.RRHeader(name, dns.TXT, dns.IN, 5, dns.Record_TXT(b"1.1.0", ttl=5)),
        ]
        out, _ = encode_response(id=1, question=dns.Query(name.encode(), dns.A, dns.IN), answers=records, edns=True)
        message = dns.Message()
        message.fromStr(out)
        "self-test.example".encode("idna").decode("idna")
    except Exception as e:  # anything at all: answering would fail the same way
        return f"{type(e).__name__}: {e}"
    return ""
