"""Development tool (not collected by pytest): our k8s_external against CoreDNS's, answer by answer.

    python tests/compare_external.py --coredns PATH --fakekube ../shared/tools/fakekube.py

Serves one cluster (Services with externalIPs, load balancer IPs and a hostname, a headless
Service with named endpoints, a Service with nothing to publish) from a fake API server, runs
plain CoreDNS (``kubernetes`` + ``k8s_external example.com in-addr.arpa { headless }``) and our
twistd (``kubernetai`` + the same ``k8s_external``) against it on loopback, asks both every name
of the list in 7 types, and prints each difference.  SOA serials are left out of the comparison
(CoreDNS 1.15 answers 0 until a Service with external addresses changes; we answer the time of
the last change) and so is letter case.  Exit status 1 when anything differs.  ``make
compare-external`` builds CoreDNS 1.15 from the Go module cache and runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402

from tests.fakeapi import namespace, service, slice_  # noqa: E402

HTTP = [("http", "TCP", 80)]
OBJECTS = [
    namespace("testns"),
    namespace("other"),
    service("svc1", "testns", ip="10.0.0.1", ports=HTTP, external_ips=["1.2.3.4"]),
    service("svc6", "testns", ip="10.0.0.3", ports=HTTP, external_ips=["1:2::5"]),
    service(
        "svc11", "testns", ip="10.0.0.4", ports=[*HTTP, ("dns", "UDP", 53)], type="LoadBalancer",
        ingress=[{"ip": "2.3.4.5"}, {"ip": "2.3.4.6"}],
    ),
    service("svc12", "testns", ip="10.0.0.5", ports=HTTP, type="LoadBalancer", ingress=[{"hostname": "dummy.hostname"}]),
    service("svc-headless", "testns", ip=None, ports=HTTP),
    slice_("svc-headless", ["1.2.3.4", "1.2.3.5"], "testns", hostnames=["endpoint-svc-0", "endpoint-svc-1"], ports=HTTP),
    service("plain", "testns", ip="10.0.0.9", ports=HTTP),
    service("both", "other", ip="10.0.0.10", ports=[(None, "TCP", 8080)], external_ips=["5.6.7.8", "5.6.7.8"]),
]  # fmt: skip
NAMES = [
    "svc1.testns.example.com.", "svc6.testns.example.com.", "svc11.testns.example.com.", "svc12.testns.example.com.",
    "svc-headless.testns.example.com.", "endpoint-svc-0.svc-headless.testns.example.com.",
    "endpoint-svc-1.svc-headless.testns.example.com.", "nope.svc-headless.testns.example.com.",
    "_http._tcp.svc1.testns.example.com.", "_dns._udp.svc11.testns.example.com.", "_http._udp.svc11.testns.example.com.",
    "*._not-udp-or-tcp.svc1.testns.example.com.", "testns.example.com.", "nons.example.com.",
    "svc0.testns.example.com.", "plain.testns.example.com.", "example.com.", "dns.example.com.",
    "ns1.dns.example.com.", "x.dns.example.com.", "a.b.dns.example.com.", "4.3.2.1.in-addr.arpa.",
    "8.7.6.5.in-addr.arpa.", "9.9.9.9.in-addr.arpa.", "both.other.example.com.", "_._tcp.both.other.example.com.",
    "x.svc1.testns.example.com.", "a.b.c.svc1.testns.example.com.", "SVC1.TestNS.Example.COM.",
]  # fmt: skip
TYPES = ["A", "AAAA", "SRV", "PTR", "SOA", "NS", "TXT"]
COREFILE = """.:{port} {{
    bind 127.0.0.1
    {plugin} cluster.local {{
        endpoint {api}
    }}
    k8s_external example.com in-addr.arpa {{
        headless
    }}
}}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def normal(r: dns.message.Message | None) -> object:
    if r is None:
        return "no answer"

    def text(rrset: object) -> str:
        return re.sub(r"(soa \S+ \S+) \d+", r"\1 SERIAL", rrset.to_text().lower())  # type: ignore[attr-defined]

    return (
        dns.rcode.to_text(r.rcode()),
        bool(r.flags & dns.flags.AA),
        sorted(text(x) for x in r.answer),
        sorted(text(x) for x in r.authority),
        sorted(text(x) for x in r.additional),
    )


def ask(port: int, name: str, rdtype: str) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=2)
    except Exception:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coredns", required=True, help="a plain CoreDNS binary (with kubernetes and k8s_external)")
    parser.add_argument("--fakekube", required=True, help="../shared/tools/fakekube.py")
    args = parser.parse_args()
    work = tempfile.mkdtemp()
    with open(os.path.join(work, "objects.json"), "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": OBJECTS}, f)
    procs = []
    try:
        kube = subprocess.Popen(
            [sys.executable, args.fakekube, "--port", "0", "--objects", os.path.join(work, "objects.json")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(kube)
        assert kube.stdout is not None
        api = json.loads(kube.stdout.readline())["url"]
        ports = {}
        for kind in ("ours", "coredns"):
            ports[kind] = free_port()
            conf = os.path.join(work, f"Corefile.{kind}")
            with open(conf, "w") as f:
                plugin = "kubernetai" if kind == "ours" else "kubernetes"
                f.write(COREFILE.format(port=ports[kind], plugin=plugin, api=api))
            twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--pidfile="]
            cmd = [*twistd, "-n", "kubernetai", "--config", conf] if kind == "ours" else [args.coredns, "-conf", conf]
            log = open(os.path.join(work, f"{kind}.log"), "w")
            procs.append(subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(ask(p, "svc1.testns.example.com.", "A") for p in ports.values()):
            time.sleep(0.2)
        differences = 0
        for name in NAMES:
            for rdtype in TYPES:
                ours, theirs = normal(ask(ports["ours"], name, rdtype)), normal(ask(ports["coredns"], name, rdtype))
                if ours != theirs:
                    differences += 1
                    print(f"--- {name} {rdtype}\n  ours:    {ours}\n  coredns: {theirs}")
        print(f"{differences} differences in {len(NAMES) * len(TYPES)} queries")
        return 1 if differences else 0
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    sys.exit(main())
