"""Small constructors for the resource records every zone needs (SOA)."""

from __future__ import annotations

from twisted.names import dns

__all__ = ["owner_zone", "soa"]


def owner_zone(qname: str, zone: str) -> str:
    """``zone`` spelled as the query spelled it (case is echoed back)."""
    if zone == ".":
        return "."
    return qname[len(qname) - len(zone) :] if len(qname) >= len(zone) else zone


def soa(zone: str, ttl: int, serial: int, auth: bool = True) -> dns.RRHeader:
    """CoreDNS's SOA: ``zone min(ttl,300) SOA ns.dns.zone hostmaster.zone serial 7200 1800 86400 ttl``."""
    base = "" if zone == "." else zone.rstrip(".")
    suffix = ("." + base) if base else ""
    record = dns.Record_SOA(
        mname="ns.dns" + suffix,
        rname="hostmaster" + suffix,
        serial=serial,
        refresh=7200,
        retry=1800,
        expire=86400,
        minimum=ttl,
        ttl=min(ttl, 300),
    )
    return dns.RRHeader(base, dns.SOA, dns.IN, min(ttl, 300), record, auth=auth)
