"""From a Corefile to a running service: server blocks → resolver chains → listeners.

``load()`` does everything that can fail on bad configuration (parsing,
keys, duplicate zones, every directive's options) without touching the
network, so ``--check`` and start-up refuse a bad Corefile alike.
``KubernetaiService`` then binds the UDP+TCP listeners.
"""

from __future__ import annotations

import gc
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import attrs
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from kubernetai import startup_gc, version_line
from kubernetai.chain import chain
from kubernetai.corefile import CorefileError, Directive, ServerBlock, parse_text, read_corefile
from kubernetai.directives import order_of, registry
from kubernetai.lazy_repr import LazyRepr
from kubernetai.listen import SharedSockets, adopt_udp_tcp, listen_reuseport, listen_udp_tcp
from kubernetai.plugin import ServerContext, Setup, SetupContext
from kubernetai.server import Block, KubeDNSServerFactory
from kubernetai.zones import ZoneError, dedupe, parse_server_key

__all__ = ["BlockPlan", "Plan", "load", "load_text", "KubernetaiService"]

log = Logger()


@attrs.define(repr=False)
class BlockPlan(LazyRepr):
    """One server block on one port, built: what ``--check`` prints."""

    keys: tuple[str, ...]
    zones: tuple[str, ...]
    port: int
    bind: tuple[str, ...]
    plugins: tuple[str, ...]
    block: Block
    file: str
    line: int


@attrs.define(repr=False)
class Plan(LazyRepr):
    blocks: list[BlockPlan]
    server: ServerContext
    # The Corefile text this plan was built from (``--workers`` build from it, not from the file,
    # which may have changed since).
    text: str = ""

    def listeners(self) -> dict[tuple[str, int], list[Block]]:
        """(address, port) → the blocks listening there ('' = all addresses)."""
        out: dict[tuple[str, int], list[Block]] = {}
        for bp in self.blocks:
            for addr in bp.bind or ("",):
                out.setdefault((addr, bp.port), []).append(bp.block)
        return out

    def describe(self) -> str:
        lines = []
        for bp in self.blocks:
            lines.append(f"server block {', '.join(bp.keys)} ({bp.file}:{bp.line})")
            lines.append(f"  zones:   {' '.join(bp.zones)}")
            lines.append(f"  port:    {bp.port} udp+tcp on {', '.join(bp.bind) if bp.bind else 'all addresses'}")
            lines.append(f"  plugins: {' -> '.join(bp.plugins)}")
        return "\n".join(lines)


def _ports(block: ServerBlock, default_port: int) -> dict[int, list[str]]:
    """The block's zones grouped by port, as its keys give them."""
    by_port: dict[int, list[str]] = {}
    for key in block.keys:
        try:
            parsed = parse_server_key(key, default_port)
        except ZoneError as e:
            raise CorefileError(block.file, block.line, str(e)) from None
        by_port.setdefault(parsed.port, []).extend(parsed.zones)
    if not by_port:
        raise CorefileError(block.file, block.line, "server block has no zone")
    return by_port


def _build_block(
    sb: ServerBlock,
    zones: tuple[str, ...],
    port: int,
    server: ServerContext,
    directives: Mapping[str, Setup],
) -> BlockPlan:
    ctx = SetupContext(server=server, zones=zones, port=port, keys=sb.keys)
    ordered: list[Directive] = sorted(sb.directives, key=lambda d: order_of(d.name, directives))
    resolvers: list[Any] = []
    for d in ordered:
        made = directives[d.name](d, ctx)
        if made is not None:
            resolvers.append(made)
    outer = resolvers
    for i, r in enumerate(resolvers):
        if getattr(r, "wraps_rest", False):  # cache: the resolvers after it are asked through it
            r.rest = chain(resolvers[i + 1 :])
            outer = resolvers[: i + 1]
            break
    block = Block(
        zones,
        chain(outer),
        ctx.observers,
        ctx.recursive,
        label=", ".join(sb.keys),
        classes=Block.classes_of(resolvers),
        metered=ctx.metered,
        rotate=ctx.rotate,
        gate=ctx.gate,
        plugins=tuple(dict.fromkeys(d.name for d in ordered)),
    )
    for user in ctx.chain_users:
        user.upstream = block.resolver
    for hook in ctx.chain_hooks:
        hook(block.resolver)
    return BlockPlan(sb.keys, zones, port, tuple(ctx.bind), tuple(d.name for d in ordered), block, sb.file, sb.line)


