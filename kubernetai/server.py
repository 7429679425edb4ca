"""The DNS server: one ``DNSServerFactory`` subclass, UDP and TCP protocols.

The factory fixes what stock ``twisted.names.server`` gets wrong for an
authoritative server: negative answers carry the zone's SOA and AA, EDNS0 is
understood, UDP answers are truncated at a record boundary with TC set, bad
packets get FORMERR (or are dropped) instead of a traceback, and several
server blocks can share one port, routed by their zones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime, IResolver, ITCPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import AuthoritativeDomainError, DomainError
from twisted.names.server import DNSServerFactory
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from kubernetai import outcome, shortpath, wire
from kubernetai.answercache import AnswerCache, CachedAnswer
from kubernetai.lazy_repr import LazyRepr
from kubernetai.metrics import QueryMeter
from kubernetai.metrics import head as metric_head
from kubernetai.request import QueryEvent, RequestInfo, Trace, rcode_name, request_info
from kubernetai.rotation import address_run, rotate_bytes, rotate_records
from kubernetai.zones import match_zone, normalize

__all__ = ["Block", "KubeDNSServerFactory", "DNSDatagramServerProtocol", "DNSStreamServerProtocol"]

log = Logger()


@attrs.define(repr=False)
class Block(LazyRepr):
    """A server block at run time: its zones and its resolver chain."""

    zones: tuple[str, ...]
    resolver: IResolver  # usually a RequestChain
    observers: list[Callable[[QueryEvent], None]] = attrs.Factory(list)
    recursive: bool = False
    label: str = ""
    # Query classes the block answers; others are REFUSED before any resolver
    # (as CoreDNS).  A resolver adds a class with a ``query_classes`` attribute.
    classes: frozenset[int] = frozenset({dns.IN})
    # The block has ``prometheus``: its queries are counted (the factory's ``meter``).
    metered: bool = False
    plugins: tuple[str, ...] = ()  # its directives, for coredns_plugin_enabled
    rotate: bool = False  # ``loadbalance``: address records rotate between answers
    gate: Any = None  # ``acl``: ``decide(client, qtype, lname)`` → allow, block, filter or drop
    rotation: int = 0  # answers rotated so far

    def next_rotation(self) -> int:
        self.rotation += 1
        return self.rotation

    @staticmethod
    def classes_of(resolvers: Sequence[object]) -> frozenset[int]:
        return frozenset({dns.IN}).union(*(getattr(r, "query_classes", ()) for r in resolvers))


class _Answer(NamedTuple):
    """An answer's rcode and sections (a tuple: one is made for every answer not cached)."""

    rcode: int
    aa: bool = False
    answers: Sequence[dns.RRHeader] = ()
    authority: Sequence[dns.RRHeader] = ()
    additional: Sequence[dns.RRHeader] = ()
    failure: Failure | None = None


def _classify(result: object) -> _Answer:
    """Turn a chain's result or failure (a Failure, or the exception itself) into an rcode and sections."""
    if type(result) is tuple or not isinstance(result, (Failure, BaseException)):
        answers, authority, additional = cast(tuple[Sequence[dns.RRHeader], ...], result)
        return _Answer(dns.OK, _authoritative(answers, authority), answers, authority, additional)
    # answer_now's outcomes come bare: a Failure only where one is kept (below)
    exc = result.value if isinstance(result, Failure) else result
    if isinstance(exc, outcome.Reply):
        why = Failure(outcome.ServerFailure(exc.reason)) if exc.reason else None
        return _Answer(exc.rcode, exc.authoritative, exc.answers, exc.authority, exc.additional, why)
    if isinstance(exc, (outcome.NXDomain, outcome.FallthroughNXDomain)):
        return _Answer(dns.ENAME, True, (), exc.authority)
    if isinstance(exc, AuthoritativeDomainError):
        return _Answer(dns.ENAME, True)
    if isinstance(exc, DomainError):
        # Nothing in the chain owned the name (CoreDNS: "no next plugin found").
        return _Answer(dns.ESERVER, failure=Failure(outcome.ServerFailure("no plugin serves this name")))
    failure = result if isinstance(result, Failure) else Failure(exc)
    if isinstance(exc, NotImplementedError):
        return _Answer(dns.ENOTIMP, failure=failure)
    return _Answer(dns.ESERVER, failure=failure)


