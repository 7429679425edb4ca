"""The opening every zone-serving resolver shares: decode the name once, match a zone, or pass.

``Question`` holds the query name both as asked (answers echo its spelling)
and lower-cased (for every comparison), computed once per lookup.
``ZoneResolver`` is a ``ResolverBase`` that declines names outside its zones
with ``NotMine`` (so Twisted's chain goes on) and hands the rest, as a
``Question``, to ``lookup_in_zone``.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.names import common

from kubernetai import outcome
from kubernetai.zones import match_zone

__all__ = ["Question", "ZoneResolver", "decode"]


def decode(name: bytes) -> str:
    """A query name as Twisted hands it (bytes, no final dot) → fully qualified text."""
    return name.decode("ascii", "replace") + "." if name else "."


class Question(NamedTuple):
    """A name under a zone: ``name``/``zone`` as asked, ``lname``/``lzone`` lower-cased.

    A tuple: one is made for every answer not cached (an attrs frozen class cost twice as much).
    """

    name: str
    zone: str
    lname: str
    lzone: str

    @classmethod
    def under(cls, name: str, zones: Any) -> Question | None:
        """``name`` (as asked, fully qualified) in the longest of ``zones`` (lower-cased), else None."""
        lname = name.lower()
        lzone = match_zone(lname, zones)
        if lzone is None:
            return None
        zone = "." if lzone == "." else name[len(name) - len(lzone) :]
        return cls(name, zone, lname, lzone)

    def sibling(self, name: str) -> Question:
        """Another name in the same zone (a CNAME target we answer ourselves)."""
        return Question(name, self.zone, name.lower(), self.lzone)

    @property
    def apex(self) -> bool:
        return self.lname == self.lzone


class ZoneResolver(common.ResolverBase, abc.ABC):
    """An IResolver for a set of zones; names outside them fall through (``NotMine``)."""

    zones: tuple[str, ...] = ()

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        q = Question.under(decode(name), self.zones)
        if q is None:
            return defer.fail(outcome.NotMine(name))
        return self.lookup_in_zone(q, name, cls, type, timeout)

    @abc.abstractmethod
    def lookup_in_zone(self, q: Question, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        """Answer ``q``, a name in one of our zones (``name``: the bytes Twisted gave)."""
