"""``loop``: detect a forwarding loop at start, as CoreDNS's loop plugin.

Once the server listens, it sends itself ``<random>.<random>.<zone> HINFO``
until something answers.  If that query comes back to it three times, a
forwarder sends it in circles (``forward . /etc/resolv.conf`` on a host whose
resolv.conf names this server): the process logs CoreDNS's message and exits
1, so that a supervisor's restart loop shows it instead of a server that
burns CPU answering itself.  After the first answer the plugin does nothing.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, common, dns

from kubernetai import outcome
from kubernetai.changes import store_derived
from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.request import current_request
from kubernetai.values import arg_count, no_block

log = Logger()

MAX_PROBES = 30  # one a second at most: then it gives up, as CoreDNS
SEEN_LIMIT = 2  # seen more often than this: a loop


def _exit(code: int) -> None:
    sys.stderr.flush()
    os._exit(code)  # as Go's log.Fatal: at once


class LoopResolver(common.ResolverBase):
    """Counts its own probe coming back; passes everything else (and the probe) on."""

    plugin_name = "loop"

    def __init__(self, zone: str, reactor: Any, exit: Callable[[int], None] = _exit) -> None:
        common.ResolverBase.__init__(self)
        self.zone = zone
        self.reactor = reactor
        self.exit = exit
        self.probe = f"{random.getrandbits(63)}.{random.getrandbits(63)}.{zone}".rstrip(".")
        self.seen = 0
        self.done = False
        self.probes = 0
        self.target: tuple[str, int] | None = None

    @store_derived  # a constant: never changes, so the answer cache trusts its change count
    def cache_version(self) -> int:
        return 0  # it never answers: what the resolvers after it say may be kept

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        if not self.done and type == dns.HINFO and name.decode("ascii", "replace").lower().rstrip(".") == self.probe:
            current_request().trace.cacheable = False
            self.seen += 1
            if self.seen > SEEN_LIMIT:
                info = current_request()
                message = (
                    f'Loop ({info.host}:{info.port} -> {self._local()}) detected for zone "{self.zone}", '
                    f'see https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO {self.probe}."'
                )
                log.critical("plugin/loop: {message}", message=message)
                print(f"[FATAL] plugin/loop: {message}", file=sys.stderr)
                self.done = True
                self.exit(1)
        return defer.fail(outcome.NotMine(name))

    def _local(self) -> str:
        return f"{self.target[0]}:{self.target[1]}" if self.target else "?"

    # ------------------------------------------------------------------ the probe
    def listening(self, address: str, port: int) -> None:
        """The server listens: start probing it."""
        if self.target is None:
            self.target = (address or "127.0.0.1", port)
            self.reactor.callLater(0, self._send)

    def _send(self) -> None:
        if self.done or self.target is None:
            return
        if self.probes >= MAX_PROBES:
            self.done = True
            return
        self.probes += 1
        resolver = client.Resolver(servers=[self.target], reactor=self.reactor)
        d = resolver.queryUDP([dns.Query(self.probe, dns.HINFO, dns.IN)], timeout=(2,))
        d.addCallbacks(self._answered, lambda failure: self.reactor.callLater(1, self._send))

    def _answered(self, message: object) -> None:
        self.done = True  # an answer came back: no loop (or it was not seen three times)


def setup(d: Directive, ctx: SetupContext) -> LoopResolver:
    ctx.once(d)
    arg_count(d, 0, 0)
    no_block(d)
    return LoopResolver(ctx.zones[0], ctx.reactor)
