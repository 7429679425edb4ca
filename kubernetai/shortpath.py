"""The server's short path: an uncached query that kubernetai stanzas alone answer, as bytes from the start.

An answer not cached goes through parsing into Twisted's objects, the
request context, the chain, the stanza's lookups, records and encoding:
~60 µs in Python, of which the server's own share is half (issue 15,
bench/uncached.py --floor).  For the questions asked most — a Service's own
name, its SRV, their NODATA and NXDOMAIN neighbours (kubernetai.cluster.short)
— in a block whose chain's resolvers up to the answer are kubernetai stanzas
(and whose ``acl``, if any, lets the query in), this module reads the query,
asks the stanzas in order with the chain's rules, writes the answer (rotated
for ``loadbalance``), has the server count and observe it (``prometheus``,
``log``, ``errors``) and keeps it in the answer cache, exactly as the general
path would: tests/test_short_path.py checks both paths give the same bytes,
cache entries, counters and events.  Anything else, or any doubt, is None
and the general path answers.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from twisted.names import dns

from kubernetai import wire
from kubernetai.chain import RequestChain, class_says

__all__ = ["NOT_MINE", "NotMine", "Short", "answer"]

_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_COUNTS = struct.Struct("!HHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_SRV_FIXED = struct.Struct("!HHH")  # priority, weight, port
_OWNER_IS_QUESTION = b"\xc0\x0c"  # a pointer to the question's name
# Octets a name may hold here: those of host names (and _ of service labels).  Anything else
# (escapes, spaces, dots inside labels, non-ASCII) is rare and goes the general way.
_NAME_OCTETS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


class NotMine:
    """A resolver's short answer for a name in none of its zones: the chain asks the next resolver."""


NOT_MINE = NotMine()


class Short(NamedTuple):
    """A resolver's short answer: what its general path would have said, for this module to write.

    A resolver takes part by ``short_ok()`` (a classmethod: true when nothing
    its general answer depends on is overridden) and ``short_answer(lname,
    name, qtype)``, which gives a ``Short``, ``NOT_MINE``, or None (the
    general path answers).  kubernetai stanzas do (kubernetai.cluster.short).
    """

    rcode: int  # dns.OK or dns.ENAME
    version: tuple[Any, object]  # what the answer depends on: (version function, its value now)
    zone_labels: int  # labels of the zone it answered in (answercache.is_portable)
    written: bytes = b""  # address records, written (their owner is the question: a pointer)
    ancount: int = 0  # records in ``written``
    # SRV: (weight, port) of each record, their target (its wire name, text as the general path
    # builds it) and the packed addresses of its glue, written here with the writer's compression.
    srv: tuple[tuple[int, int], ...] = ()
    target: bytes = b""
    glue: tuple[bytes, ...] = ()
    ttl: int = 0
    soa: dns.RRHeader | None = None  # the authority section of a negative answer
    fallthrough: bool = False  # an NXDOMAIN the chain passes on (``fallthrough``)


