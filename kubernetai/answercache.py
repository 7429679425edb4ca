"""The server's cache of encoded answers, keyed case-insensitively.

An answer made only by kubernetai stanzas depends on nothing but their
stores (``Trace.versions``) and the query, so its encoded bytes can be sent
again with the next query's ID while those stores are unchanged.

Clients that randomise letter case (DNS 0x20) ask the same name in a new
spelling each time, and the answer must repeat that spelling.  An answer
whose every name either shares nothing with the question or points into the
question (owner names, ``ns.dns`` and the SOA built from the zone the query
spelled) is ``portable``: copying the new spelling over the question gives
exactly the answer a fresh lookup would (see ``is_portable``).  Others
(CNAMEs of ExternalName services; SRV targets, which CoreDNS builds from the
lower-cased name and the query's spelling of the zone and which RFC 2782
forbids compressing) are made afresh for a new spelling, which then replaces
the entry.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.names import dns

from kubernetai import wire

__all__ = ["AnswerCache", "CachedAnswer", "is_portable"]

HEADER_SIZE = 12
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
# Where the names are in the rdata of the types we answer with; a type not
# listed here (and not nameless) makes an answer not portable.
_NAMELESS = frozenset({dns.A, dns.AAAA, dns.TXT, wire.OPT})
_NAME_AT = {dns.NS: (0,), dns.PTR: (0,), dns.SRV: (6,), dns.MX: (2,), dns.SOA: (0, None)}
MAX_LABELS = 128  # a name of 255 octets has at most 127 labels (and pointers cannot loop past this)

Label = tuple[int, int, bool]  # (offset of its first octet, length, written here rather than pointed at)


def _read_name(msg: bytes, at: int) -> tuple[list[Label], int] | None:
    """A name's labels, following pointers, and where the name ends at ``at``; None if unreadable."""
    labels: list[Label] = []
    end = -1
    literal = True
    for _ in range(MAX_LABELS):
        if at >= len(msg):
            return None
        n = msg[at]
        if n == 0:
            return labels, (end if end >= 0 else at + 1)
        if n & 0xC0 == 0xC0:
            if at + 1 >= len(msg):
                return None
            if end < 0:
                end = at + 2
            at = ((n & 0x3F) << 8) | msg[at + 1]
            literal = False
            continue
        if n & 0xC0 or at + 1 + n > len(msg):
            return None
        labels.append((at + 1, n, literal))
        at += 1 + n
    return None


def is_portable(msg: bytes, zone_labels: int) -> bool:
    """Whether an encoded answer stays right when another spelling is copied over its question.

    True when every name in it shares no trailing label with the question,
    or reaches the labels it shares through pointers into the question and
    shares at most the zone (``zone_labels`` labels) or is the question
    itself.  Under another spelling the same names are then built and
    compressed the same way (a suffix can match the question only where it
    is the question's own zone, in the question's own spelling), and read
    through the pointers they spell what a fresh answer spells.
    """
    if len(msg) < HEADER_SIZE:
        return False
    counts = struct.unpack_from("!HHHH", msg, 4)
    question = _read_name(msg, HEADER_SIZE) if counts[0] == 1 else None
    if question is None:
        return False
    qlabels, at = question
    qend = at
    qtext = [msg[s : s + n].lower() for s, n, _ in qlabels]

    def accept(labels: list[Label]) -> bool:
        k = 0  # trailing labels shared with the question, in any case
        while k < min(len(labels), len(qlabels)):
            s, n, _ = labels[-1 - k]
            if msg[s : s + n].lower() != qtext[-1 - k]:
                break
            k += 1
        if k == 0:
            return True
        if k > zone_labels and not k == len(labels) == len(qlabels):
            return False  # repeats more of the question than its zone (SRV targets, glue of them)
        return all(s < qend for s, _, _ in labels[-k:])  # shared labels must be the question's own

    at += 4
    for _ in range(counts[1] + counts[2] + counts[3]):
        owner = _read_name(msg, at)
        if owner is None or not accept(owner[0]):
            return False
        at = owner[1]
        if at + _RR_FIXED.size > len(msg):
            return False
        rtype, _cls, _ttl, rdlength = _RR_FIXED.unpack_from(msg, at)
        rdata = at + _RR_FIXED.size
        at = rdata + rdlength
        if rtype in _NAMELESS:
            continue
        places = _NAME_AT.get(rtype)
        if places is None:
            return False  # a CNAME (an ExternalName's target: data, not the question) or a type we do not know
        spot = rdata
        for place in places:
            spot = rdata + place if place is not None else spot
            name = _read_name(msg, spot)
            if name is None or not accept(name[0]):
                return False
            spot = name[1]
    return True


