"""Small constructors for the resource records every zone needs (SOA)."""

from __future__ import annotations

import functools

from twisted.names import dns

__all__ = ["owner_zone", "soa"]


def owner_zone(qname: str, zone: str) -> str:
    """``zone`` spelled as the query spelled it (case is echoed back)."""
    if zone == ".":
        return "."
    return qname[len(qname) - len(zone) :] if len(qname) >= len(zone) else zone


@functools.lru_cache(maxsize=1024)  # a negative answer's SOA, made once per zone spelling and serial
def soa(
    zone: str,
    ttl: int,
    serial: int,
    auth: bool = True,
    mname: str = "ns.dns",
    rname: str = "hostmaster",
    cap: int = 300,
) -> dns.RRHeader:
    """CoreDNS's SOA: ``zone min(ttl,cap) SOA MNAME.zone RNAME.zone serial 7200 1800 86400 ttl``.

    The kubernetes zone's: ``ns.dns`` and ``hostmaster``, TTL capped at 300;
    k8s_external's: ``ns1.APEX`` and ``hostmaster.APEX``, its own TTL.  The record is shared:
    records are never changed once made."""
    base = "" if zone == "." else zone.rstrip(".")
    suffix = ("." + base) if base else ""
    record = dns.Record_SOA(
        mname=mname + suffix,
        rname=rname + suffix,
        serial=serial,
        refresh=7200,
        retry=1800,
        expire=86400,
        minimum=ttl,
        ttl=min(ttl, cap),
    )
    return dns.RRHeader(base, dns.SOA, dns.IN, min(ttl, cap), record, auth=auth)
