"""UDP and TCP on one port number, which DNS needs and no single bind call gives.

For port 0 the OS picks the UDP port and TCP follows; if that number is
already taken for TCP (by any process), the pair is tried again, a bounded
number of times.  The server and every test that starts a DNS listener use
this one helper, so none binds a number it did not just get from the OS.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from kubernetai.lazy_repr import LazyRepr

__all__ = ["UDPAndTCP", "listen_udp_tcp"]

ATTEMPTS = 20


@attrs.frozen(repr=False)
class UDPAndTCP(LazyRepr):
    """The two listening ports of one number."""

    udp: IListeningPort
    tcp: IListeningPort
    port: int

    def stopListening(self) -> defer.Deferred:
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in (self.udp, self.tcp)])


def listen_udp_tcp(
    reactor: Any, port: int, datagram: Callable[[], DatagramProtocol], stream: ServerFactory, interface: str = ""
) -> UDPAndTCP:
    """Listen with a new ``datagram()`` protocol on UDP and ``stream`` on TCP, both
    on ``port`` (0: any free number).  Raises ``CannotListenError`` when a fixed
    port is busy.  (A protocol instance cannot be reused: a failed try keeps it
    attached to its closing port, hence the callable.)"""
    for attempt in range(ATTEMPTS if port == 0 else 1):
        udp = reactor.listenUDP(port, datagram(), interface=interface)
        try:
            tcp = reactor.listenTCP(udp.getHost().port, stream, interface=interface)
        except CannotListenError:
            udp.stopListening()
            if port != 0 or attempt == ATTEMPTS - 1:
                raise
            continue
        return UDPAndTCP(udp, tcp, tcp.getHost().port)
    raise AssertionError("unreachable")


@attrs.frozen(repr=False)
class SharedSockets(LazyRepr):
    """One more UDP and TCP socket on a listener's port, for a worker process (``--workers``)."""

    udp: socket.socket
    tcp: socket.socket
    family: int


def _reuseport_socket(family: int, kind: int, interface: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's listenTCP
        sock.bind((interface, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


BACKLOG = 50  # Twisted's listenTCP default


def listen_reuseport(
    reactor: Any,
    port: int,
    datagram: Callable[[], DatagramProtocol],
    stream: ServerFactory,
    interface: str,
    extra: int,
) -> tuple[UDPAndTCP, list[SharedSockets]]:
    """As ``listen_udp_tcp``, with ``SO_REUSEPORT`` on every socket, plus ``extra`` more UDP+TCP pairs
    bound to the same port for worker processes: the kernel spreads queries over all of them.

    The sockets are made here, before twistd drops privileges, so workers serve port 53 too."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    for attempt in range(ATTEMPTS if port == 0 else 1):
        made: list[socket.socket] = []
        try:
            udp = _reuseport_socket(family, socket.SOCK_DGRAM, interface, port)
            made.append(udp)
            actual = udp.getsockname()[1]
            made.append(_reuseport_socket(family, socket.SOCK_STREAM, interface, actual))
            for _ in range(extra):
                made.append(_reuseport_socket(family, socket.SOCK_DGRAM, interface, actual))
                made.append(_reuseport_socket(family, socket.SOCK_STREAM, interface, actual))
        except OSError as e:
            for sock in made:
                sock.close()
            if port != 0 or attempt == ATTEMPTS - 1 or not made:
                raise CannotListenError(interface, port, e) from None
            continue
        own = adopt_udp_tcp(reactor, made[0].fileno(), made[1].fileno(), family, datagram, stream)
        made[0].close()  # the reactor's ports hold their own duplicates
        made[1].close()
        shared = [SharedSockets(made[i], made[i + 1], family) for i in range(2, len(made), 2)]
        return own, shared
    raise AssertionError("unreachable")


def adopt_udp_tcp(
    reactor: Any, udp_fd: int, tcp_fd: int, family: int, datagram: Callable[[], DatagramProtocol], stream: ServerFactory
) -> UDPAndTCP:
    """Serve sockets made elsewhere (by ``listen_reuseport``, here or in the primary process)."""
    udp = reactor.adoptDatagramPort(udp_fd, family, datagram(), maxPacketSize=8192)
    tcp = reactor.adoptStreamPort(tcp_fd, family, stream)
    return UDPAndTCP(udp, tcp, tcp.getHost().port)
