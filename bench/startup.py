"""Seconds from starting ``twistd kubernetai`` to its first answer (issue 15): bench/startup.py [RUNS] [--floor].

A small snapshot cluster (etc/demo's east) on 127.0.0.1, an OS-picked port
read from the log, a query every 5 ms; the median of RUNS (default 5).
``--floor`` also times, interleaved, ``twistd -ny bench/startup_floor.tac``:
a twistd DNS server with no kubernetai code, what Twisted itself takes here.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import dns.exception
import dns.message
import dns.query

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def once(floor: bool = False) -> float:
    work = tempfile.mkdtemp()
    try:
        shutil.copy(os.path.join(ROOT, "etc", "demo", "cluster-east.yaml"), work)
        with open(os.path.join(work, "Corefile"), "w") as f:
            f.write(".:0 {\n bind 127.0.0.1\n kubernetai cluster.local {\n  manifests cluster-east.yaml\n }\n}\n")
        log = os.path.join(work, "log")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if floor:
            args = [twistd, "--pidfile=", "--logfile=-", "-ny", os.path.join(ROOT, "bench", "startup_floor.tac")]
        else:
            args = [twistd, "--pidfile=", "--logfile=-", "-n", "kubernetai", "--config", "Corefile"]
        start = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(args, cwd=work, stdout=out)
        try:
            port = None
            q = dns.message.make_query("web.default.svc.cluster.local", "A")
            while time.monotonic() - start < 20:
                if port is None:
                    found = re.search(r"port (\d+) \(udp\+tcp\)", open(log).read())
                    port = int(found.group(1)) if found else None
                    if port is None:
                        time.sleep(0.005)
                        continue
                try:
                    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.05)
                    if r.answer:
                        return time.monotonic() - start
                except dns.exception.Timeout:
                    pass
                time.sleep(0.005)
            raise SystemExit("no answer within 20 s")
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(work)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    runs = int(args[0]) if args else 5
    floor = "--floor" in sys.argv
    times, floors = [], []
    for _ in range(runs):
        times.append(once())
        if floor:
            floors.append(once(floor=True))
    each = ", ".join(f"{t:.3f}" for t in times)
    print(f"first answer after start: median {statistics.median(times):.3f} s (runs: {each})")
    if floor:
        each = ", ".join(f"{t:.3f}" for t in floors)
        print(f"twistd DNS floor (bench/startup_floor.tac): median {statistics.median(floors):.3f} s (runs: {each})")


if __name__ == "__main__":
    main()
