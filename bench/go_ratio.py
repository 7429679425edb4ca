"""kubernetai against the Go kubernetai, the same cluster from the same API server (issue 15).

    bench/go_ratio.py [SERVICES] [SECONDS] [PAIRS]

bench/gen_cluster.py's cluster and query mix, served by a fake API server in
this process (tests/fakeapi.py); each server reads it with list+watch
(``endpoint``), is pinned to CPU 0 with dnsperf on CPU 1, gets one warm pass,
then SECONDS of dnsperf; pairs interleaved.  Prints queries/s, server CPU per
query and RSS after sync for each, and the ratios.  Needs dnsperf and the Go
kubernetai built by ../shared/seed/build.sh (``$SEED_BIN``, default
~/.cache/kubernetai-seed/coredns-kubernetai-cur); without it, says so and
exits 0.  Loopback only; bounded in time.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, cast

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import yaml  # noqa: E402
from twisted.internet import reactor, threads  # noqa: E402

from tests.fakeapi import FakeCluster, listen  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GO = os.environ.get("SEED_BIN", os.path.expanduser("~/.cache/kubernetai-seed")) + "/coredns-kubernetai-cur"


def free_port() -> int:
    """A port for a server that cannot take 0 (CoreDNS); bench only, loopback, retried by the caller."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]


def run_one(kind: str, api: int, work: str, seconds: int) -> tuple[float, float, int]:
    port = free_port()
    conf = os.path.join(work, f"Corefile.{kind}")
    with open(conf, "w") as f:
        f.write(
            f".:{port} {{\n    bind 127.0.0.1\n    kubernetai cluster.local {{\n"
            f"        endpoint http://127.0.0.1:{api}\n    }}\n}}\n"
        )
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    ours = [twistd, "--pidfile=", "--logfile=-", "-n", "kubernetai", "--config", conf]
    cmd = ours if kind == "python" else [GO, "-conf", conf]
    log = open(os.path.join(work, f"{kind}.log"), "w")
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        q = dns.message.make_query("svc0.ns0.svc.cluster.local", "A")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{kind} exited: {open(log.name).read()[-2000:]}")
            try:
                if dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5).answer:
                    break
            except (dns.exception.Timeout, OSError):
                pass
            time.sleep(0.2)
        time.sleep(2)  # every resource listed, not only Services
        rss = rss_kib(proc.pid)
        queries = os.path.join(work, "queries.txt")
        perf = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries]
        perf += ["-c", "4", "-q", "200"]
        subprocess.run([*perf, "-n", "1"], capture_output=True, timeout=300)
        before = ticks(proc.pid)
        out = subprocess.run([*perf, "-l", str(seconds)], capture_output=True, text=True, timeout=seconds + 60).stdout
        used = (ticks(proc.pid) - before) / os.sysconf("SC_CLK_TCK")
        qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
        return qps, used * 1e6 / max(done, 1), rss
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if not os.access(GO, os.X_OK):
        print(f"go ratio: skipped ({GO} not built; run ../shared/seed/build.sh)")
        return
    work = tempfile.mkdtemp()
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen_cluster.py"), work, str(n)], check=True)
    with open(os.path.join(work, "cluster.yaml")) as f:
        objects = [o for doc in yaml.safe_load_all(f) for o in (doc.get("items") or [doc] if doc else [])]
    cluster = FakeCluster()
    cluster.load(objects)
    api = listen(cluster).getHost().port

    def measure() -> None:
        try:
            results: dict[str, list[tuple[float, float, int]]] = {"python": [], "go": []}
            for i in range(pairs):
                for kind in ("python", "go"):
                    qps, cpu, rss = run_one(kind, api, work, seconds)
                    results[kind].append((qps, cpu, rss))
                    print(f"pair {i + 1}, {kind}: {qps:,.0f} q/s, {cpu:.1f} us CPU/query, RSS {rss / 1024:.0f} MB")
            med = {k: [statistics.median(x[j] for x in v) for j in range(3)] for k, v in results.items()}
            print(
                f"go ratio (medians): kubernetai {med['python'][0]:,.0f} q/s vs Go {med['go'][0]:,.0f} q/s = "
                f"{med['python'][0] / med['go'][0]:.2f}x the rate, {med['python'][1] / med['go'][1]:.2f}x the CPU per "
                f"query, {med['python'][2] / med['go'][2]:.2f}x the RSS"
            )
        finally:
            cast(Any, reactor).callFromThread(cast(Any, reactor).stop)

    cast(Any, reactor).callWhenRunning(lambda: threads.deferToThread(measure))
    cast(Any, reactor).run()


if __name__ == "__main__":
    main()