def build(
    blocks: Sequence[ServerBlock],
    default_port: int,
    reactor: Any,
    directives: Mapping[str, Setup] | None = None,
    previous: Plan | None = None,
    worker: bool = False,
) -> Plan:
    """Build every block; ``previous``, the running plan on a reload, lends what has not changed.

    ``worker``: for a ``--workers`` process, whose stanzas are copies fed by the primary."""
    directives = registry() if directives is None else directives
    server = ServerContext(reactor, previous=previous.server if previous is not None else None, worker=worker)
    plans: list[BlockPlan] = []
    seen: dict[tuple[str, int], ServerBlock] = {}
    for sb in blocks:
        for port, zones in _ports(sb, default_port).items():
            for zone in zones:
                first = seen.setdefault((zone, port), sb)
                if first is not sb:
                    raise CorefileError(
                        sb.file,
                        sb.line,
                        f"zone {zone} on port {port} is defined more than once (first at {first.file}:{first.line})",
                    )
            plans.append(_build_block(sb, dedupe(zones), port, server, directives))
    if not plans:
        raise CorefileError("Corefile", 1, "no server blocks")
    for check in server.final_checks:
        check()
    return Plan(plans, server)


def load(
    path: str,
    default_port: int,
    reactor: Any,
    environ: Mapping[str, str] | None = None,
    previous: Plan | None = None,
    worker: bool = False,
) -> Plan:
    """Parse and build a Corefile file; raises CorefileError with file:line."""
    return load_text(read_corefile(path), default_port, reactor, path, environ, previous, worker)


def load_text(
    text: str,
    default_port: int,
    reactor: Any,
    file: str = "Corefile",
    environ: Mapping[str, str] | None = None,
    previous: Plan | None = None,
    worker: bool = False,
) -> Plan:
    directives = registry()
    blocks = parse_text(text, file, directives.__contains__, environ, directives)
    plan = build(blocks, default_port, reactor, directives, previous, worker)
    plan.text = text
    return plan


def _resolvers_in(resolver: Any) -> list[Any]:
    """Every resolver of a block's chain, those asked through ``cache`` included."""
    out = []
    for r in getattr(resolver, "resolvers", ()):
        out.append(r)
        if getattr(r, "rest", None) is not None:
            out.extend(_resolvers_in(r.rest))
    return out


def _server_label(addr: str, port: int) -> str:
    """CoreDNS's ``server`` label: ``dns://ADDRESS:PORT``."""
    return f"dns://[{addr}]:{port}" if ":" in addr else f"dns://{addr}:{port}"


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False


