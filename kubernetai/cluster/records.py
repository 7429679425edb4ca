"""Shaping a stanza's answer into DNS records, as CoreDNS's backend_lookup.go.  Pure.

Nothing here does I/O or touches the reactor; ``answer()`` asks lookup.py's
``View`` what a name means and returns an ``Answer`` the resolver turns into
a result or an exception.  Owner names keep the query's spelling; names we
build (SRV targets, PTR targets) use the zone as the query spelled it, as
CoreDNS does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

from twisted.names import dns

from kubernetai.cluster.lookup import Hit, NoSuchName, View, reverse_address
from kubernetai.cluster.names import strip_zone
from kubernetai.question import Question
from kubernetai.rr import soa
from kubernetai.zones import is_subdomain

__all__ = ["Answer", "answer", "DNS_SCHEMA_VERSION", "negative_soa", "address_rr", "rr", "bare", "srv_weight"]

DNS_SCHEMA_VERSION = "1.1.0"
MAX_CNAME_HOPS = 7  # CNAMEs followed inside our own zones before giving up
MIN_RECORD_SIZE = 16  # an A record whose owner is a compression pointer: the smallest we write


def max_records(message_size: int) -> int:
    """Records of one section worth building for an answer of at most ``message_size`` bytes.

    One more than can fit: the encoder still sees that something was cut (TC),
    but a Service with 5,000 endpoints no longer costs 5,000 records per query.
    """
    return message_size // MIN_RECORD_SIZE + 1


class Answer(NamedTuple):
    """What the stanza says: records, or NXDOMAIN (``name_error``), or REFUSED (a tuple: cheap to make)."""

    answers: tuple[dns.RRHeader, ...] = ()
    additional: tuple[dns.RRHeader, ...] = ()
    name_error: bool = False
    refused: bool = False
    # CNAME targets outside our zones that an upstream should complete.
    chase: tuple[str, ...] = ()


def bare(name: str) -> str:
    """A name as Twisted wants it: without the final dot."""
    return name.rstrip(".")


@functools.lru_cache(maxsize=4096)
def _wire_name(name: str) -> bytes:
    """A name as Twisted stores it, made once: Twisted IDNA-encodes a text name per record."""
    text = bare(name)
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        return text.encode("idna")


def rr(owner: str, type_: int, ttl: int, payload: dns.IEncodableRecord) -> dns.RRHeader:
    return dns.RRHeader(_wire_name(owner), type_, dns.IN, ttl, payload, auth=True)


def address_rr(owner: str, ip: str, ttl: int) -> dns.RRHeader:
    if ":" in ip:
        return rr(owner, dns.AAAA, ttl, dns.Record_AAAA(ip, ttl))
    return rr(owner, dns.A, ttl, dns.Record_A(ip, ttl))


def negative_soa(view: View, zone: str) -> dns.RRHeader:
    return soa(zone, view.opts.ttl, int(view.store.last_modified))


def _addresses(
    view: View, q: Question, qtype: int, hits: Sequence[Hit], limit: int, depth: int = 0
) -> tuple[list, list[str]]:
    """A/AAAA records (and CNAMEs) for hits, as CoreDNS's plugin.A/AAAA; at most ``limit`` of them."""
    out: list[dns.RRHeader] = []
    chase: list[str] = []
    seen: set[str] = set()
    for h in hits:
        if len(out) >= limit:
            break
        kind = h.kind
        if kind == dns.CNAME:
            target = h.host.rstrip(".") + "."
            if target.lower() == q.lname or depth > MAX_CNAME_HOPS:
                continue
            cname = rr(q.name, dns.CNAME, h.ttl, dns.Record_CNAME(_wire_name(target), h.ttl))
            inner = q.sibling(target)
            if is_subdomain(inner.lname, q.lzone):
                try:
                    more, more_chase = _addresses(view, inner, qtype, view.records(inner), limit, depth + 1)
                except NoSuchName:
                    continue
                if more:
                    out.append(cname)
                    out.extend(more)
                    chase.extend(more_chase)
                continue
            out.append(cname)
            chase.append(target)
        elif kind == qtype and h.host not in seen:
            seen.add(h.host)
            out.append(address_rr(q.name, h.host, h.ttl))
    return out, chase