def answer(factory: Any, data: bytes, address: tuple, proto: str) -> bytes | None:
    """The answer to ``data`` through the short path (counted, observed, cached), or None: the general path answers.

    ``factory`` is the ``KubeDNSServerFactory``; its answer cache was just
    asked and missed (its ``remember`` reuses the key that lookup made).
    """
    n = len(data)
    if n < 17 or data[2] & 0xF8 or data[4:10] != _ONE_QUESTION:  # a response, an opcode, not 1 question
        return None
    read = wire.plain_name(data)
    if read is None:
        return None
    labels, name_end = read
    if name_end + 4 > n or name_end - 12 > 255:
        return None
    qtype, qcls = wire.QTAIL.unpack_from(data, name_end)
    if qcls != dns.IN:
        return None
    question_end = name_end + 4
    arcount = data[10:12]
    edns = False
    dnssec_ok = False
    payload = 512
    limit = 65535 if proto != "udp" else 512
    if arcount == b"\x00\x00":
        if question_end != n:
            return None
    elif arcount == b"\x00\x01":
        read_opt = wire.plain_opt(data, question_end)
        if read_opt is None or read_opt[0] != 0:  # not one we read, or another EDNS version (BADVERS)
            return None
        _, payload, dnssec_ok = read_opt
        edns = True
        if proto == "udp":
            limit = wire.udp_limit_of(payload)
    else:
        return None
    name_wire = data[12:name_end]
    name = b".".join(labels)
    if (
        not labels
        or len(name) > wire.MAX_NAME_TEXT
        or name.translate(None, _NAME_OCTETS)
        or name.count(b".") != len(labels) - 1  # a dot inside a label
    ):
        return None
    text = name.decode("ascii") + "."
    lname = text.lower()
    found = factory._zone_and_block(lname)
    if found is None:
        return None
    zone, block = found
    if block.gate is not None and block.gate.decide(address[0] if address else "", qtype, lname) != "allow":
        return None  # acl refuses, filters or drops it: the general path says how
    chain = block.resolver
    if type(chain) is not RequestChain:
        return None
    start = factory._now() if block.observers or block.metered else 0.0
    versions: list[tuple[Any, object]] = []
    zone_labels: int | None = None
    result: Short | None = None
    fallen: Short | None = None  # the last NXDOMAIN passed on (a later "not mine" keeps it)
    answered_by: Any = None
    for r in chain.resolvers:
        if not class_says(type(r), "short_ok"):
            return None  # another resolver (forward, hosts...): the general path asks it
        got = r.short_answer(lname, text, qtype)
        if got is None:
            return None
        if got is NOT_MINE:
            versions.append((r.cache_version, r.cache_version()))
            continue
        assert isinstance(got, Short)
        answered_by = r
        versions.append(got.version)
        zone_labels = got.zone_labels if zone_labels is None else min(zone_labels, got.zone_labels)
        if got.fallthrough:
            fallen = got
            continue
        result = got
        break
    else:
        if fallen is None:
            return None  # no stanza serves the name: the general path says SERVFAIL
        result = fallen
    ancount = result.ancount + len(result.srv)  # the answer section: address records or SRV
    body = bytearray(data[12:question_end])  # the question, as asked
    written = result.written
    body += written
    if result.srv:
        _write_srv(body, name, labels, question_end, result)
    if result.soa is not None:
        _write_soa(body, result.soa, name_end - len(result.soa.name.name) - 2, name, name_wire)
    opt = wire._opt_bytes(result.rcode, dnssec_ok) if edns else b""
    byte3 = 0x84 | (data[2] & 0x01)  # QR, AA (every record of ours is authoritative), RD echoed
    byte4 = (0x80 if block.recursive else 0) | (data[3] & 0x10) | result.rcode
    counts = _COUNTS.pack(
        1,
        ancount,
        0 if result.soa is None else 1,
        len(result.glue) + (1 if edns else 0),
    )
    out = data[:2] + bytes((byte3, byte4)) + counts + body + opt
    if len(out) > limit:
        return None  # the general path truncates
    if block.rotate and ancount > 1:  # loadbalance, as the general path's _respond
        turn = block.next_rotation()
        if result.ancount > 1:  # address records, all the same size, right after the question: rotated
            cut = (turn % result.ancount) * (len(written) // result.ancount)
            out = out[:question_end] + written[cut:] + written[:cut] + out[question_end + len(written) :]
    head = None
    if block.observers or block.metered:
        head = factory.short_answered(
            block, zone, data, address, proto, start, out, name, qtype, payload if edns else None, dnssec_ok,
            ancount, answered_by,
        )  # fmt: skip
    factory.remember_answer(data, proto, out, versions, zone_labels or 0, block, qtype, lname, head)
    return out


# A negative answer's SOA as written after a question of ours, by (its record, where the question
# spells its zone): the names it compresses only ever point at the zone.
_SOA_WRITTEN: dict[tuple[int, int], tuple[dns.RRHeader, bytes]] = {}


def _write_soa(body: bytearray, soa: dns.RRHeader, zone_at: int, name: bytes, name_wire: bytes) -> None:
    """The SOA, written by wire's writer the first time for its zone's place in the question, then copied.

    Its owner is the zone as the question spells it (a pointer there), and
    MNAME ``ns.dns.ZONE`` and RNAME ``hostmaster.ZONE`` end in a pointer
    there too: no question of ours (its last label before the zone is
    ``svc``) holds ``ns.dns`` or ``hostmaster`` before its zone, so the bytes
    depend on nothing else.
    """
    key = (id(soa), zone_at)
    known = _SOA_WRITTEN.get(key)
    if known is not None and known[0] is soa:
        body += known[1]
        return
    comp: dict[bytes, int] = {}  # what the writer knows after the question: its suffixes
    wire._copy_first_name(bytearray(), name, name_wire, comp)
    mark = len(body)
    wire._write_rr(body, soa, comp)
    if len(_SOA_WRITTEN) >= 1024:
        _SOA_WRITTEN.clear()
    _SOA_WRITTEN[key] = (soa, bytes(body[mark:]))


def _write_srv(body: bytearray, name: bytes, labels: list[bytes], question_end: int, result: Short) -> None:
    """The SRV records and their glue, as wire.encode_response writes them.

    Each owner is the question (a pointer to it); each target is written
    whole (RFC 2782); the glue's owner, the target, points at the question's
    own spelling of it when the question ends with it (``_port._proto.`` and
    the target as built: lower-case Service and namespace), else at the
    first SRV record's target, as the writer's compression table would.
    """
    target = result.target
    rdata_target = b"".join([len(label).to_bytes(1, "big") + label for label in target.split(b".")]) + b"\x00"
    ttl = result.ttl
    fixed = _RR_FIXED.pack(dns.SRV, dns.IN, ttl, 6 + len(rdata_target))
    for weight, port in result.srv:
        body += _OWNER_IS_QUESTION + fixed + _SRV_FIXED.pack(0, weight, port) + rdata_target
    skip = len(labels[0]) + len(labels[1]) + 2  # the question past _port._proto.
    glue_at = 12 + skip if name[skip:] == target else question_end + len(_OWNER_IS_QUESTION) + _RR_FIXED.size + 6
    glue_owner = (0xC000 | glue_at).to_bytes(2, "big")
    for packed in result.glue:
        body += glue_owner + _RR_FIXED.pack(dns.A if len(packed) == 4 else dns.AAAA, dns.IN, ttl, len(packed)) + packed
