"""``autopath [ZONES...] @kubernetai|RESOLV-CONF``: server-side search-path completion.

As CoreDNS's autopath: when a query is the first name of the client's
search path, the rest of the chain is asked for each search-path name in
turn; the first answer that is not NXDOMAIN (or a server error) is returned,
with a CNAME from the asked name to the found one.  If all fail, the answer
to the original name is returned as it was.

``@kubernetai`` builds the client's search path the way kubelet writes it
(``<ns>.svc.<zone> svc.<zone> <zone>``) for every stanza's zones, later
stanzas first, then the host's resolv.conf search list.  The client's
namespace comes from its pod (by source IP, ``pods verified``) in
*whichever* stanza knows that IP — kubernetai's own autopath gave up unless
every stanza knew the client.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

from twisted.internet import defer
from twisted.names import dns
from twisted.python.failure import Failure

from kubernetai import outcome
from kubernetai.chain import chain as request_chain
from kubernetai.changes import store_derived
from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.question import Question, ZoneResolver
from kubernetai.request import current_request, request_info
from kubernetai.values import arg_count, no_block, zone_args
from kubernetai.zones import is_subdomain, normalize

RESOLV_CONF = "/etc/resolv.conf"


@runtime_checkable
class AutoPather(Protocol):
    """What ``@kubernetai`` asks of a resolver in the chain (CoreDNS's AutoPath interface)."""

    def serves(self, lname: str) -> bool:
        """Whether a (lower-cased) name is in one of its zones."""

    def pod_namespace(self, ip: str) -> str | None:
        """The namespace of the pod at ``ip``, if it knows one (``pods verified``)."""

    def search_domains(self, namespace: str) -> list[str]:
        """The search path kubelet writes for a pod in ``namespace``, for its zones."""


def search_list(path: str) -> list[str]:
    """The ``search`` domains of a resolv.conf file (missing file: none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out: list[str] = []
    for line in lines:
        parts = line.split("#", 1)[0].split()
        if parts and parts[0] in ("search", "domain"):
            out = [normalize(p) for p in parts[1:]]
    return out


class AutopathResolver(ZoneResolver):
    plugin_name = "autopath"  # the ``plugin`` label of coredns_dns_responses_total

    def __init__(self, zones: tuple[str, ...], static: list[str] | None, host_search: list[str]) -> None:
        super().__init__()
        self.zones = zones
        self.static = static  # a fixed search path (RESOLV-CONF form), else @kubernetai
        self.host_search = host_search
        self.upstream: Any = None  # the block chain
        self.next: Any = None  # the resolvers after us
        self._stanzas: list[AutoPather] | None = None

    def stanzas(self) -> list[AutoPather]:
        """The block's kubernetai stanzas (found once: the chain of a block never changes)."""
        if self._stanzas is None:
            chain = getattr(self.upstream, "resolvers", None)
            if chain is None:
                return []
            self._stanzas = [r for r in chain if isinstance(r, AutoPather)]  # a Protocol check: slow, so once
        return self._stanzas

    @store_derived  # a constant: never changes, so the answer cache trusts its change count
    def cache_version(self) -> int:
        """Its answers may be kept: they depend on the resolvers it asks (noted on the request's
        trace as it asks them) and on the client's namespace (``Trace.vary``)."""
        return 0

    @store_derived  # it reads the stanzas' pods: the answer cache may keep it while no store changes
    def client_namespace(self, client: str) -> str | None:
        """The namespace of the pod at ``client`` (pods verified), which picks the search path."""
        for stanza in self.stanzas():  # on every cached hit of an autopath block: no generators
            namespace = stanza.pod_namespace(client)
            if namespace:
                return namespace
        return None

    def search_path(self, lname: str, client: str) -> list[str]:
        if self.static is not None:
            return self.static + [""]
        if not any(s.serves(lname) for s in self.stanzas()):
            return []
        namespace = self.client_namespace(client)
        current_request().trace.vary = (self.client_namespace, namespace)  # the answer depends on it
        if not namespace:
            return []
        path: list[str] = []
        for s in self.stanzas():
            path = s.search_domains(namespace) + path  # later stanzas first, as kubernetai merges them
        return path + self.host_search + [""]

    def lookup_in_zone(self, q: Question, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        qname, lname = q.name, q.lname
        if self.next is None:
            return defer.fail(outcome.NotMine(name))
        info = current_request()
        path = self.search_path(lname, info.host)
        if not path or not (lname == path[0] or is_subdomain(lname, path[0])):
            return defer.fail(outcome.NotMine(name))
        base = qname[: len(qname) - len(path[0]) - 1] if lname != path[0] else ""
        return self._walk(name, qname, base, path, cls, type, timeout, info)

    @defer.inlineCallbacks
    def _walk(
        self, name: bytes, qname: str, base: str, path: list[str], cls: int, type: int, timeout: object, info: Any
    ) -> Any:
        first: Any = None
        for i, suffix in enumerate(path):
            new = f"{base}.{suffix}" if suffix not in ("", ".") else base
            token = request_info.set(info)  # also after an asynchronous answer: the same request, the same trace
            try:
                d = self.next.query(dns.Query(new.rstrip("."), type, cls), timeout)
            finally:
                request_info.reset(token)
            try:
                result = yield d
            except Exception:
                result = Failure()
            if i == 0:
                first = result
            if isinstance(result, Failure):
                continue  # NXDOMAIN or a server error: try the next name
            answers, authority, additional = result
            return (_cnamer(answers, qname), authority, additional)
        if isinstance(first, Failure):
            first.raiseException()
        return first


def _cnamer(answers: list, original: str) -> list:
    """Prepend ``original CNAME <found name>`` when the answer is for another name."""
    want = original.rstrip(".").lower().encode()
    for rr in answers:
        if rr.name.name.lower() == want:
            continue
        cname = dns.RRHeader(
            original.rstrip("."), dns.CNAME, dns.IN, rr.ttl, dns.Record_CNAME(rr.name.name, rr.ttl), auth=rr.auth
        )
        return [cname] + list(answers)
    return list(answers)


def setup(d: Directive, ctx: SetupContext) -> AutopathResolver:
    ctx.once(d)
    args = arg_count(d, 1)
    no_block(d)
    source = args[-1]
    zones = zone_args(d, args[:-1]) or ctx.zones
    if source.startswith("@"):
        if source != "@kubernetai":
            raise d.error(f"unknown plugin {source!r} for autopath (only @kubernetai)")
        resolver = AutopathResolver(zones, None, search_list(RESOLV_CONF))
    else:
        path = source if os.path.isabs(source) else os.path.join(os.path.dirname(os.path.abspath(d.file)), source)
        if not os.path.exists(path):
            raise d.error(f"cannot read {source}: no such file")
        resolver = AutopathResolver(zones, search_list(path), [])

    def attach(chain: Any) -> None:
        resolvers = list(chain.resolvers)
        resolver.next = request_chain(resolvers[resolvers.index(resolver) + 1 :])

    ctx.chain_hooks.append(attach)
    ctx.chain_users.append(resolver)
    return resolver
