"""A stock Twisted DNS server answering one Kubernetes cluster's names beside a zone file.

    python etc/examples/embed.py --manifests etc/demo/cluster-east.yaml
    python etc/examples/embed.py --kubeconfig ~/.kube/config --context prod
    dig @127.0.0.1 -p 10053 web.default.svc.cluster.local
    dig @127.0.0.1 -p 10053 www.example.test

kubernetai's resolver is one authority among others: names it does not know
fall through (``fallthrough``) to the next one, here a zone file, and
answers are cached by Twisted's ``CacheResolver``; it starts answering once
the cluster has synced.  Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from twisted.internet import reactor
from twisted.names import authority, cache, dns, server
from twisted.python import log
from twisted.python.failure import Failure

from kubernetai.cluster import ClusterConfigError, connect
from kubernetai.listen import listen_udp_tcp

ZONE_FILE = """\
zone = [
    SOA("example.test", mname="ns.example.test", rname="hostmaster.example.test", serial=1,
        refresh=3600, retry=600, expire=86400, minimum=60),
    A("www.example.test", "192.0.2.80"),
]
"""


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", nargs="*", default=[], help="a snapshot cluster: YAML/JSON files or directories")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--endpoint", help="API server URL (no credentials: use a kubeconfig for those)")
    parser.add_argument("--port", type=int, default=10053, help="UDP and TCP port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    try:
        cluster = connect(
            ["cluster.local"],
            manifests=args.manifests,
            kubeconfig=args.kubeconfig,
            context=args.context,
            endpoint=args.endpoint,
            fallthrough=True,  # names it does not have go on to the zone file
            ttl=30,
        )
    except ClusterConfigError as e:
        sys.exit(f"embed.py: {e}")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(ZONE_FILE)
    zone = authority.PySourceAuthority(f.name)
    # Stock Twisted: authorities are asked in order; a cache in front of nothing else.
    factory = server.DNSServerFactory(authorities=[cluster, zone], caches=[cache.CacheResolver()])
    cluster.startService()  # list+watch (or read the files)

    def serve(_: None) -> None:
        ports = listen_udp_tcp(reactor, args.port, lambda: dns.DNSDatagramProtocol(factory), factory, "127.0.0.1")
        print(f"embed.py: serving on 127.0.0.1 port {ports.port} (udp+tcp)", flush=True)

    def failed(reason: Failure) -> None:
        log.err(reason)
        reactor.stop()

    cluster.when_synced().addCallback(serve).addErrback(failed)
    reactor.addSystemEventTrigger("before", "shutdown", cluster.stopService)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
