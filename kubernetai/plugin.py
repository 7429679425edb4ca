"""What a Corefile directive's setup function receives and may add to.

A directive is a plain callable ``setup(directive, ctx) -> IResolver | None``.
Resolvers it returns join the server block's ``ResolverChain`` in plugin
order; everything else (query observers, services, readiness, listen
addresses) goes through ``ctx``.  Third-party packages register such
callables under the ``kubernetai.directives`` entry-point group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar

import attrs
from twisted.application.service import IService

from kubernetai.corefile import CorefileError, Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.request import QueryEvent

__all__ = ["Setup", "ServerContext", "SetupContext", "Readiness"]

T = TypeVar("T")


class Setup(Protocol):
    def __call__(self, directive: Directive, ctx: SetupContext, /) -> object | None: ...


@attrs.define(repr=False)
class Readiness(LazyRepr):
    """Process-wide readiness: every registered check must say yes."""

    checks: dict[str, Callable[[], bool]] = attrs.Factory(dict)

    def add(self, name: str, check: Callable[[], bool]) -> None:
        base, n = name, 1
        while name in self.checks:
            n += 1
            name = f"{base}#{n}"
        self.checks[name] = check

    def not_ready(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check()]

    def ready(self) -> bool:
        return not self.not_ready()


@attrs.define(repr=False)
class ServerContext(LazyRepr):
    """State shared by all server blocks of one Corefile."""

    reactor: Any
    services: list[IService] = attrs.Factory(list)
    readiness: Readiness = attrs.Factory(Readiness)
    pre_stop: list[Callable[[], Any]] = attrs.Factory(list)
    status: dict[str, Callable[[], dict]] = attrs.Factory(dict)
    # Stanzas whose first sync the server waits for (up to their startup_timeout).
    startup: list[Any] = attrs.Factory(list)
    # Every kubernetai stanza (KubernetesCluster), for /status and metrics.
    clusters: list[Any] = attrs.Factory(list)
    # Query counting for blocks with ``prometheus`` (kubernetai.metrics.Metrics), once one asks for it.
    metrics: Any = None
    # Answer cache per listener ("dns://ADDR:PORT"), for /status and metrics; filled as listeners open.
    answer_caches: dict[str, Any] = attrs.Factory(dict)
    started: float = attrs.Factory(time.time)
    # ``reload``: check the Corefile every (interval, jitter) seconds.
    reload_every: tuple[float, float] | None = None
    # On a reload, the running configuration's context: what has not changed is taken from it.
    previous: ServerContext | None = None
    # Plugins' own metric families (callables giving prometheus_client Metrics), read at scrape time.
    metric_sources: list[Callable[[], Any]] = attrs.Factory(list)
    # A ``--workers`` process: stanzas are copies fed by the primary, HTTP pages are the primary's.
    worker: bool = False
    # Run once every block is built; may raise CorefileError (what one block cannot judge alone).
    final_checks: list[Callable[[], None]] = attrs.Factory(list)
    # More top-level /status sections ("workers": the pool's), by name.
    process_status: dict[str, Callable[[], Any]] = attrs.Factory(dict)
    _shared: dict[Hashable, Any] = attrs.Factory(dict)

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        """One object per key for the whole server (e.g. one /health listener)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def shared_value(self, key: Hashable) -> Any:
        """What ``shared`` made for ``key``, or None."""
        return self._shared.get(key)

    def add_service(self, service: IService) -> None:
        self.services.append(service)


@attrs.define(repr=False)
class SetupContext(LazyRepr):
    """One server block being built: its zones and what its directives add."""

    server: ServerContext
    zones: tuple[str, ...]
    port: int
    keys: tuple[str, ...]
    observers: list[Callable[[QueryEvent], None]] = attrs.Factory(list)
    bind: list[str] = attrs.Factory(list)
    recursive: bool = False
    metered: bool = False  # the block has ``prometheus``: its queries are counted
    rotate: bool = False  # ``loadbalance``: address records rotate between answers
    gate: Any = None  # ``acl``: decide(client, qtype, lname) → allow, block, filter or drop
    seen: set[str] = attrs.Factory(set)
    # Resolvers that want the finished block chain as their ``upstream``.
    chain_users: list[Any] = attrs.Factory(list)
    # Callables run with the finished block chain.
    chain_hooks: list[Any] = attrs.Factory(list)

    @property
    def reactor(self) -> Any:
        return self.server.reactor

    def once(self, directive: Directive) -> None:
        """Refuse a second use of a directive that CoreDNS allows once per block."""
        if directive.name in self.seen:
            raise CorefileError(
                directive.file, directive.line, f"{directive.name}: this plugin can only be used once per server block"
            )
        self.seen.add(directive.name)

    def add_observer(self, observer: Callable[[QueryEvent], None]) -> None:
        self.observers.append(observer)
