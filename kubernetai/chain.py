"""The resolver chain of a server block: Twisted's ``ResolverChain``, handing the request along.

Semantics are Twisted's: resolvers are asked in order, and the next one is
asked only when the previous failed with ``DomainError`` (fall through),
``TimeoutError`` or ``NotImplementedError``; anything else ends the chain.
Two additions:

- every consulted resolver is noted on the request's ``Trace``, so the
  server knows whether the answer may be cached;
- each resolver is called with the request in ``request_info``, also when
  the one before it declined asynchronously (a Deferred that failed later,
  outside the server's context), so whoami, transfer and autopath always
  see who asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.names import dns, resolve
from twisted.names.error import DomainError
from twisted.python.failure import Failure

from kubernetai import outcome
from kubernetai.request import RequestInfo, current_request, request_info

__all__ = ["RequestChain", "chain"]


class RequestChain(resolve.ResolverChain):
    """Twisted's ResolverChain, noting which resolvers it consulted and handing each the request."""

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        if not self.resolvers:
            return defer.fail(DomainError())
        info = current_request()
        q = dns.Query(name, type, cls)
        d = _consult(self.resolvers[0], q, timeout, info)
        for r in self.resolvers[1:]:
            d = d.addErrback(_next, r, q, timeout, info)
        return d

    def lookupAllRecords(self, name: bytes, timeout: Any = None) -> defer.Deferred:
        # Twisted's ResolverChain sends ANY straight to each resolver's lookupAllRecords,
        # past _lookup (its own comment wonders why): ANY goes the same way as any type.
        return self._lookup(name, dns.IN, dns.ALL_RECORDS, timeout)


def _consult(resolver: Any, q: dns.Query, timeout: Any, info: RequestInfo) -> defer.Deferred:
    info.trace.consulted(resolver)
    token = request_info.set(info)
    try:
        d = resolver.query(q, timeout)
    finally:
        request_info.reset(token)
    return d.addBoth(_answered, resolver, info)


def _answered(result: object, resolver: Any, info: RequestInfo) -> object:
    """Note who answered: any result, or a failure other than "not my name"."""
    if not (isinstance(result, Failure) and result.check(outcome.NotMine)):
        info.trace.answered_by = resolver
    return result


def _next(failure: Failure, resolver: Any, q: dns.Query, timeout: Any, info: RequestInfo) -> defer.Deferred:
    # As twisted.names.resolve.FailureHandler: go on only after these.
    failure.trap(DomainError, defer.TimeoutError, NotImplementedError)
    d = _consult(resolver, q, timeout, info)
    if failure.check(outcome.FallthroughNXDomain):
        # A later resolver that does not serve the name at all must not hide
        # that an earlier one said it does not exist.
        d.addErrback(lambda later: failure if later.check(outcome.NotMine) else later)
    return d


def chain(resolvers: Sequence[Any]) -> RequestChain:
    """A block's resolvers in plugin order."""
    return RequestChain(list(resolvers))
