"""CPU per cached answer in process, without and with `prometheus` (issue 13): bench/metrics_cost.py.

Five interleaved rounds of 200,000 cached answers each; prints the medians in
microseconds.  No sockets: this is the cost the hot path adds, which
bench/run.sh (dnsperf, sockets) shows diluted in the per-packet cost.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dns.message  # noqa: E402
from twisted.internet import task  # noqa: E402

from kubernetai.build import load_text  # noqa: E402
from kubernetai.cluster.kinds import convert  # noqa: E402
from kubernetai.server import KubeDNSServerFactory  # noqa: E402
from tests.fakeapi import namespace, service  # noqa: E402


def make(metered: bool) -> KubeDNSServerFactory:
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "c.yaml"), "w") as out:
        out.write("")
    prom = "prometheus 127.0.0.1:0" if metered else ""
    plan = load_text(f". {{\n {prom}\n kubernetai cluster.local {{\n  manifests {d}/c.yaml\n }}\n}}", 53, task.Clock())
    f = KubeDNSServerFactory(blocks=[plan.blocks[0].block])
    if metered:
        f.meter = plan.server.metrics.meter("dns://:53")
    store = plan.server.clusters[0].store
    for obj in (namespace("ns"), service("web", "ns")):
        store.apply("ADDED", obj["kind"], convert(obj["kind"], obj))
    for scope in list(store.required):
        store.relist(scope, list(store.objects.get(scope[0], {}).values()))
    return f


def main() -> None:
    queries = [dns.message.make_query("web.ns.svc.cluster.local", "A").to_wire() for _ in range(64)]
    results: dict[bool, list[float]] = {False: [], True: []}
    n = 200_000
    for _ in range(5):
        for metered in (False, True):
            f = make(metered)
            for q in queries:
                f.handle_packet(q, ("127.0.0.1", 5), "udp")
            t = time.process_time()
            for i in range(n):
                f.handle_packet(queries[i & 63], ("127.0.0.1", 5), "udp")
            results[metered].append((time.process_time() - t) / n * 1e6)
    without, with_ = (sorted(results[k])[2] for k in (False, True))
    extra = with_ - without
    print(f"cached answer, in process: {without:.2f} us without prometheus, {with_:.2f} us with (+{extra:.2f} us)")


if __name__ == "__main__":
    main()
