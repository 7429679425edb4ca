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
from typing import Any, cast

import attrs
from twisted.names import dns

from kubernetai import wire
from kubernetai.changes import STORE_CHANGES
from kubernetai.lazy_repr import LazyRepr

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


@attrs.define(eq=False, repr=False)
class CachedAnswer(LazyRepr):
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
    # Nothing to do on a hit but send it: no acl, no rotation, no counting, no observers (server.py).
    plain: bool = False
    used: bool = False  # hit since the eviction sweep last passed it (second chance)
    _portable: bool | None = None
    # The change count its versions move with (kubernetai.changes: one Service's bucket, or every
    # store's count), and that count when it was last found valid: while they are equal, the
    # answer is valid (``plain_udp_hit`` reads them).  No count: checked on every hit.
    checked_at: int = -1
    counter: list[int] = attrs.field(init=False)
    _store_only: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # One bucket if every version is store-derived and watches the same one; every store's
        # count if they differ (a loop: this runs for every answer made).
        counter: list[int] | None = None
        store_only = True
        for fn, _ in self.versions:
            if not getattr(fn, "store_only", False):
                store_only, counter = False, None
                break
            if counter is None:
                counter = fn.counter
            elif counter is not fn.counter:
                counter = STORE_CHANGES
        self._store_only = store_only
        self.counter = STORE_CHANGES if counter is None else counter

    @property
    def portable(self) -> bool:
        """is_portable() of this answer: other spellings may be served from it."""
        if self._portable is None:
            self._portable = is_portable(b"\x00\x00" + self.body, self.zone_labels)
        return self._portable

    def valid(self) -> bool:
        if self.checked_at == self.counter[0]:
            return True  # nothing its store-derived versions read has changed since the last check
        for version, seen in self.versions:  # a loop, not all(): this runs on every hit
            if version() != seen:
                return False
        if self._store_only:
            self.checked_at = self.counter[0]
        return True

    def for_query(self, data: bytes) -> bytes | None:
        """This answer for ``data`` (its ID and spelling), or None if it must be made afresh."""
        end = HEADER_SIZE + len(self.spelling)
        if data[HEADER_SIZE:end] == self.spelling:
            return data[:2] + self.body
        if not self.portable:
            return None
        return data[:2] + self.body[: HEADER_SIZE - 2] + data[HEADER_SIZE:end] + self.body[end - 2 :]


@attrs.define(eq=False, repr=False)
class Varies(LazyRepr):
    """In place of an answer: the answers to this query differ by client; ``value_of(client)`` picks one.

    ``answers`` holds one answer per value (autopath: per client namespace), at most ``MAX_VALUES``.
    """

    value_of: Callable[[str], object]
    answers: dict = attrs.Factory(dict)
    used: bool = False
    # value_of(host) by host, while STORE_CHANGES is ``_values_at`` (only for a store-derived value_of).
    _values: dict = attrs.Factory(dict)
    _values_at: int = -1
    _memo: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._memo = getattr(self.value_of, "store_only", False)

    MAX_VALUES = 1024
    MAX_HOSTS = 4096

    def pick(self, host: str) -> CachedAnswer | None:
        """The answer for this client: its group's (autopath: its pod's namespace), if one is kept."""
        if not self._memo:
            return self.answers.get(self.value_of(host))
        if self._values_at != STORE_CHANGES[0]:
            self._values.clear()  # pods may have moved: ask again
            self._values_at = STORE_CHANGES[0]
        values = self._values
        if host in values:
            return self.answers.get(values[host])
        value = self.value_of(host)
        if len(values) < self.MAX_HOSTS:
            values[host] = value
        return self.answers.get(value)


