"""Write a synthetic cluster (N ClusterIP services, N/10 headless with 5 endpoints) and a dnsperf query file.

``--client-pod``: also a running Pod at 127.0.0.1 in namespace ns0 (the
client of an ``autopath`` block, bench/run.sh AUTOPATH=on|off) and
``queries-ns0.txt``, the queries about ns0, the names that client's search
path leads to.
"""

from __future__ import annotations

import random
import sys

import yaml


def main(out_dir: str, n: int, client_pod: bool = False) -> None:
    objs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{i}"}} for i in range(10)]
    queries = []
    for i in range(n):
        ns = f"ns{i % 10}"
        ip = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc{i}", "namespace": ns},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": ip,
                    "clusterIPs": [ip],
                    "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
                },
            }
        )
        queries.append(f"svc{i}.{ns}.svc.cluster.local A")
        if i % 10 == 0:
            name = f"hdl{i}"
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "type": "ClusterIP",
                        "clusterIP": "None",
                        "clusterIPs": ["None"],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
                    },
                }
            )
            objs.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": f"{name}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "endpoints": [
                        {"addresses": [f"10.200.{(i // 256) % 256}.{(i + k) % 256}"], "conditions": {"ready": True}}
                        for k in range(5)
                    ],
                    "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
                }
            )
            queries.append(f"{name}.{ns}.svc.cluster.local A")
            queries.append(f"_http._tcp.{name}.{ns}.svc.cluster.local SRV")
        if i % 7 == 0:
            queries.append(f"missing{i}.{ns}.svc.cluster.local A")
    if client_pod:
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "client", "namespace": "ns0"},
                "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]},
            }
        )
    with open(f"{out_dir}/cluster.yaml", "w") as f:
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objs}, f)
    random.Random(1).shuffle(queries)
    with open(f"{out_dir}/queries.txt", "w") as f:
        f.write("\n".join(queries) + "\n")
    if client_pod:
        with open(f"{out_dir}/queries-ns0.txt", "w") as f:
            f.write("\n".join(q for q in queries if ".ns0.svc." in q) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--client-pod" in sys.argv[3:])
