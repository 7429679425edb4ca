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
from kubernetai.question import Question, decode
from kubernetai.request import RequestInfo, current_request, request_info

__all__ = ["RequestChain", "chain", "class_says"]


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

    def answer_now(self, query: dns.Query, info: RequestInfo) -> object:
        """The chain's result for ``query``: sections, or an outcome exception, or else a Deferred of either.

        What ``query`` gives, without Deferreds for as long as the resolvers
        asked can answer synchronously: the server's path for an answer not
        cached.  A leading run of kubernetai stanzas (``direct_ok``) is asked
        through ``decide``, with the chain's rules (who is consulted, who
        answered, which failures go on, a fallthrough NXDOMAIN kept over a
        later "not mine"); the first other resolver, or a stanza's CNAME
        chase, continues as the Deferred chain from there.
        """
        cls = type(self)
        if cls._lookup is not RequestChain._lookup or cls.query is not resolve.ResolverChain.query:
            return defer.maybeDeferred(self.query, query)  # a subclass answers its own way
        name, qtype = query.name.name, query.type
        if not self.resolvers:
            return DomainError()
        text = decode(name)
        q = query if query.cls == dns.IN else dns.Query(name, qtype, dns.IN)  # resolvers are asked class IN
        failure: Exception | None = None
        for i, r in enumerate(self.resolvers):
            if not class_says(type(r), "direct_ok"):
                d = _consult(r, q, None, info) if failure is None else _next(Failure(failure), r, q, None, info)
                return self._rest(d, i, q, info)
            info.trace.consulted(r)
            asked = Question.under(text, r.zones)
            got = outcome.NotMine(name) if asked is None else r.decide(asked, name, qtype, info)
            if type(got) is not tuple and isinstance(got, defer.Deferred):  # a CNAME chase: asynchronous
                d = got.addBoth(_answered, r, info)
                if isinstance(failure, outcome.FallthroughNXDomain):
                    d.addErrback(_keep_fallthrough, failure)
                return self._rest(d, i, q, info)
            _answered(got, r, info)
            if isinstance(got, outcome.NotMine) and isinstance(failure, outcome.FallthroughNXDomain):
                got = failure
            if not isinstance(got, _GOES_ON):
                return got  # sections, or a failure that ends the chain
            failure = got
        return failure

    def _rest(self, d: defer.Deferred, i: int, q: dns.Query, info: RequestInfo) -> defer.Deferred:
        """The resolvers after the i-th, asked the Deferred way."""
        for r in self.resolvers[i + 1 :]:
            d = d.addErrback(_next, r, q, None, info)
        return d

    def lookupAllRecords(self, name: bytes, timeout: Any = None) -> defer.Deferred:
        # Twisted's ResolverChain sends ANY straight to each resolver's lookupAllRecords,
        # past _lookup (its own comment wonders why): ANY goes the same way as any type.
        return self._lookup(name, dns.IN, dns.ALL_RECORDS, timeout)


# As twisted.names.resolve.FailureHandler: the chain goes on to the next resolver only after these.
_GOES_ON = (DomainError, defer.TimeoutError, NotImplementedError)

_CLASS_SAYS: dict[tuple[type, str], bool] = {}


def class_says(cls: type, question: str) -> bool:
    """What a resolver class's classmethod ``question`` says (False if it has none), asked once per class.

    ``direct_ok``: the chain may call its ``decide``; ``short_ok``: the
    server's short path may call its ``short_answer`` (shortpath.py).
    """
    found = _CLASS_SAYS.get((cls, question))
    if found is None:
        ask = getattr(cls, question, None)
        found = _CLASS_SAYS[(cls, question)] = ask is not None and bool(ask())
    return found


def _consult(resolver: Any, q: dns.Query, timeout: Any, info: RequestInfo) -> defer.Deferred:
    info.trace.consulted(resolver)
    token = request_info.set(info)
    try:
        d = resolver.query(q, timeout)
    finally:
        request_info.reset(token)
    return d.addBoth(_answered, resolver, info)


def _answered(result: object, resolver: Any, info: RequestInfo) -> object:
    """Note who answered: any result, or a failure (a Failure or the exception) other than "not my name"."""
    exc = result.value if isinstance(result, Failure) else result
    if not isinstance(exc, outcome.NotMine):
        info.trace.answered_by = resolver
    return result


def _next(failure: Failure, resolver: Any, q: dns.Query, timeout: Any, info: RequestInfo) -> defer.Deferred:
    failure.trap(*_GOES_ON)
    d = _consult(resolver, q, timeout, info)
    if failure.check(outcome.FallthroughNXDomain):
        # A later resolver that does not serve the name at all must not hide
        # that an earlier one said it does not exist.
        d.addErrback(_keep_fallthrough, failure)
    return d


def _keep_fallthrough(later: Failure, earlier: Failure | Exception) -> Failure:
    return (earlier if isinstance(earlier, Failure) else Failure(earlier)) if later.check(outcome.NotMine) else later


def chain(resolvers: Sequence[Any]) -> RequestChain:
    """A block's resolvers in plugin order."""
    return RequestChain(list(resolvers))