def _authoritative(answers: Sequence[dns.RRHeader], authority: Sequence[dns.RRHeader]) -> bool:
    """AA: any answer record is authoritative, or with no answers, any authority record (loops: no generators)."""
    for rr in answers:
        if rr.auth:
            return True
    if answers:
        return False
    for rr in authority:
        if rr.auth:
            return True
    return False


class _AclMarker:
    plugin_name = "acl"  # the ``plugin`` label of what acl refused or filtered


_ACL = _AclMarker()


def _host(address: tuple) -> str:
    return address[0] if address else ""


def _lname(req: wire.Request) -> str:
    try:
        return normalize(req.question.name.name.decode("ascii"))
    except UnicodeDecodeError:
        return ""


def _head(zone: str, proto: str, qtype: int, dnssec_ok: bool, rcode: int, size: int, by: object) -> tuple:
    """The labels an answer is counted under (metrics.head), from the question and who answered it."""
    return metric_head(
        zone,
        proto,
        qtype,
        dnssec_ok,
        rcode_name(rcode),
        getattr(by, "plugin_name", ""),
        getattr(by, "cluster_name", ""),
        size,
    )


def _family(address: tuple) -> str:
    """CoreDNS's ``family`` label: 1 for IPv4, 2 for IPv6."""
    return "2" if address and ":" in address[0] else "1"


