"""How a resolver in the chain says anything other than "here are records".

Twisted's ``ResolverChain`` goes on to the next resolver on ``DomainError``
and stops on anything else.  These subclasses keep that contract and carry
what the server needs for a correct negative answer: the zone's SOA for the
authority section and whether we are authoritative.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.names import dns
from twisted.names.error import AuthoritativeDomainError, DomainError

__all__ = [
    "NXDomain",
    "FallthroughNXDomain",
    "NotMine",
    "ServerFailure",
    "Reply",
]


class NXDomain(AuthoritativeDomainError):
    """The name does not exist, and this is final: the chain stops."""

    def __init__(self, name: str | bytes = "", authority: Sequence[dns.RRHeader] = ()) -> None:
        super().__init__(name)
        self.authority = list(authority)


class FallthroughNXDomain(DomainError):
    """The name does not exist here, but the next resolver may know it.

    Should nothing later answer, the server still answers NXDOMAIN with
    this SOA rather than SERVFAIL (kubernetai issue #39's "no next plugin").
    """

    def __init__(self, name: str | bytes = "", authority: Sequence[dns.RRHeader] = ()) -> None:
        super().__init__(name)
        self.authority = list(authority)


class NotMine(DomainError):
    """The name is outside every zone this resolver serves; pass it on."""


class ServerFailure(Exception):
    """SERVFAIL, with the reason for the ``errors`` plugin's log."""


class Reply(Exception):
    """An explicit response code with its sections (e.g. relayed from upstream)."""

    def __init__(
        self,
        rcode: int,
        answers: Sequence[dns.RRHeader] = (),
        authority: Sequence[dns.RRHeader] = (),
        additional: Sequence[dns.RRHeader] = (),
        authoritative: bool = False,
        reason: str = "",
    ) -> None:
        super().__init__(reason or rcode)
        self.reason = reason
        self.rcode = rcode
        self.answers = list(answers)
        self.authority = list(authority)
        self.additional = list(additional)
        self.authoritative = authoritative
