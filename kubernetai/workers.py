"""``twistd kubernetai --workers N``: N processes answer on the same sockets; each cluster is watched once.

Python answers on one core per process.  The primary (the twistd process)
binds every DNS listener with ``SO_REUSEPORT`` and makes N-1 more sockets on
each port (build.py, listen.py) before dropping privileges; the kernel
spreads queries over all of them.  It starts N-1 workers
(``python -m kubernetai.worker``), hands each its sockets and one end of a
socket pair, and feeds it every stanza's store through that pair
(replica.py): a snapshot first, then each change as it is made.  So the API
servers see one list+watch per resource whatever N is, and a worker's
answers change when the primary's do.

Only the primary serves HTTP (health, ready, metrics): workers send their
query counts every second and the primary's /metrics adds them up.  A
worker that dies is started again (its sockets stay open in the primary
meanwhile, so the queries the kernel gives it wait instead of being lost);
a reload starts a new worker per slot and stops the old one once the new
one has synced.  A worker whose primary is gone stops.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import socket
import sys
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from kubernetai.cluster.replica import Journal, snapshot_ops

__all__ = ["WorkerPool", "Channel", "MAX_MESSAGE"]

log = Logger()

# One message: a batch of store ops (a snapshot is sent in batches of replica.BATCH_OBJECTS objects).
MAX_MESSAGE = 64 * 1024 * 1024
# What a worker may leave unread before it is killed and restarted (it then gets a fresh snapshot).
MAX_BACKLOG = 256 * 1024 * 1024
METER_EVERY = 1.0
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_GRACE = 5.0


class Channel(Int32StringReceiver):
    """Length-prefixed pickles over a socket pair between the primary and one worker (trusted: our child)."""

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, on_message: Any, on_lost: Any = None) -> None:
        self.on_message = on_message
        self.on_lost = on_lost

    def stringReceived(self, data: bytes) -> None:
        self.on_message(pickle.loads(data))

    def send(self, message: Any) -> None:
        self.sendString(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def lengthLimitExceeded(self, length: int) -> None:
        log.error("worker channel: a message of {n} bytes is over the limit; closing", n=length)
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.on_lost is not None:
            self.on_lost()


def _unsent(transport: Any) -> int:
    """Bytes written to a Twisted stream transport and not yet sent (its buffer and pending writes)."""
    return len(getattr(transport, "dataBuffer", b"")) + int(getattr(transport, "_tempDataLen", 0))


class _ChannelFactory(protocol.Factory):
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def buildProtocol(self, addr: Any) -> Channel:
        return self.channel


def adopt_channel(reactor: Any, sock: socket.socket, channel: Channel) -> Channel:
    """Serve ``channel`` on one end of a socket pair (the reactor keeps its own copy of the descriptor)."""
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, _ChannelFactory(channel))
    sock.close()
    return channel


class _Output(protocol.ProcessProtocol):
    """A worker process: its output goes to our log line by line; its end is the pool's business."""

    def __init__(self, pool: WorkerPool, worker: Worker) -> None:
        self.pool = pool
        self.worker = worker
        self.partial = b""

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > 65536:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            if line.strip():
                log.info("worker {n}: {line}", n=self.worker.slot, line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Any) -> None:
        self.pool._ended(self.worker, reason)


