"""Cached throughput under EndpointSlice churn, in process (issue 15): bench/churn.py [SERVICES] [SECONDS] [ROUNDS].

Queries a mix of names (A and SRV of Services, NXDOMAIN and NODATA) as fast
as one core allows for SECONDS, with and without 20 EndpointSlice changes a
second spread over the cluster; prints answers per second for each, the
ratio, and the same with the store-wide cache validity of before (to show
what fine-grained invalidation buys).  No sockets: the server's own work.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dns.message  # noqa: E402
from twisted.internet import task  # noqa: E402

from kubernetai.chain import chain  # noqa: E402
from kubernetai.cluster.kinds import convert  # noqa: E402
from kubernetai.cluster.options import KubernetesOptions  # noqa: E402
from kubernetai.cluster.resolver import KubernetesResolver  # noqa: E402
from kubernetai.cluster.store import ClusterStore  # noqa: E402
from kubernetai.server import Block, KubeDNSServerFactory  # noqa: E402
from tests.fakeapi import namespace, service, slice_  # noqa: E402


def build(n: int):
    store = ClusterStore()
    for kind in ("Service", "EndpointSlice", "Namespace"):
        store.require((kind, ""))
    objs = [namespace(f"ns{i}") for i in range(10)]
    for i in range(n):
        ns = f"ns{i % 10}"
        objs.append(
            service(
                f"svc{i}", ns, ip=f"10.{96 + i // 65000}.{i // 250 % 256}.{i % 250 + 1}", ports=[("http", "TCP", 80)]
            )
        )
        objs.append(slice_(f"svc{i}", [f"10.200.{i // 250 % 256}.{i % 250 + 1}"], ns, ports=[("http", "TCP", 80)]))
    for kind in ("Namespace", "Service", "EndpointSlice"):
        store.relist((kind, ""), [convert(kind, o) for o in objs if o["kind"] == kind])
    r = KubernetesResolver(KubernetesOptions(zones=("cluster.local.",)), store)
    return store, r, KubeDNSServerFactory(blocks=[Block((".",), chain([r]))], clock=task.Clock())


def query_mix(n: int, rnd: random.Random) -> list[bytes]:
    """A and SRV of 2,000 Services, NXDOMAIN and NODATA names beside them, as query bytes."""
    names = []
    for i in rnd.sample(range(n), min(n, 2000)):
        names.append((f"svc{i}.ns{i % 10}.svc.cluster.local", "A"))
        names.append((f"_http._tcp.svc{i}.ns{i % 10}.svc.cluster.local", "SRV"))
        names.append((f"nothing{i}.ns{i % 10}.svc.cluster.local", "A"))
        names.append((f"svc{i}.ns{i % 10}.svc.cluster.local", "TXT"))
    return [dns.message.make_query(q, t).to_wire() for q, t in names]


def run(n: int, seconds: float, churn: bool, coarse: bool) -> float:
    store, resolver, f = build(n)
    if coarse:
        resolver._narrow = lambda *a: None
        f.short_path = False  # its answers are as narrow as _narrow's: the general path alone shows "before"
    rnd = random.Random(1)
    queries = query_mix(n, rnd)
    for q in queries:  # warm
        f.handle_packet(q, ("127.0.0.1", 5), "udp")
    done = 0
    start = time.perf_counter()
    next_change = start + 0.05
    while True:
        for q in queries[done % len(queries) : done % len(queries) + 500]:
            f.handle_packet(q, ("127.0.0.1", 5), "udp")
        done += 500
        now = time.perf_counter()
        if churn and now >= next_change:
            i = rnd.randrange(n)
            ips = [f"10.201.{rnd.randrange(256)}.{rnd.randrange(1, 250)}"]
            obj = slice_(f"svc{i}", ips, f"ns{i % 10}", ports=[("http", "TCP", 80)])
            store.apply("MODIFIED", "EndpointSlice", convert("EndpointSlice", obj))
            next_change += 0.05
        if now - start >= seconds:
            return done / (now - start)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    for label, coarse in (("fine-grained (now)", False), ("store-wide (before)", True)):
        quiet, busy = [], []
        for _ in range(rounds):  # interleaved: this machine drifts between runs
            quiet.append(run(n, seconds, churn=False, coarse=coarse))
            busy.append(run(n, seconds, churn=True, coarse=coarse))
        q, b = statistics.median(quiet), statistics.median(busy)
        ratios = [x / y for x, y in zip(busy, quiet, strict=True)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{label}: {q:,.0f} answers/s without churn, {b:,.0f} with 20 changes/s (medians of {rounds}); "
            f"with/without per round: {each}; median {statistics.median(ratios):.2f}x"
        )


if __name__ == "__main__":
    main()
