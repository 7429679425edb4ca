"""Shared test helpers: fired-Deferred results, held ports, log waits, registries."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
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


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A loopback port where nothing answers, held for the ``with`` block.

    TCP is bound but never listens (connections are refused) and UDP is
    bound but never read (queries time out), so no other process can take
    the number while a test counts on it being dead.
    """
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(50):
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                tcp.close()
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                continue
            yield port
            return
        raise RuntimeError("no port pair could be held")
    finally:
        tcp.close()
        udp.close()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A held loopback port where nothing answers (see ``held_port``)."""
    with held_port() as port:
        yield port


def wait_for_log(path: Path, pattern: str, proc: subprocess.Popen, within: float) -> re.Match:
    """The first match of ``pattern`` in the log file a process writes (bounded in time)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text()) if path.exists() else None
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode}: {path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged within {within}s: {path.read_text()}")


@pytest.fixture
def dns_upstream():
    """Start loopback DNS servers answering from a records table; yields a starter returning the port."""
    from twisted.internet import reactor

    from kubernetai.chain import chain
    from kubernetai.listen import listen_udp_tcp
    from kubernetai.server import Block, KubeDNSServerFactory

    from .test_server import TableResolver

    ports = []

    def start(zone: str, records: dict) -> int:
        factory = KubeDNSServerFactory(blocks=[Block((".",), chain([TableResolver(zone, records)]))])
        pair = listen_udp_tcp(reactor, 0, factory.datagram_protocol, factory, "127.0.0.1")
        ports.append(pair)
        return pair.port

    yield start
    for p in ports:
        p.stopListening()


@pytest.fixture
def any_directive():
    """A directive check that accepts every name (grammar tests)."""
    return lambda name: name != "unknownthing"