class Worker:
    """One worker process of a slot (1..N-1), and what the primary knows of it."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.channel: Channel | None = None
        self.process: Any = None
        self.ready = False
        self.started = 0.0
        self.meters: dict[str, tuple[dict, dict]] = {}  # server label → its last cumulative counts
        self.caches: dict[str, dict[str, int]] = {}  # server label → its answer cache's figures
        self.ended: defer.Deferred[None] = defer.Deferred()


class WorkerPool(Service):
    """The primary's side: starts, feeds, replaces and stops the workers of a KubernetaiService."""

    name = "workers"

    def __init__(self, service: Any, count: int, config: str, dns_port: int, reactor: Any) -> None:
        self.service = service
        self.count = count
        self.config = os.path.abspath(config)
        self.dns_port = dns_port
        self.reactor = reactor
        self.workers: dict[int, Worker] = {}  # slot → the worker serving it
        self.retiring: list[Worker] = []  # replaced on a reload, stopped once their successor is ready
        self.failures: dict[int, int] = {}
        self.restarts = 0
        self._stopping = False
        self._down: dict[str, float | None] = {}  # what the workers were last told of each stanza's watches
        self._connection_states: Any = None
        self._fed: list[Any] = []  # the stanzas whose stores are journalled to the workers
        service.adopted_hooks.append(self._reloaded)

    # ------------------------------------------------------------ life cycle
    def startService(self) -> None:
        super().startService()
        self._attach(self.service.plan)
        for slot in range(1, self.count):
            self._spawn(slot)
        self._connection_states = task.LoopingCall(self._tell_down_since)
        self._connection_states.clock = self.reactor
        self._connection_states.start(METER_EVERY, now=False)

    def _tell_down_since(self) -> None:
        """Each stanza's watch state, for k8s_external's ``stale`` (a worker has no watch to judge by)."""
        for stanza in self.service.plan.server.clusters:
            name, down = stanza.opts.name(), stanza.down_since()
            if self._down.get(name, None) != down:
                self._down[name] = down
                self._to_all(("down", name, down))

    def stopService(self) -> defer.Deferred:
        super().stopService()
        self._stopping = True
        if self._connection_states is not None and self._connection_states.running:
            self._connection_states.stop()
        everyone = self._live()
        for w in everyone:
            self._terminate(w)
        return defer.DeferredList([w.ended for w in everyone])

    def _reloaded(self, plan: Any) -> None:
        """A new configuration: feed its stanzas, and replace every worker (it builds from the Corefile)."""
        self._attach(plan)
        for slot in range(1, self.count):
            old = self.workers.get(slot)
            if old is not None:
                self.retiring.append(old)
            self._spawn(slot)

    # ------------------------------------------------------------ feeding
    def _attach(self, plan: Any) -> None:
        plan.server.process_status["workers"] = self.status
        if "workers" not in plan.server.readiness.checks:  # /ready: every worker serving its copy
            plan.server.readiness.add("workers", self._all_ready)
        # A stanza the new plan replaced (the same name, another store) must send nothing more.
        for stanza in self._fed:
            if stanza not in plan.server.clusters:
                stanza.store.journal = None
        self._fed = list(plan.server.clusters)
        for stanza in plan.server.clusters:
            if stanza.store.journal is None:
                stanza.store.journal = Journal(functools.partial(self._broadcast, stanza.opts.name()))

    def _all_ready(self) -> bool:
        """Every slot has a worker serving its copy (a slot waiting to restart one is not ready)."""
        return len(self.workers) == self.count - 1 and all(w.ready for w in self.workers.values())

    def _broadcast(self, name: str, batch: list[tuple]) -> None:
        self._to_all(("ops", name, batch))

    def _to_all(self, message: tuple) -> None:
        """One pickle, sent to every live worker; a worker that stopped reading is killed, not buffered for."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        for w in self._live():
            if w.channel is None or w.channel.transport is None:
                continue
            if _unsent(w.channel.transport) > MAX_BACKLOG:
                log.error(
                    "kubernetai: worker {n} has not read {mb} MiB of changes; killing it (it restarts with a snapshot)",
                    n=w.slot,
                    mb=MAX_BACKLOG >> 20,
                )
                cast(Any, w.channel.transport).abortConnection()
                w.channel = None
                if w.process is not None and w.process.pid is not None:
                    w.process.signalProcess("KILL")
                continue
            w.channel.sendString(data)

    def _live(self) -> list[Worker]:
        return list(self.workers.values()) + self.retiring

    def _bootstrap(self, w: Worker) -> None:
        assert w.channel is not None
        for stanza in self.service.plan.server.clusters:
            name = stanza.opts.name()
            for batch in snapshot_ops(stanza.store):
                w.channel.send(("ops", name, batch))
            w.channel.send(("down", name, stanza.down_since()))

    # ------------------------------------------------------------ processes
    def _spawn(self, slot: int) -> None:
        w = Worker(slot)
        w.started = self.reactor.seconds()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r", 3: theirs.fileno()}
        listeners = []
        next_fd = 4
        for (addr, port), shared in self.service.shared_sockets.items():
            if len(shared) < slot:
                continue
            s = shared[slot - 1]
            child_fds[next_fd], child_fds[next_fd + 1] = s.udp.fileno(), s.tcp.fileno()
            listeners.append([addr, port, next_fd, next_fd + 1, s.family])
            next_fd += 2
        spec = {
            "config": self.config,
            "dns_port": self.dns_port,
            "slot": slot,
            "channel": 3,
            "listeners": listeners,
        }
        try:
            w.process = self.reactor.spawnProcess(
                _Output(self, w),
                sys.executable,
                [sys.executable, "-m", "kubernetai.worker", json.dumps(spec)],
                env=os.environ.copy(),
                path=os.getcwd(),
                childFDs=child_fds,
            )
        finally:
            theirs.close()
        w.process.closeStdin()
        w.channel = adopt_channel(self.reactor, ours, Channel(lambda m: self._received(w, m)))
        self.workers[slot] = w
        # The text the running plan was built from, not the file: it may have changed (or broken) since.
        w.channel.send(("corefile", self.service.plan.text))
        self._bootstrap(w)
        log.info("kubernetai: worker {n} started (pid {pid})", n=slot, pid=w.process.pid)

    def _received(self, w: Worker, message: Any) -> None:
        kind = message[0]
        if kind == "ready":
            w.ready = True
            for old in [o for o in self.retiring if o.slot == w.slot]:
                self.retiring.remove(old)
                self._terminate(old)
        elif kind == "meter":
            w.meters, w.caches = message[1], message[2]
            self._show_meters()

    def _show_meters(self) -> None:
        metrics = self.service.plan.server.metrics
        if metrics is None:
            return
        for server, meter in metrics.meters.items():
            meter.workers = {w.slot: w.meters[server] for w in self._live() if server in w.meters}

    def _terminate(self, w: Worker) -> None:
        if w.process is not None and w.process.pid is not None:
            w.process.signalProcess("TERM")

            def kill() -> None:
                if w.process.pid is not None:
                    w.process.signalProcess("KILL")

            timer = self.reactor.callLater(STOP_GRACE, kill)

            def stopped(result: object) -> object:
                if timer.active():
                    timer.cancel()
                return result

            w.ended.addBoth(stopped)

    def _ended(self, w: Worker, reason: Any) -> None:
        # What it counted stays counted: its last figures join the primary's own.
        metrics = self.service.plan.server.metrics
        if metrics is not None:
            for server, (counts, sums) in w.meters.items():
                metrics.meter(server).absorb(counts, sums)
        w.meters = {}
        if w in self.retiring:
            self.retiring.remove(w)
        self._show_meters()
        current = self.workers.get(w.slot) is w
        if current and not self._stopping:
            del self.workers[w.slot]
            lived = self.reactor.seconds() - w.started
            n = 0 if lived > 60 else self.failures.get(w.slot, 0)
            self.failures[w.slot] = n + 1
            delay = RESTART_DELAYS[min(n, len(RESTART_DELAYS) - 1)]
            log.warn(
                "kubernetai: worker {slot} ended ({why}); starting it again in {d:.0f}s",
                slot=w.slot,
                why=reason.getErrorMessage(),
                d=delay,
            )
            self.restarts += 1
            self.reactor.callLater(delay, self._respawn, w.slot)
        w.ended.callback(None)

    def _respawn(self, slot: int) -> None:
        if not self._stopping and slot not in self.workers:
            self._spawn(slot)

    def status(self) -> dict[str, Any]:
        """For /status: each slot's pid and state."""
        return {
            "count": self.count,
            "restarts": self.restarts,
            "workers": [
                {
                    "slot": w.slot,
                    "pid": w.process.pid if w.process else None,
                    "ready": w.ready,
                    "answer_cache": w.caches,
                }
                for w in sorted(self._live(), key=lambda w: w.slot)
            ],
        }
