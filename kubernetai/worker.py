"""A ``--workers`` process: ``python -m kubernetai.worker SPEC`` (started by workers.py, never by hand).

It builds the same Corefile as the primary, in worker mode: stanzas are
copies fed through the channel (replica.py), no HTTP listener, no watch, no
credentials read.  It serves the sockets the primary made for it and stops
when the primary goes away.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

from twisted.internet import defer, task
from twisted.logger import FileLogObserver, LogLevel, formatEvent, globalLogBeginner

from kubernetai.cluster.replica import apply_ops
from kubernetai.workers import METER_EVERY, Channel, adopt_channel


def _line(event: dict) -> str:
    level = event.get("log_level", LogLevel.info)
    text = formatEvent(event)
    if event.get("log_failure") is not None:
        text += "\n" + event["log_failure"].getTraceback()
    namespace = event.get("log_namespace", "-")
    return f"[{'-' if namespace == 'log_legacy' else namespace}#{level.name}] {text}\n"


def run(spec: dict[str, Any]) -> None:
    from twisted.internet import reactor

    from kubernetai.build import KubernetaiService, load

    globalLogBeginner.beginLoggingTo([FileLogObserver(sys.stderr, _line)], redirectStandardIO=False)
    plan = load(spec["config"], spec["dns_port"], reactor, worker=True)
    inherited = {(a, p): (udp, tcp, family) for a, p, udp, tcp, family in spec["listeners"]}
    service = KubernetaiService(plan, reactor, inherited=inherited, freeze_gc=True)
    stanzas = {stanza.opts.name(): stanza for stanza in plan.server.clusters}

    def received(message: Any) -> None:
        stanza = stanzas.get(message[1]) if message[0] in ("ops", "down") else None
        if stanza is None:
            return
        if message[0] == "ops":
            apply_ops(stanza.store, message[2])
        else:
            stanza.replica_down_since = message[2]

    def primary_gone() -> None:
        if reactor.running:
            reactor.stop()

    channel = adopt_channel(reactor, socket.socket(fileno=spec["channel"]), Channel(received, on_lost=primary_gone))

    def send_meters() -> None:
        metrics = plan.server.metrics
        meters = {s: (m.counts, m.sums) for s, m in metrics.meters.items()} if metrics is not None else {}
        caches = {
            s: {"entries": len(c), "hits": c.hits, "misses": c.misses, "evictions": c.evictions}
            for s, c in plan.server.answer_caches.items()
        }
        channel.send(("meter", meters, caches))

    meters = task.LoopingCall(send_meters)
    meters.clock = reactor

    def serving() -> None:
        waits = [stanza.when_synced() for stanza in plan.server.clusters]
        defer.gatherResults(waits).addCallback(lambda _: channel.send(("ready",)))
        meters.start(METER_EVERY, now=False)

    reactor.callWhenRunning(service.startService)
    reactor.callWhenRunning(serving)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def main() -> None:
    run(json.loads(sys.argv[1]))


if __name__ == "__main__":
    main()