class AnswerCache:
    """Encoded answers by (transport, case-folded query); evicted oldest first, hit ones get a second chance.

    Two maps: ``_entries`` by the case-folded key (every spelling and EDNS
    option set of a query shares one answer), and per transport a map from
    the very bytes of a query after its ID to its answer, for the common
    client that sends the same bytes again: a hit then costs one dict
    lookup, one validity check and one concatenation.  The second map may
    still hold an answer evicted from the first (it is bounded too, and
    cleared when full); an answer is sent only while valid either way.
    """

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, CachedAnswer | Varies] = OrderedDict()
        # Per transport: a query's bytes after its ID → its answer (``plain_udp_hit`` reads ``same_udp``).
        self.same_udp: dict[bytes, CachedAnswer | Varies] = {}
        self._same_bytes: dict[str, dict[bytes, CachedAnswer | Varies]] = {"udp": self.same_udp, "tcp": {}}
        self._last_key: tuple = (None, None, None)
        self.hits = 0
        self.misses = 0  # queries looked up and not answered (absent, stale, or another spelling not portable)
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        for same in self._same_bytes.values():
            same.clear()

    def plain_udp_hit(self, data: bytes, host: str) -> bytes | None:
        """The hot path (the UDP protocol calls it first): the answer to these very bytes, ready to send.

        Only an answer that needs nothing but sending (``plain``) and was
        found valid since its change count last moved; anything else is None,
        and ``answer`` (through the server's ``cached_answer``) decides.
        """
        known = self.same_udp.get(data[2:])
        if type(known) is Varies:  # one answer per client group (autopath: the client pod's namespace)
            known = known.pick(host)
            if known is not None and data[HEADER_SIZE : HEADER_SIZE + len(known.spelling)] != known.spelling:
                return None  # made for another spelling
        if type(known) is not CachedAnswer or not known.plain or known.checked_at != known.counter[0]:
            return None
        self.hits += 1
        known.used = True
        return data[:2] + known.body

    def answer(self, data: bytes, proto: str, host: str = "") -> tuple[CachedAnswer, bytes] | None:
        """The cached answer to this query (from ``host``) with its ID, or None."""
        same = self._same_bytes.get(proto)
        if same is None:
            return None
        tail = data[2:]
        known = same.get(tail)
        if known is not None:
            if type(known) is CachedAnswer:  # made for these very bytes: no key, no spelling check
                if known.valid():
                    self.hits += 1
                    known.used = True
                    return known, data[:2] + known.body
            else:
                hit = self._pick(cast(Varies, known), data, host, count_miss=False)  # counted below
                if hit is not None:
                    return hit
        key = wire.cache_key(data, proto == "udp")
        if key is None:
            return None
        self._last_key = (data, proto, key)  # a miss is remembered next: its key is not made twice
        found = self._entries.get((proto, key))
        if found is None:
            self.misses += 1
            return None
        if type(found) is Varies:
            hit = self._pick(found, data, host)
            if hit is None:
                return None
            self._keep_bytes(same, tail, found)
            return hit
        entry = cast(CachedAnswer, found)
        out = entry.for_query(data) if entry.valid() else None
        if out is None:
            self.misses += 1
            return None
        self.hits += 1
        entry.used = True
        if data[HEADER_SIZE : HEADER_SIZE + len(entry.spelling)] == entry.spelling:
            self._keep_bytes(same, tail, entry)
        return entry, out

    def _pick(
        self, varies: Varies, data: bytes, host: str, count_miss: bool = True
    ) -> tuple[CachedAnswer, bytes] | None:
        """The answer for this client of a query whose answers vary by client."""
        entry = varies.pick(host)
        out = entry.for_query(data) if entry is not None and entry.valid() else None
        if entry is None or out is None:
            self.misses += count_miss
            return None
        self.hits += 1
        varies.used = True
        return entry, out

    def _keep_bytes(self, same: dict, tail: bytes, found: CachedAnswer | Varies) -> None:
        if len(same) >= self.capacity:
            same.clear()  # bounded: rebuilt by the next queries
        same[tail] = found

    def remember(
        self,
        data: bytes,
        proto: str,
        out: bytes,
        versions: Sequence[tuple[Callable[[], object], object]],
        zone_labels: int,
        block: Any,
        *,
        vary: tuple[Callable[[str], object], object] | None = None,
        failure: Any = None,
        qtype: int = 0,
        lname: str = "",
        rotation_run: Any = None,
        metric_head: Any = None,
        metric_sums: Any = None,
        plain: bool = False,
    ) -> None:
        """Keep ``out``, the answer to ``data`` made from exactly ``versions`` (the rest: ``CachedAnswer``'s)."""
        same = self._same_bytes.get(proto)
        last_data, last_proto, key = self._last_key
        if last_data is not data or last_proto != proto:
            key = wire.cache_key(data, proto == "udp")
        if same is None or key is None or not versions or len(out) < HEADER_SIZE:
            return
        spelling = data[HEADER_SIZE : HEADER_SIZE + wire.question_name_length(data)]
        if out[HEADER_SIZE : HEADER_SIZE + len(spelling)] != spelling:
            return  # not an answer echoing this question (never expected)
        slot = (proto, key)
        b3, b4 = out[2], out[3]
        entry = CachedAnswer(  # positional, in the order of its fields: made for every answer not cached
            out[2:],
            spelling,
            zone_labels,
            tuple(versions),
            block,
            b4 & 0xF,
            bool(b3 & 0x04),
            bool(b3 & 0x02),
            (out[6] << 8) | out[7],
            failure,
            qtype,
            lname,
            rotation_run,
            metric_head,
            metric_sums,
            plain,
        )
        if not entry.valid():
            return  # what it was made from changed while it was made: the next query makes it afresh
        kept: CachedAnswer | Varies = entry
        if vary is not None:
            value_of, value = vary
            varies = self._entries.get(slot)
            if type(varies) is not Varies or varies.value_of != value_of:
                varies = Varies(value_of)
            if value not in varies.answers and len(varies.answers) >= Varies.MAX_VALUES:
                varies.answers.clear()  # bounded: a flood of client groups
            varies.answers[value] = entry
            kept = varies
        if slot not in self._entries and len(self._entries) >= self.capacity:
            self._evict_one()
        self._entries[slot] = kept
        self._entries.move_to_end(slot)
        self._keep_bytes(same, data[2:], kept)

    def _evict_one(self) -> None:
        """Drop the oldest entry not hit since the sweep last passed it (CLOCK, one pass at most)."""
        for _ in range(len(self._entries)):
            slot, entry = self._entries.popitem(last=False)
            if not entry.used:
                break
            entry.used = False
            self._entries[slot] = entry  # a second chance, at the young end
        else:
            self._entries.popitem(last=False)  # every one was hit: the oldest goes
        self.evictions += 1
