"""RSS of ``twistd kubernetai`` reading a big cluster (issue 15): bench/api_memory.py [SERVICES] [--manifests].

A fake API server (tests/fakeapi.py, in this process) holds SERVICES Services
with an EndpointSlice of 10 endpoints each (10,000 → 100,000 endpoints);
a real twistd reads it with list+watch.  Prints the server's RSS after the
first sync and the peak (VmHWM) through a relist forced by a 410.  With
``--manifests`` the same objects are written to one manifest file instead,
and the peak is through a re-read of the file (touched).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from twisted.internet import reactor, task, threads  # noqa: E402

from tests.fakeapi import FakeCluster, listen, namespace, service, slice_  # noqa: E402


def status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))  # type: ignore[union-attr]


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 10000
    manifests = "--manifests" in sys.argv
    cluster = FakeCluster()
    objs = [namespace(f"ns{i}") for i in range(10)]
    for i in range(n):
        ns = f"ns{i % 10}"
        objs.append(service(f"svc{i}", ns, ip=f"10.{96 + i // 65000}.{i // 250 % 256}.{i % 250 + 1}"))
        objs.append(
            slice_(f"svc{i}", [f"10.{200 + i // 6500}.{i // 25 % 256}.{(i % 25) * 10 + k + 1}" for k in range(10)], ns)
        )
    cluster.load(objs)
    port = listen(cluster).getHost().port
    work = tempfile.mkdtemp()
    manifest = os.path.join(work, "cluster.json")
    if manifests:
        with open(manifest, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": objs}, f)
    source = "manifests cluster.json" if manifests else f"endpoint http://127.0.0.1:{port}"
    with open(os.path.join(work, "Corefile"), "w") as f:
        stanza = f" kubernetai cluster.local {{\n  {source}\n  startup_timeout 120s\n }}\n"
        f.write(".:0 {\n bind 127.0.0.1\n" + stanza + "}\n")
    log = os.path.join(work, "log")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    proc = subprocess.Popen(
        [twistd, "--pidfile=", "--logfile=-", "-n", "kubernetai", "--config", "Corefile"],
        cwd=work, stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip

    def synced_lines() -> int:
        return open(log).read().count(": synced (")

    def run():
        start = time.monotonic()
        while synced_lines() < 1 and time.monotonic() - start < 300:
            yield task.deferLater(reactor, 0.2, lambda: None)
        yield task.deferLater(reactor, 2, lambda: None)
        after_sync = status(proc.pid, "VmRSS")
        if manifests:
            os.utime(manifest)  # read again: the same objects, a new parse
        else:
            cluster.compact()
            cluster.drop_watches()  # the watches come back with an old resourceVersion: 410, relist
        yield task.deferLater(reactor, 15, lambda: None)
        peak, now = status(proc.pid, "VmHWM") / 1024, status(proc.pid, "VmRSS") / 1024
        print(
            f"{n} services, {n * 10} endpoints from {'manifests' if manifests else 'the API'}: RSS after sync "
            f"{after_sync / 1024:.0f} MB, peak through a {'re-read' if manifests else 'relist'} {peak:.0f} MB, "
            f"now {now:.0f} MB"
        )
        proc.terminate()
        yield threads.deferToThread(proc.wait, 10)
        reactor.stop()

    from twisted.internet import defer

    reactor.callWhenRunning(lambda: defer.inlineCallbacks(run)())
    reactor.run()


if __name__ == "__main__":
    main()