def srv_weight(hits: int) -> int:
    """The weight of each SRV record of an answer with ``hits`` hits (CoreDNS's: every hit counts)."""
    total = 100 * hits or 1
    return max(1, int(100.0 / total * 100))


def _srv(view: View, q: Question, limit: int) -> tuple[list, list]:
    hits = view.services(q, dns.SRV)
    weight = srv_weight(len(hits))  # counts every hit, also those past the limit
    records: list[dns.RRHeader] = []
    extra: list[dns.RRHeader] = []
    seen_srv: set[tuple[str, int]] = set()
    seen_addr: set[tuple[str, str]] = set()
    for h in hits:
        if len(records) >= limit:
            break
        if h.port < 0:
            continue
        if (h.target.lower(), h.port) not in seen_srv:
            seen_srv.add((h.target.lower(), h.port))
            records.append(rr(q.name, dns.SRV, h.ttl, dns.Record_SRV(0, weight, h.port, _wire_name(h.target), h.ttl)))
        if (h.target.lower(), h.host) not in seen_addr:
            seen_addr.add((h.target.lower(), h.host))
            extra.append(address_rr(h.target, h.host, h.ttl))
    return records, extra


def _ptr(view: View, q: Question) -> list:
    ip = reverse_address(q.lname)
    if ip is None:
        view.records(q)  # a forward name: NODATA if it exists
        return []
    ttl = view.opts.ttl
    return [rr(q.name, dns.PTR, ttl, dns.Record_PTR(_wire_name(target), ttl)) for target in view.reverse_targets(ip)]


def _ns(view: View, q: Question) -> Answer:
    ttl = view.opts.ttl
    recs, extra, seen = [], [], set()
    for name, ip in view.ns_addrs(q.zone):
        extra.append(address_rr(name, ip, ttl))
        if name not in seen:
            seen.add(name)
            recs.append(rr(q.name, dns.NS, ttl, dns.Record_NS(_wire_name(name), ttl)))
    return Answer(tuple(recs), tuple(extra))


def answer(view: View, q: Question, qtype: int, limit: int = max_records(65535)) -> Answer:
    """The stanza's answer for ``q``, a name in one of its zones; ``limit``: records per section worth building."""
    try:
        if qtype in (dns.AXFR, dns.IXFR):
            return Answer(refused=True)
        if qtype in (dns.A, dns.AAAA):
            recs, chase = _addresses(view, q, qtype, view.apex_or_services(q, qtype), limit)
            return Answer(tuple(recs), chase=tuple(chase))
        if qtype == dns.SRV:
            recs, extra = _srv(view, q, limit)
            return Answer(tuple(recs), tuple(extra))
        if qtype == dns.TXT:
            if strip_zone(q.lname, q.lzone) == "dns-version":
                ttl = 28800
                return Answer((rr(q.name, dns.TXT, ttl, dns.Record_TXT(DNS_SCHEMA_VERSION.encode(), ttl=ttl)),))
            # An existing name (even a zonal one with no endpoints) is NODATA.
            if view.records(q) or view.exists_empty(q):
                return Answer()
            raise NoSuchName()
        if qtype == dns.PTR:
            return Answer(tuple(_ptr(view, q)))
        if qtype == dns.SOA and q.apex:
            return Answer((negative_soa(view, q.zone),))
        if qtype == dns.NS and q.apex:
            return _ns(view, q)
        if qtype == dns.CNAME:
            hits = view.apex_or_services(q, qtype)
            recs = [
                rr(q.name, dns.CNAME, h.ttl, dns.Record_CNAME(_wire_name(h.host), h.ttl))
                for h in hits
                if h.kind == dns.CNAME
            ]
            return Answer(tuple(recs))
        # Any other type: a fake A lookup decides NODATA versus NXDOMAIN.
        view.apex_or_services(q, dns.A)
        return Answer()
    except NoSuchName:
        return Answer(name_error=True)