class KubeDNSServerFactory(DNSServerFactory):
    """Answers DNS for one listening address from the blocks bound to it.

    Built either from ``blocks`` (the Corefile path) or, like its base
    class, from ``authorities``/``caches``/``clients`` for embedding: those
    become one block for the root zone.
    """

    noisy = False

    def __init__(
        self,
        authorities: Sequence[object] | None = None,
        caches: Sequence[object] | None = None,
        clients: Sequence[object] | None = None,
        verbose: int = 0,
        *,
        blocks: Sequence[Block] | None = None,
        clock: IReactorTime | None = None,
        tcp_idle_timeout: float = 10.0,
        max_tcp_connections: int = 1000,
    ) -> None:
        super().__init__(authorities, caches, clients, verbose)
        if blocks is None:
            blocks = [Block((".",), self.resolver, recursive=self.canRecurse, label=".")]
        self.blocks = list(blocks)
        self.clock = clock
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self._zones = {z: b for b in reversed(self.blocks) for z in b.zones}
        self._held: list | None = None
        self.answer_cache = AnswerCache(self.MAX_CACHED)
        # Counts the queries of metered blocks (CoreDNS's prometheus plugin), once metrics exist.
        self.meter: QueryMeter | None = None
        self.panics = 0  # errors caught while answering (coredns_panics_total)

    def set_blocks(self, blocks: Sequence[Block]) -> None:
        """Serve these blocks from now on (a reload); answers made by the old ones are dropped."""
        self.blocks = list(blocks)
        self._zones = {z: b for b in reversed(self.blocks) for z in b.zones}
        self.answer_cache.clear()

    # ---------------------------------------------------------- start-up gate
    MAX_HELD = 10000

    def hold(self) -> None:
        """Queue queries until ``release()`` (the stanzas' first sync)."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for d, args in held:
            self.handle_packet(*args).chainDeferred(d)

    # ---------------------------------------------------------- routing
    def block_for(self, qname: str) -> Block | None:
        found = self._zone_and_block(qname)
        return None if found is None else found[1]

    def _zone_and_block(self, qname: str) -> tuple[str, Block] | None:
        zone = match_zone(qname, self._zones)
        return None if zone is None else (zone, self._zones[zone])

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.monotonic()

    # ---------------------------------------------------------- the one entry point
    def handle_packet(self, data: bytes, address: tuple, proto: str, cache_checked: bool = False) -> defer.Deferred:
        """Answer one packet: a Deferred of response bytes, or None to drop.

        Never fails: whatever the input, the Deferred fires with bytes or None.
        ``cache_checked``: the caller already asked ``cached_answer`` (the UDP
        fast path), so a miss is not looked up twice.
        """
        if self._held is not None:
            if len(self._held) >= self.MAX_HELD:
                return defer.succeed(None)
            d: defer.Deferred = defer.Deferred()
            self._held.append((d, (data, address, proto)))
            return d
        try:
            if not cache_checked:
                out = self.cached_answer(data, address, proto)
                if out is not None:
                    return defer.succeed(out)
            return self._handle(data, address, proto)
        except Exception:
            self.panics += 1
            log.failure("unexpected error handling a packet from {address}", address=address)
            return defer.succeed(None)

    MAX_CACHED = 50_000

    def cached_answer(self, data: bytes, address: tuple, proto: str) -> bytes | None:
        """The answer to this packet from the answer cache, ready to send, or None.

        The hot path: no Deferred, no parsing (a cached answer carries what
        metrics and acl need); the UDP protocol calls it straight from
        ``datagramReceived``.  Counted and observed like any other answer.
        """
        if self._held is not None:
            return None
        hit = self.answer_cache.answer(data, proto, _host(address))
        if hit is None:
            return None
        cached, out = hit
        if cached.plain:
            return out  # no acl, rotation, counting or observer for this block
        block = cached.block
        start = self._now() if self.meter is not None or block.observers else 0.0  # the clock only when read
        if block.gate is not None and block.gate.decide(_host(address), cached.qtype, cached.lname) != "allow":
            return None  # acl: the full path refuses, filters or drops it
        if block.rotate and cached.rotation_run is not None:
            out = rotate_bytes(out, cached.rotation_run, block.next_rotation())
        meter = self.meter
        if meter is not None and cached.metric_head is not None:
            meter.count(
                cached.metric_head,
                _family(address),
                len(data),
                len(out),
                self._now() - start,
                cached.metric_sums,
            )
        if block.observers:
            self._observe_cached(cached, data, address, proto, out, start)
        return out

    # Uncached questions about a Service's own name (and its neighbours) that stanzas alone answer
    # are answered as bytes from the start (shortpath.py); False: everything goes the general way.
    short_path = True

    def _handle(self, data: bytes, address: tuple, proto: str) -> defer.Deferred:
        if self.short_path:
            try:
                out = shortpath.answer(self, data, address, proto)
            except Exception:
                self.panics += 1
                log.failure("the short path failed on a packet from {address}; answering it the general way",
                            address=address)  # fmt: skip
                out = None
            if out is not None:
                return defer.succeed(out)
        start = self._now()
        req = wire.parse_request(data)
        if req is None:
            return defer.succeed(None)
        if isinstance(req, wire.Malformed):
            out, _ = wire.encode_response(
                id=req.id, opcode=req.opcode, rd=req.rd, rcode=req.rcode, question=req.question
            )
            return defer.succeed(out)
        if req.edns_version:
            out, _ = wire.encode_response(
                id=req.id,
                rd=req.rd,
                cd=req.cd,
                rcode=wire.BADVERS,
                question=req.question,
                edns=True,
                dnssec_ok=req.dnssec_ok,
            )
            return defer.succeed(out)
        qname = _lname(req)
        found = self._zone_and_block(qname) if qname else None
        if found is None:
            out, _ = self._encode(req, _Answer(dns.EREFUSED), proto, False)
            if self.meter is not None:  # as CoreDNS: no block's zone, counted under the zone "dropped"
                self.meter.record(
                    "dropped", proto, _family(address), req.question.type, req.dnssec_ok, "REFUSED", "", "",
                    len(data), len(out), self._now() - start,
                )  # fmt: skip
            return defer.succeed(out)
        zone, block = found
        host, port = (address[0], address[1]) if address else ("", 0)
        info = RequestInfo(host, port, proto, req.ixfr_serial, dnssec_ok=req.dnssec_ok)
        action = block.gate.decide(host, req.question.type, qname) if block.gate is not None else "allow"
        if action == "drop":
            return defer.succeed(None)
        if action != "allow":
            info.trace.cacheable = False
            info.trace.answered_by = _ACL
            reply = outcome.Reply(dns.EREFUSED) if action == "block" else outcome.Reply(dns.OK, authoritative=False)
            d = defer.fail(reply)
        elif req.question.cls not in block.classes:
            d = defer.fail(outcome.Reply(dns.EREFUSED))  # no resolver is asked
        else:
            query = req.question  # a dns.Query of its own (the parser's), read by the resolvers
            answer_now = getattr(block.resolver, "answer_now", None)
            token = request_info.set(info)
            try:
                if answer_now is None:
                    d = defer.maybeDeferred(cast(Any, block.resolver).query, query)
                else:
                    # Our chain answers without Deferreds while its stanzas can: most answers are
                    # made and sent in this call (an uncached answer's Deferred plumbing was a
                    # fifth of its cost).
                    now = answer_now(query, info)
                    # (Deferred is an ABC's subclass: isinstance on it is dear; sections are a tuple)
                    if type(now) is tuple or not isinstance(now, defer.Deferred):
                        return defer.succeed(
                            self._finish(now, data, req, block, zone, qname, address, proto, start, info)
                        )
                    d = now
            finally:
                request_info.reset(token)
        d.addBoth(self._finish, data, req, block, zone, qname, address, proto, start, info)
        return d

    def short_answered(
        self,
        block: Block,
        zone: str,
        data: bytes,
        address: tuple,
        proto: str,
        start: float,
        out: bytes,
        name: bytes,
        qtype: int,
        edns_payload: int | None,
        dnssec_ok: bool,
        ancount: int,
        answered_by: object,
    ) -> tuple | None:
        """An answer of the short path (shortpath.py) observed and counted as ``_finish`` would; its metric head."""
        rcode = out[3] & 0xF
        if block.observers:
            question = dns.Query(name, qtype, dns.IN)
            req = wire.Request(
                (data[0] << 8) | data[1],
                dns.OP_QUERY,
                bool(data[2] & 0x01),
                bool(data[3] & 0x10),
                question,
                len(data),
                edns_version=None if edns_payload is None else 0,
                edns_payload=512 if edns_payload is None else edns_payload,
                dnssec_ok=dnssec_ok,
            )
            ans = _Answer(rcode, True, (None,) * ancount)  # type: ignore[arg-type]
            self._observe(block, req, ans, address, proto, out, False, start)
        if not block.metered or self.meter is None:
            return None
        return self._count(out, data, qtype, dnssec_ok, zone, address, proto, start, answered_by)

    def _finish(
        self,
        result: object,
        data: bytes,
        req: wire.Request,
        block: Block,
        zone: str,
        qname: str,
        address: tuple,
        proto: str,
        start: float,
        info: RequestInfo,
    ) -> object:
        """The chain's result made an answer: encoded, observed, counted, cached."""
        out: object = self._respond(result, req, block, address, proto, start, info.trace)
        trace = info.trace
        qtype = req.question.type
        head = None
        if block.metered and self.meter is not None:
            head = self._count(out, data, qtype, req.dnssec_ok, zone, address, proto, start, trace.answered_by)
        if isinstance(out, bytes) and trace.cacheable and trace.versions and qtype not in (dns.AXFR, dns.IXFR):
            # made only by cacheable resolvers
            self.remember_answer(
                data, proto, out, trace.versions, trace.zone_labels or 0, block, qtype, qname, head,
                failure=trace.failure, vary=trace.vary,
            )  # fmt: skip
        return out

    def _count(
        self,
        out: object,
        data: bytes,
        qtype: int,
        dnssec_ok: bool,
        zone: str,
        address: tuple,
        proto: str,
        start: float,
        answered_by: object,
    ) -> tuple:
        """Count an answered query for the ``prometheus`` plugin; its metric head."""
        assert self.meter is not None
        size = len(out) if isinstance(out, bytes) else sum(len(m) for m in out) if isinstance(out, list) else 0
        rcode = out[3] & 0xF if isinstance(out, bytes) else dns.OK
        h = _head(zone, proto, qtype, dnssec_ok, rcode, size, answered_by)
        self.meter.count(h, _family(address), len(data), size, self._now() - start)
        return h

    def remember_answer(
        self,
        data: bytes,
        proto: str,
        out: bytes,
        versions: Sequence[tuple[Callable[[], object], object]],
        zone_labels: int,
        block: Block,
        qtype: int,
        lname: str,
        head: tuple | None,
        *,
        failure: Any = None,
        vary: Any = None,
    ) -> None:
        """Keep an answer with what its hits need: the metric head and sums, the rotation run, whether it is plain.

        ``head``: the metric head it was counted under (None: not metered).  The
        general path (``_finish``) and the short path (shortpath.py) both keep theirs here.
        """
        sums = self.meter.sums_for(head) if head is not None and self.meter is not None else None
        run = address_run(out) if block.rotate else None
        self.answer_cache.remember(
            data,
            proto,
            out,
            versions,
            zone_labels,
            block,
            failure=failure,
            vary=vary,
            qtype=qtype,
            lname=lname,
            rotation_run=run,
            metric_head=head,
            metric_sums=sums,
            plain=block.gate is None and run is None and not block.observers and head is None,
        )

    def _encode(self, req: wire.Request, ans: _Answer, proto: str, ra: bool) -> tuple[bytes, bool]:
        limit = req.udp_limit() if proto == "udp" else 65535
        return wire.encode_response(
            id=req.id,
            rd=req.rd,
            cd=req.cd,
            rcode=ans.rcode,
            aa=ans.aa,
            ra=ra,
            question=req.question,
            answers=ans.answers,
            authority=ans.authority,
            additional=ans.additional,
            edns=req.has_edns,
            dnssec_ok=req.dnssec_ok,
            max_size=limit,
            name_wire=req.name_wire,
        )

    def _respond(
        self, result: object, req: wire.Request, block: Block, address: tuple, proto: str, start: float, trace: Trace
    ) -> bytes | list[bytes] | None:
        try:
            ans = _classify(result)
            trace.failure = ans.failure
            if block.rotate and len(ans.answers) > 1:
                ans = ans._replace(answers=rotate_records(ans.answers, block.next_rotation()))
            if proto == "tcp" and ans.rcode == dns.OK and req.question.type in (dns.AXFR, dns.IXFR):
                return self._transfer_messages(req, ans, block, address, start)
            out, truncated = self._encode(req, ans, proto, block.recursive)
        except Exception:
            self.panics += 1
            ans = _Answer(dns.ESERVER, failure=Failure())
            out, truncated = self._encode(req, ans, proto, block.recursive)
        if block.observers:
            self._observe(block, req, ans, address, proto, out, truncated, start)
        return out

    def _transfer_messages(
        self, req: wire.Request, ans: _Answer, block: Block, address: tuple, start: float
    ) -> list[bytes]:
        """A zone transfer: as many TCP messages as the records need."""
        records = list(ans.answers)
        out: list[bytes] = []
        step = 500
        while records:
            chunk = records[:step]
            data, truncated = wire.encode_response(
                id=req.id, rd=req.rd, aa=True, question=req.question, answers=chunk, max_size=65535
            )
            if truncated and step > 1:
                step //= 2
                continue
            out.append(data)
            records = records[len(chunk) :]
        if block.observers:
            self._observe(block, req, ans, address, "tcp", b"".join(out), False, start)
        return out

    def _observe_cached(
        self, c: CachedAnswer, data: bytes, address: tuple, proto: str, out: bytes, start: float
    ) -> None:
        req = wire.parse_request(data)
        if isinstance(req, wire.Request):
            ans = _Answer(c.rcode, c.aa, (None,) * c.ancount, failure=c.failure)  # type: ignore[arg-type]
            self._observe(c.block, req, ans, address, proto, out, c.truncated, start)

    def _observe(
        self,
        block: Block,
        req: wire.Request,
        ans: _Answer,
        address: tuple,
        proto: str,
        out: bytes,
        truncated: bool,
        start: float,
    ) -> None:
        flags = ["qr"]
        if ans.aa:
            flags.append("aa")
        if truncated:
            flags.append("tc")
        if req.rd:
            flags.append("rd")
        if block.recursive:
            flags.append("ra")
        host, port = (address[0], address[1]) if address else ("", 0)
        event = QueryEvent(
            remote=host,
            port=port,
            id=req.id,
            qtype=req.question.type,
            qclass=req.question.cls,
            qname=req.question.name.name.decode("ascii", "replace") + ".",
            proto=proto,
            size=req.size,
            do=req.dnssec_ok,
            bufsize=req.udp_limit(),
            rcode=ans.rcode,
            flags=",".join(flags),
            rsize=len(out),
            duration=self._now() - start,
            ancount=len(ans.answers),
            failure=ans.failure,
        )
        for observer in block.observers:
            try:
                observer(event)
            except Exception:
                log.failure("query observer failed")

    # ---------------------------------------------------------- protocols
    def buildProtocol(self, addr: object) -> DNSStreamServerProtocol:
        p = DNSStreamServerProtocol(self)
        p.factory = self
        return p

    def datagram_protocol(self) -> DNSDatagramServerProtocol:
        return DNSDatagramServerProtocol(self)


