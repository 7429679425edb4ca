"""listen_udp_tcp: one port number for UDP and TCP, retried when the OS's pick is taken for TCP."""

from __future__ import annotations

import socket

import pytest
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from kubernetai.listen import listen_udp_tcp

pytestmark = pytest.mark.e2e


class TwinTakenOnce:
    """The real reactor, except that the first UDP port it hands out is then taken for TCP."""

    def __init__(self) -> None:
        self.held: list[socket.socket] = []
        self.udp_ports: list[int] = []

    def listenUDP(self, port, protocol, interface=""):
        udp = reactor.listenUDP(port, protocol, interface=interface)
        self.udp_ports.append(udp.getHost().port)
        if len(self.udp_ports) == 1:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((interface, udp.getHost().port))
            s.listen()
            self.held.append(s)
        return udp

    def listenTCP(self, port, factory, interface=""):
        return reactor.listenTCP(port, factory, interface=interface)


def test_a_taken_twin_port_is_retried_with_a_fresh_protocol():
    fake = TwinTakenOnce()
    made: list[DatagramProtocol] = []

    def datagram() -> DatagramProtocol:
        made.append(DatagramProtocol())
        return made[-1]

    try:
        pair = listen_udp_tcp(fake, 0, datagram, ServerFactory(), "127.0.0.1")
    finally:
        for s in fake.held:
            s.close()
    try:
        assert len(fake.udp_ports) == 2 and fake.udp_ports[1] != fake.udp_ports[0]
        assert pair.udp.getHost().port == pair.tcp.getHost().port == pair.port == fake.udp_ports[1]
        assert len(made) == 2 and made[0] is not made[1]
    finally:
        pair.stopListening()


def test_a_fixed_busy_port_raises():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(CannotListenError):
            listen_udp_tcp(reactor, busy.getsockname()[1], DatagramProtocol, ServerFactory(), "127.0.0.1")
