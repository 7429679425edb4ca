"""Shared test helpers: fired-Deferred results, free ports, registries."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure


def result(d: defer.Deferred) -> Any:
    """The result of an already-fired Deferred (a Failure is returned, not raised)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    return out[0]


def success(d: defer.Deferred) -> Any:
    value = result(d)
    if isinstance(value, Failure):
        value.raiseException()
    return value


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@pytest.fixture
def dns_upstream():
    """Start loopback DNS servers answering from a records table; yields a starter returning the port."""
    from twisted.internet import reactor

    from kubernetai.server import Block, KubeDNSServerFactory, chain

    from .test_server import TableResolver

    ports = []

    def start(zone: str, records: dict) -> int:
        factory = KubeDNSServerFactory(blocks=[Block((".",), chain([TableResolver(zone, records)]))])
        udp = reactor.listenUDP(0, factory.datagram_protocol(), interface="127.0.0.1")
        tcp = reactor.listenTCP(udp.getHost().port, factory, interface="127.0.0.1")
        ports.extend([udp, tcp])
        return udp.getHost().port

    yield start
    for p in ports:
        p.stopListening()


@pytest.fixture
def any_directive():
    """A directive check that accepts every name (grammar tests)."""
    return lambda name: name != "unknownthing"