class DNSDatagramServerProtocol(DatagramProtocol):
    """UDP: one datagram in, at most one datagram out."""

    noisy = False

    def __init__(self, factory: KubeDNSServerFactory) -> None:
        self.factory = factory

    _sendto: Callable[[bytes, tuple], object] | None = None

    def startProtocol(self) -> None:
        # The answer goes straight to the socket: Port.write() checks the address with
        # inet_pton twice per datagram (~15% of a cached answer's CPU over sockets,
        # bench/README.md), and ours came from recvfrom().  Errors go through Port.write.
        sock = getattr(self.transport, "socket", None)
        self._sendto = getattr(sock, "sendto", None)

    def stopProtocol(self) -> None:
        self._sendto = None

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        factory = self.factory
        # The hot path: the very bytes asked before, an answer that needs nothing but sending and
        # was found valid since its change count last moved.  The rest, cached or not, goes through
        # cached_answer / handle_packet.
        if factory._held is None and self._sendto is not None:
            try:
                out = factory.answer_cache.plain_udp_hit(data, addr[0])
            except Exception:
                out = None  # the path below asks again, and logs what fails
            if out is not None:
                self._send(out, addr)
                return
        try:
            hit = factory.cached_answer(data, addr, "udp")
        except Exception:
            hit = None  # the full path below answers (and logs) it
        else:
            if hit is not None:
                self._send(hit, addr)
                return
        d = factory.handle_packet(data, addr, "udp", cache_checked=factory._held is None)
        d.addCallback(self._send, addr)
        d.addErrback(lambda f: log.failure("sending a UDP answer failed", f))

    def _send(self, out: bytes | list[bytes] | None, addr: tuple) -> None:
        if out is None or self.transport is None or isinstance(out, list):
            return
        if self._sendto is not None:
            try:
                self._sendto(out, addr)
                return
            except OSError:
                pass  # Twisted's write handles (and reports) what the socket refused
        self.transport.write(out, addr)


