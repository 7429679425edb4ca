"""Parsing directive argument values the way CoreDNS does (Go durations, ints).

Every function raises the directive's own CorefileError, so messages carry
file, line and directive name.
"""

from __future__ import annotations

import ipaddress
import re

from kubernetai.corefile import CorefileError, Directive
from kubernetai.zones import ZoneError, zones_of

__all__ = ["duration", "integer", "arg_count", "ip_port", "no_block"]

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(d: Directive, text: str) -> float:
    """A Go duration (``5s``, ``1m30s``, ``250ms``) in seconds."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise d.error(f"invalid duration {text!r} (use Go syntax such as 5s, 1m30s, 250ms)")
    return total


def integer(d: Directive, text: str, lo: int | None = None, hi: int | None = None, what: str = "value") -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise d.error(f"{what} must be an integer, got {text!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo}-{hi}" if hi is not None else f"at least {lo}" if lo is not None else f"at most {hi}"
        raise d.error(f"{what} {value} out of range ({bounds})")
    return value


def arg_count(d: Directive, lo: int, hi: int | None = None) -> tuple[str, ...]:
    """The directive's args, or a 'wrong argument count' error."""
    n = len(d.args)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if hi == lo else (f"at least {lo}" if hi is None else f"{lo}-{hi}")
        raise d.error(f"wrong argument count or unexpected line ending after '{d.name}' (got {n}, want {want})")
    return d.args


def no_block(d: Directive) -> None:
    if d.block is not None:
        raise d.error("takes no block")


def ip_port(d: Directive, text: str, default_port: int) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:53``, ``[::1]:53``, ``::1``, ``dns://…`` → (host, port)."""
    if text.startswith("dns://"):
        text = text[len("dns://") :]
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise d.error(f"invalid address {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise d.error(f"invalid address {text!r}")
            port = integer(d, rest[1:], 1, 65535, "port")
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = integer(d, p, 1, 65535, "port")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise d.error(f"not an IP address: {host!r}") from None
    return host, port


def zone_args(d: Directive, args: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Zone arguments (names or CIDRs) → normalised zones, or the directive's error."""
    zones: list[str] = []
    try:
        for arg in args:
            zones.extend(zones_of(arg))
    except ZoneError as e:
        raise d.error(str(e)) from None
    return tuple(zones)


def check_known(d: Directive, known: set[str]) -> None:
    """Refuse sub-directives this plugin does not have, listing those it does."""
    for child in d.children:
        if child.name not in known:
            raise CorefileError(
                child.file,
                child.line,
                f"{d.name}: unknown property '{child.name}' (known: {', '.join(sorted(known))})",
            )
