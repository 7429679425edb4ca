"""The per-core ceiling (issue 15): a Twisted UDP protocol answering from a dict of prepared answers.

``bench/ceiling.py WORKDIR PORT [--sendto]`` reads WORKDIR's cluster.yaml and
queries.txt (from gen_cluster.py), computes each query's answer once with
kubernetai's own resolver, then serves them on 127.0.0.1:PORT: one dict
lookup and one write per datagram, nothing else.  ``CEILING=1 bench/run.sh``
runs dnsperf against it, to compare kubernetai's cached path with what
Python and Twisted can do at all.

The issue's ceiling writes with Twisted's ``Port.write``, which checks the
address (``inet_pton``, twice) on every datagram; kubernetai's UDP hits go
straight to the socket's ``sendto`` instead.  ``--sendto``
(``CEILING=sendto bench/run.sh``) gives the ceiling the same shortcut, so
the comparison can be made both ways.
"""

from __future__ import annotations

import os
import sys
from typing import Any, cast

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dns.message  # noqa: E402
import yaml  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

from kubernetai.chain import chain  # noqa: E402
from kubernetai.cluster.kinds import convert  # noqa: E402
from kubernetai.cluster.options import KubernetesOptions  # noqa: E402
from kubernetai.cluster.resolver import KubernetesResolver  # noqa: E402
from kubernetai.cluster.store import ClusterStore  # noqa: E402
from kubernetai.server import Block, KubeDNSServerFactory  # noqa: E402


class Ceiling(DatagramProtocol):
    noisy = False

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        body = self.answers.get(data[2:])
        if body is not None and self.transport is not None:
            self.transport.write(data[:2] + body, addr)


class SendtoCeiling(Ceiling):
    """The same, written with the socket's own sendto (as kubernetai's UDP hits are)."""

    def startProtocol(self) -> None:
        self.sendto = cast(Any, self.transport).socket.sendto

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        body = self.answers.get(data[2:])
        if body is not None:
            self.sendto(data[:2] + body, addr)


def main(work: str, port: int, sendto: bool = False) -> None:
    with open(os.path.join(work, "cluster.yaml")) as f:
        items = yaml.safe_load(f)["items"]
    store = ClusterStore()
    kinds = ("Namespace", "Service", "EndpointSlice")
    for kind in kinds:
        store.require((kind, ""))
    for kind in kinds:
        store.relist((kind, ""), [convert(kind, o) for o in items if o["kind"] == kind])
    resolver = KubernetesResolver(KubernetesOptions(zones=("cluster.local.",)), store)
    factory = KubeDNSServerFactory(blocks=[Block((".",), chain([resolver]))])
    answers = {}
    with open(os.path.join(work, "queries.txt")) as f:
        for line in f:
            name, qtype = line.split()
            q = dns.message.make_query(name, qtype).to_wire()
            got: list[Any] = []
            factory.handle_packet(q, ("127.0.0.1", 1), "udp").addBoth(got.append)  # fires at once: no I/O
            answers[q[2:]] = got[0][2:]
    protocol = SendtoCeiling(answers) if sendto else Ceiling(answers)
    cast(Any, reactor).listenUDP(port, protocol, interface="127.0.0.1")
    print(f"ceiling: {len(answers)} answers on 127.0.0.1 port {port}{' (sendto)' if sendto else ''}", flush=True)
    cast(Any, reactor).run()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--sendto" in sys.argv[3:])
