"""Rotating address records between answers (the ``loadbalance`` plugin), also in cached answers.

A fresh answer is rotated as records (``rotate_records``); a cached one as
bytes (``address_run`` once when it is cached, ``rotate_bytes`` per hit), so
that load balancing neither makes answers uncacheable nor costs more than a
slice per hit.  Address records of a stanza's answer are all the same size
(the owner is a pointer to the question), which is what makes the byte
rotation possible; an answer whose address records differ in size is sent
in the order it was cached.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from twisted.names import dns

from kubernetai.answercache import HEADER_SIZE, _read_name

__all__ = ["ROTATED", "rotate_records", "address_run", "rotate_bytes"]

ROTATED = frozenset({dns.A, dns.AAAA, dns.MX})
_FIXED = struct.Struct("!HHIH")


def rotate_records(records: Sequence[dns.RRHeader], k: int) -> list[dns.RRHeader]:
    """The A, AAAA and MX records of ``records`` rotated by ``k`` among their own places; others stay put."""
    places = [i for i, rr in enumerate(records) if rr.type in ROTATED]
    out = list(records)
    if len(places) < 2:
        return out
    k %= len(places)
    moved = [records[i] for i in places[k:] + places[:k]]
    for i, rr in zip(places, moved, strict=True):
        out[i] = rr
    return out


def address_run(msg: bytes) -> tuple[int, int, int] | None:
    """(start, record size, count) of the longest run of equal-size A or AAAA records in the answer section."""
    if len(msg) < HEADER_SIZE:
        return None
    qd, an = struct.unpack_from("!HH", msg, 4)
    at = HEADER_SIZE
    for _ in range(qd):
        name = _read_name(msg, at)
        if name is None:
            return None
        at = name[1] + 4
    best: tuple[int, int, int] | None = None
    run_start, run_size, run_type, run_n = 0, 0, 0, 0
    for _ in range(an):
        name = _read_name(msg, at)
        if name is None or name[1] + _FIXED.size > len(msg):
            return None
        rtype, _cls, _ttl, rdlength = _FIXED.unpack_from(msg, name[1])
        end = name[1] + _FIXED.size + rdlength
        size = end - at
        if rtype in (dns.A, dns.AAAA) and rtype == run_type and size == run_size:
            run_n += 1
        elif rtype in (dns.A, dns.AAAA):
            run_start, run_size, run_type, run_n = at, size, rtype, 1
        else:
            run_type, run_n = 0, 0
        if run_n >= 2 and (best is None or run_n > best[2]):
            best = (run_start, run_size, run_n)
        at = end
    return best


def rotate_bytes(msg: bytes, run: tuple[int, int, int], k: int) -> bytes:
    """``msg`` with the records of ``run`` rotated by ``k``."""
    start, size, n = run
    k %= n
    if not k:
        return msg
    end = start + size * n
    cut = start + size * k
    return msg[:start] + msg[cut:end] + msg[start:cut] + msg[end:]
