"""Zone names: normalisation, CIDR → reverse zones, server keys, matching.

Pure functions, shared by the Corefile loader (server keys, stanza zones)
and the resolvers (which zone of mine does this query fall in?).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import attrs

from kubernetai.lazy_repr import LazyRepr

__all__ = [
    "ZoneError",
    "ServerKey",
    "normalize",
    "cidr_reverse_zones",
    "zones_of",
    "parse_server_key",
    "match_zone",
    "is_subdomain",
]

SCHEME_PORTS = {"dns": 53, "tls": 853, "quic": 853, "grpc": 443, "https": 443, "https3": 443}


class ZoneError(ValueError):
    """A zone or server key that cannot be used; the message says why."""


def normalize(name: str) -> str:
    """Lower-case and fully qualify a domain name (``.`` stays the root)."""
    name = name.strip().lower()
    if name in ("", "."):
        return "."
    return name if name.endswith(".") else name + "."


def _valid_domain(name: str) -> bool:
    if name == ".":
        return True
    if len(name) > 255 or ".." in name or name.startswith("."):
        return False
    labels = name.rstrip(".").split(".")
    return all(0 < len(label) <= 63 for label in labels)


def cidr_reverse_zones(text: str) -> list[str] | None:
    """Reverse zones for a CIDR, split to the next octet/nibble boundary.

    ``10.0.0.0/15`` → ``0.10.in-addr.arpa.`` and ``1.10.in-addr.arpa.``;
    returns None when ``text`` is not a CIDR (so it is a plain zone name).
    """
    if "/" not in text:
        return None
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if text.startswith(":") or (text.startswith("0") and ":" in text):
        raise ZoneError(f"invalid CIDR {text}")
    step = 8 if net.version == 4 else 4
    prefix = -(-net.prefixlen // step) * step  # round up to the boundary
    zones = []
    for sub in net.subnets(new_prefix=prefix) if prefix != net.prefixlen else [net]:
        zones.append(_reverse_zone(sub))
    return zones


def _reverse_zone(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if net.version == 4:
        octets = str(net.network_address).split(".")[: net.prefixlen // 8]
        return ".".join(reversed(octets)) + (".in-addr.arpa." if octets else "in-addr.arpa.")
    nibbles = net.network_address.exploded.replace(":", "")[: net.prefixlen // 4]
    return ".".join(reversed(nibbles)) + (".ip6.arpa." if nibbles else "ip6.arpa.")


def zones_of(text: str) -> list[str]:
    """One zone argument → its normalised zone(s); CIDRs expand."""
    reverse = cidr_reverse_zones(text)
    if reverse is not None:
        return reverse
    zone = normalize(text)
    if not _valid_domain(zone):
        raise ZoneError(f"zone is not a valid domain name: {text}")
    return [zone]


@attrs.frozen(repr=False)
class ServerKey(LazyRepr):
    """A parsed server-block key: transport, zones, port."""

    transport: str
    zones: tuple[str, ...]
    port: int


def parse_server_key(key: str, default_port: int) -> ServerKey:
    """Parse ``[SCHEME://]ZONE[:PORT]``; the port defaults per scheme."""
    transport = "dns"
    rest = key
    if "://" in key:
        transport, rest = key.split("://", 1)
        transport = transport.lower()
        if transport not in SCHEME_PORTS:
            raise ZoneError(f"unknown transport {transport!r} in server key {key!r}")
        if transport != "dns":
            raise ZoneError(f"transport {transport}:// is not supported by kubernetai (only dns://): {key!r}")
    port = default_port if transport == "dns" else SCHEME_PORTS[transport]
    colon = rest.rfind(":")
    if colon == len(rest) - 1 and colon >= 0:
        raise ZoneError(f"expecting a port after the last colon: {key!r}")
    if colon != -1 and rest[colon + 1 :].isdigit():
        port = int(rest[colon + 1 :])
        rest = rest[:colon]
        if not 0 <= port < 65536:  # 0: any free port (tests, embedding)
            raise ZoneError(f"port {port} out of range 0-65535 in {key!r}")
    if len(rest) > 255:
        raise ZoneError(f"specified zone is too long: {len(rest)} > 255")
    return ServerKey(transport, tuple(zones_of(rest)), port)


def label_count(zone: str) -> int:
    """Labels of a fully qualified name (one per final dot; the root has none)."""
    return zone.count(".") if zone != "." else 0


def is_subdomain(name: str, zone: str) -> bool:
    """Whether ``name`` (normalised) is ``zone`` or below it."""
    return zone == "." or name == zone or name.endswith("." + zone)


def match_zone(name: str, zones: Iterable[str]) -> str | None:
    """The longest of ``zones`` that ``name`` falls in, else None."""
    best: str | None = None
    for zone in zones:
        if is_subdomain(name, zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def dedupe(zones: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(zones))