class KubernetaiService(MultiService):
    """Every listener and plugin service of one Corefile.

    Sockets are bound in ``privilegedStartService`` so that twistd binds
    port 53 before dropping privileges, and so a busy port fails start-up.
    UDP binds first, then TCP on the same port number (so port 0 works).
    """

    def __init__(
        self,
        plan: Plan,
        reactor: Any,
        exit_on_listen_error: bool = False,
        loader: Callable[[Plan], Plan] | None = None,
        freeze_gc: bool = False,
        workers: int = 1,
        inherited: Mapping[tuple[str, int], tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.freeze_gc = freeze_gc
        # ``--workers N``: listeners get SO_REUSEPORT and N-1 more sockets each, for the workers (workers.py).
        self.workers = workers
        self.shared_sockets: dict[tuple[str, int], list[SharedSockets]] = {}
        # In a worker: (address, port as configured) → the (UDP fd, TCP fd, family) the primary made.
        self.inherited = dict(inherited or {})
        # Called with the plan after a reload adopted it (the worker pool restarts its workers).
        self.adopted_hooks: list[Callable[[Plan], Any]] = []
        self.exit_on_listen_error = exit_on_listen_error
        self.plan = plan
        self.reactor = reactor
        # Builds the next plan from the Corefile (given the running one) on a reload; see reload.py.
        self.loader = loader
        self.ports: list[Any] = []
        self.factories: dict[tuple[str, int], KubeDNSServerFactory] = {}
        # (address, port as configured) → its factory and ports: port 0 stays what it got.
        self._listeners: dict[tuple[str, int], tuple[KubeDNSServerFactory, int, list[Any]]] = {}
        for svc in plan.server.services:
            svc.setServiceParent(self)

    def privilegedStartService(self) -> None:
        if self.factories:
            return
        for (addr, port), blocks in self.plan.listeners().items():
            factory = self._listen(addr, port, blocks)
            if self.plan.server.startup:
                factory.hold()
        try:  # the HTTP listeners (health, ready), before anything is served
            MultiService.privilegedStartService(self)
        except CannotListenError as e:
            self._cannot_listen(e.interface, e.port, e, " (HTTP)")

    def _listen(self, addr: str, port: int, blocks: Sequence[Block]) -> KubeDNSServerFactory:
        factory = KubeDNSServerFactory(blocks=blocks)
        interface = addr or ("::" if _ipv6_available() else "")
        try:
            if (addr, port) in self.inherited:
                udp_fd, tcp_fd, family = self.inherited[(addr, port)]
                pair = adopt_udp_tcp(self.reactor, udp_fd, tcp_fd, family, factory.datagram_protocol, factory)
            elif self.workers > 1:
                pair, shared = listen_reuseport(
                    self.reactor, port, factory.datagram_protocol, factory, interface, self.workers - 1
                )
                self.shared_sockets[(addr, port)] = shared
            else:
                pair = listen_udp_tcp(self.reactor, port, factory.datagram_protocol, factory, interface)
        except CannotListenError as e:
            self._cannot_listen(interface, port, e, "")
        self.ports += [pair.udp, pair.tcp]
        self.factories[(addr, pair.port)] = factory
        self._listeners[(addr, port)] = (factory, pair.port, [pair.udp, pair.tcp])
        self._meter(factory, blocks, _server_label(addr, pair.port))
        self._tell_listening(blocks, addr, pair.port)
        log.info(
            "kubernetai: listening on {addr} port {port} (udp+tcp) for {zones}",
            addr=interface or "*",
            port=pair.port,
            zones=" ".join(z for b in blocks for z in b.zones),
        )
        return factory

    def _tell_listening(self, blocks: Sequence[Block], addr: str, port: int) -> None:
        """Resolvers that want to know where the server listens (``loop`` probes itself there)."""
        for block in blocks:
            for r in _resolvers_in(block.resolver):
                hook = getattr(r, "listening", None)
                if hook is not None:
                    hook(addr if addr and addr not in ("::", "0.0.0.0") else "127.0.0.1", port)

    @defer.inlineCallbacks
    def adopt(self, plan: Plan) -> Any:
        """Serve ``plan`` instead of the running one, without closing a listener that stays.

        Factories on addresses that stay get the new blocks at once (between
        two queries: none is lost), new addresses are listened on, gone ones
        closed; services of the new plan start, those it no longer has stop
        (a stanza it kept is the same object, and keeps running).
        """
        old, self.plan = self.plan, plan
        plan.server.previous = None  # no chain of every configuration ever loaded
        plan.server.answer_caches.clear()
        if plan.server.metrics is not None:
            plan.server.metrics.bind(plan.server)
            plan.server.metrics.enabled.clear()
            plan.server.metrics.panic_counts.clear()
        wanted = plan.listeners()
        for key, blocks in wanted.items():
            if key in self._listeners:
                factory, actual, _ = self._listeners[key]
                factory.set_blocks(blocks)
                factory.meter = None
                self._meter(factory, blocks, _server_label(key[0], actual))
            else:
                try:
                    self._listen(key[0], key[1], blocks)
                except CannotListenError as e:
                    log.error("reload: cannot listen on {addr} port {port}: {e}", addr=key[0] or "*", port=key[1], e=e)
        for key in [k for k in self._listeners if k not in wanted]:
            factory, actual, ports = self._listeners.pop(key)
            del self.factories[(key[0], actual)]
            for p in ports:
                self.ports.remove(p)
            for shared in self.shared_sockets.pop(key, ()):
                shared.udp.close()
                shared.tcp.close()
            yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])
        keep = set(plan.server.services)
        for svc in [s for s in old.server.services if s not in keep and s.parent is self]:
            yield defer.maybeDeferred(svc.disownServiceParent)
        for svc in plan.server.services:
            if svc.parent is not self:
                try:
                    svc.setServiceParent(self)
                except CannotListenError as e:
                    log.error("reload: {name} cannot listen: {e}", name=svc.name, e=e)
            adopted = getattr(svc, "on_adopt", None)
            if adopted is not None:
                adopted()
        for hook in self.adopted_hooks:
            hook(plan)

    def _meter(self, factory: KubeDNSServerFactory, blocks: Sequence[Block], server: str) -> None:
        """Count this listener's queries if a block on it has ``prometheus`` (CoreDNS's ``server`` label).

        Its answer cache is listed for /status (and metrics) either way."""
        self.plan.server.answer_caches[server] = factory.answer_cache
        metrics = self.plan.server.metrics
        if metrics is None:
            return
        metrics.panic_counts.append(lambda: factory.panics)
        if any(b.metered for b in blocks):
            factory.meter = metrics.meter(server)
        for b in blocks:
            if b.metered:
                metrics.enabled.update((server, zone, name) for zone in b.zones for name in b.plugins)

    def _cannot_listen(self, interface: str, port: int, e: CannotListenError, what: str) -> NoReturn:
        """Close what is open; under twistd say it in one line and exit 1, else raise."""
        self._close_ports()
        if self.exit_on_listen_error:
            print(
                f"kubernetai: cannot listen on {interface or '*'} port {port}{what}: {e.socketError}", file=sys.stderr
            )
            raise SystemExit(1) from None
        raise CannotListenError(interface, port, e.socketError) from None

    def startService(self) -> None:
        self.privilegedStartService()  # a no-op when twistd already called it
        log.info("{version} starting", version=version_line())
        super().startService()
        stanzas = self.plan.server.startup
        if stanzas:
            log.info("kubernetai: waiting for the first sync of {n} cluster(s)", n=len(stanzas))
            waits = [s.wait_synced(self.reactor) for s in stanzas]
            defer.gatherResults(waits).addCallback(self._release, stanzas)
        else:
            startup_gc.restore()  # nothing to sync: start-up is over

    def _release(self, synced: list[bool], stanzas: list) -> None:
        for ok, stanza in zip(synced, stanzas, strict=True):
            if not ok:
                log.warn(
                    "{name}: not synced after startup_timeout {t}s; its names answer SERVFAIL until it is "
                    "(or fall through)",
                    name=stanza.opts.name(),
                    t=stanza.opts.startup_timeout,
                )
        for factory in self.factories.values():
            factory.release()
        if self.freeze_gc:
            # What start-up made (modules, the clusters' objects) lives as long as the process: the
            # cyclic collector need not scan it again and again (bench/README.md: cached queries/s
            # +37% and +99% in two interleaved runs).  Refcounting still frees what is replaced;
            # only garbage cycles among it would stay.  twistd sets it; embedding programs decide.
            gc.freeze()
        startup_gc.restore()  # the collector's usual pace from now on

    def addresses(self) -> list[tuple[str, int]]:
        """The (address, port) pairs actually listened on."""
        return list(self.factories)

    def _close_ports(self) -> defer.Deferred:
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        for hook in self.plan.server.pre_stop:
            yield defer.maybeDeferred(hook)
        yield self._close_ports()
        yield defer.maybeDeferred(super().stopService)