@implementer(IPushProducer)
class DNSStreamServerProtocol(Int16StringReceiver, TimeoutMixin):
    """TCP: length-prefixed messages, pipelined, with an idle timeout.

    The protocol is its transport's producer: once answers not yet read by
    the client pass the transport's buffer size (64 KiB), it stops reading
    queries until they drain, so a client that pipelines and never reads
    costs a bounded buffer, and is cut off (aborted) at the idle timeout.
    """

    MAX_LENGTH = 65535

    def __init__(self, factory: KubeDNSServerFactory) -> None:
        self.factory = factory
        self.pending = 0
        self.peer: tuple = ("", 0)

    @property
    def tcp(self) -> ITCPTransport:
        """The transport, once connected (Twisted types it as optional)."""
        return cast(ITCPTransport, self.transport)

    def connectionMade(self) -> None:
        peer = self.tcp.getPeer()
        self.peer = (getattr(peer, "host", ""), getattr(peer, "port", 0))
        if len(self.factory.connections) >= self.factory.max_tcp_connections:
            log.warn(
                "too many TCP connections ({n}); closing one from {peer}",
                n=len(self.factory.connections),
                peer=self.peer[0],
            )
            self.tcp.abortConnection()
            return
        self.factory.connectionMade(self)
        # pauseProducing / resumeProducing are Int16StringReceiver's own; a TCP transport is an IConsumer.
        cast(IConsumer, self.transport).registerProducer(self, True)
        if self.factory.clock is not None:
            self.callLater = self.factory.clock.callLater  # type: ignore[method-assign]
        self.setTimeout(self.factory.tcp_idle_timeout)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        if self in self.factory.connections:
            self.factory.connectionLost(self)

    def stringReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.pending += 1
        d = self.factory.handle_packet(data, self.peer, "tcp")
        d.addCallback(self._send)
        d.addErrback(lambda f: log.failure("sending a TCP answer failed", f))

    def _send(self, out: bytes | list[bytes] | None) -> None:
        self.pending -= 1
        if self.transport is None or not self.connected:
            return
        if out is None:
            self.tcp.loseConnection()
            return
        for message in out if isinstance(out, list) else [out]:
            self.sendString(message)
        self.resetTimeout()

    def lengthLimitExceeded(self, length: int) -> None:
        self.tcp.loseConnection()

    def timeoutConnection(self) -> None:
        if self.paused:  # answers the client will not read: closing would wait for them forever
            self.tcp.abortConnection()
            return
        if self.pending:
            self.setTimeout(self.factory.tcp_idle_timeout)
            return
        self.tcp.loseConnection()
