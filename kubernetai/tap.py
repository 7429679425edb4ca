"""``twistd kubernetai``: options and makeService."""

from __future__ import annotations

import sys
from typing import Any

from kubernetai import startup_gc

startup_gc.relax()  # before the imports below: what start-up makes lives as long as the process

from twisted.application.service import IService  # noqa: E402
from twisted.python import usage  # noqa: E402

from kubernetai import version_line, wire  # noqa: E402
from kubernetai.build import KubernetaiService, load  # noqa: E402
from kubernetai.corefile import CorefileError  # noqa: E402
from kubernetai.reload import Reloader, checksum  # noqa: E402

MAX_WORKERS = 64


class Options(usage.Options):
    synopsis = "[--config PATH] [--dns-port N] [--workers N] [--check]"
    longdesc = "Kubernetes DNS for several clusters at once, configured by a CoreDNS Corefile."
    optParameters = [
        ["config", "c", "./Corefile", "Path to the Corefile."],
        ["dns-port", "p", 53, "Port for server blocks whose keys give none (like CoreDNS's -dns.port).", int],
        [
            "workers",
            "w",
            1,
            "Processes answering on the same sockets (SO_REUSEPORT); each cluster is still watched once.",
            int,
        ],
    ]
    optFlags = [
        [
            "check",
            None,
            "Parse and validate the Corefile, print the server blocks, zones, ports and plugin chain, and exit.",
        ],
    ]

    def opt_version(self) -> None:
        """Print kubernetai's version (and Twisted's and Python's) and exit."""
        print(version_line())
        raise SystemExit(0)

    def postOptions(self) -> None:
        if not 0 <= self["dns-port"] <= 65535:
            raise usage.UsageError("--dns-port must be between 0 and 65535")
        if not 1 <= self["workers"] <= MAX_WORKERS:
            raise usage.UsageError(f"--workers must be between 1 and {MAX_WORKERS}")


def makeService(options: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        plan = load(options["config"], options["dns-port"], reactor)
    except CorefileError as e:
        print(f"kubernetai: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if options["check"]:
        print(plan.describe())
        print("Corefile OK")
        raise SystemExit(0)
    broken = wire.self_test()  # also loads what encoding needs, before twistd drops privileges (--uid)
    if broken:
        print(f"kubernetai: cannot encode answers: {broken}", file=sys.stderr)
        raise SystemExit(1)
    path, port = options["config"], options["dns-port"]
    service = KubernetaiService(
        plan,
        reactor,
        exit_on_listen_error=True,
        loader=lambda previous: load(path, port, reactor, previous=previous),
        freeze_gc=True,
        workers=options["workers"],
    )
    if options["workers"] > 1:
        from kubernetai.workers import WorkerPool

        pool = WorkerPool(service, options["workers"], path, port, reactor)
        pool.setServiceParent(service)
    Reloader(service, path).setServiceParent(service)  # SIGUSR1/SIGHUP, and the reload directive
    if plan.server.metrics is not None:
        plan.server.metrics.config_hash = checksum(path)
    return service