@attrs.define(eq=False)
class CachedAnswer:
    """An encoded answer (minus its ID), the spelling it was made for and what it depends on."""

    body: bytes
    spelling: bytes  # the question name's octets as first asked
    zone_labels: int  # for is_portable(), judged when another spelling first asks (most never do)
    versions: tuple
    block: Any  # the server Block that answered (its observers see hits too)
    rcode: int
    aa: bool
    truncated: bool
    ancount: int
    # What metrics and the errors plugin need of a hit, without parsing the query again.
    failure: Any = None  # why a cached SERVFAIL failed (a Failure), for the errors plugin
    qtype: int = 0
    lname: str = ""  # the question, lower-cased with its final dot (for ``acl``, asked again on each hit)
    rotation_run: Any = None  # rotation.address_run() of the body, for ``loadbalance``
    metric_head: Any = None  # kubernetai.metrics.head() of a metered block's answer
    metric_sums: Any = None  # and its running sums in the listener's QueryMeter
    _portable: bool | None = None

    @property
    def portable(self) -> bool:
        """is_portable() of this answer: other spellings may be served from it."""
        if self._portable is None:
            self._portable = is_portable(b"\x00\x00" + self.body, self.zone_labels)
        return self._portable

    def valid(self) -> bool:
        for version, seen in self.versions:  # a loop, not all(): this runs on every hit
            if version() != seen:
                return False
        return True

    def for_query(self, data: bytes) -> bytes | None:
        """This answer for ``data`` (its ID and spelling), or None if it must be made afresh."""
        end = HEADER_SIZE + len(self.spelling)
        if data[HEADER_SIZE:end] == self.spelling:
            return data[:2] + self.body
        if not self.portable:
            return None
        return data[:2] + self.body[: HEADER_SIZE - 2] + data[HEADER_SIZE:end] + self.body[end - 2 :]


@attrs.frozen
class Varies:
    """In place of an answer: the answers to this query differ by client; ``value_of(client)`` picks one."""

    value_of: Callable[[str], object]


class AnswerCache:
    """Encoded answers by (transport, case-folded query), least recently used evicted first."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, CachedAnswer | Varies] = OrderedDict()
        # Query bytes after the ID → slot, for queries seen before (bounded; see answer()).
        self._seen: dict[bytes, tuple[str, bytes]] = {}
        self.hits = 0
        self.misses = 0  # queries looked up and not answered (absent, stale, or another spelling not portable)
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()

    def answer(self, data: bytes, proto: str, host: str = "") -> tuple[CachedAnswer, bytes] | None:
        """The cached answer to this query (from ``host``) with its ID, or None."""
        # Most clients send the very same bytes again (no 0x20, no cookie): those skip the key.
        seen = self._seen.get(data[2:])
        slot: tuple
        if seen is not None and seen[0] == proto:
            slot = seen
        else:
            key = wire.cache_key(data, proto == "udp")
            if key is None:
                return None
            slot = (proto, key)
            if len(self._seen) >= self.capacity:
                self._seen.clear()  # bounded: rebuilt by the next queries
            self._seen[data[2:]] = slot
        found = self._entries.get(slot)
        if found is not None and type(found) is Varies:  # one answer per client group (autopath: per namespace)
            slot = (*slot, found.value_of(host))
            found = self._entries.get(slot)
        entry = found if type(found) is CachedAnswer else None
        out = entry.for_query(data) if entry is not None and entry.valid() else None
        if entry is None or out is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(slot)  # recently used: evicted last
        return entry, out

    def remember(
        self,
        data: bytes,
        proto: str,
        out: bytes,
        versions: Sequence[tuple[Callable[[], object], object]],
        zone_labels: int,
        block: Any,
        **about: Any,
    ) -> None:
        """Keep ``out``, the answer to ``data`` made from exactly ``versions``."""
        key = wire.cache_key(data, proto == "udp")
        if key is None or not versions or len(out) < HEADER_SIZE:
            return
        spelling = data[HEADER_SIZE : HEADER_SIZE + wire.question_name_length(data)]
        if out[HEADER_SIZE : HEADER_SIZE + len(spelling)] != spelling:
            return  # not an answer echoing this question (never expected)
        slot: tuple = (proto, key)
        vary = about.pop("vary", None)
        if vary is not None:
            value_of, value = vary
            self._entries[slot] = Varies(value_of)
            slot = (proto, key, value)
        if slot not in self._entries and len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)  # a flood of new names keeps the hot ones
            self.evictions += 1
        b3, b4 = out[2], out[3]
        self._entries[slot] = CachedAnswer(
            body=out[2:],
            spelling=spelling,
            zone_labels=zone_labels,
            versions=tuple(versions),
            block=block,
            rcode=b4 & 0xF,
            aa=bool(b3 & 0x04),
            truncated=bool(b3 & 0x02),
            ancount=int.from_bytes(out[6:8], "big"),
            **about,
        )
        self._entries.move_to_end(slot)
