"""UDP and TCP on one port number, which DNS needs and no single bind call gives.

For port 0 the OS picks the UDP port and TCP follows; if that number is
already taken for TCP (by any process), the pair is tried again, a bounded
number of times.  The server and every test that starts a DNS listener use
this one helper, so none binds a number it did not just get from the OS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, ServerFactory

__all__ = ["UDPAndTCP", "listen_udp_tcp"]

ATTEMPTS = 20


@attrs.frozen
class UDPAndTCP:
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
