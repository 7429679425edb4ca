"""Uncached answers, in process (issue 15): bench/uncached.py [SERVICES] [SECONDS] [--profile].

The same cluster and query mix as bench/churn.py (A and SRV of Services,
NXDOMAIN, NODATA), each query answered with the answer cache emptied first:
the cost of a first query of a name, or of the first after a change.  No
sockets: the server's own work.  ``--profile`` prints where the time goes.
"""

from __future__ import annotations

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from churn import build, query_mix  # noqa: E402


def run(n: int, seconds: float) -> float:
    _, _, f = build(n)
    qs = query_mix(n, random.Random(1))
    cache = f.answer_cache
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for q in qs[:500]:
            cache.clear()
            f.handle_packet(q, ("127.0.0.1", 5), "udp")
        qs = qs[500:] + qs[:500]
        done += 500
    return done / (time.perf_counter() - start)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 10000
    seconds = float(args[1]) if len(args) > 1 else 5
    if "--profile" in sys.argv:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(run, n, seconds)
        pstats.Stats(profile).sort_stats("tottime").print_stats(35)
        return
    rate = run(n, seconds)
    print(f"uncached answers, in process: {rate:,.0f}/s ({1e6 / rate:.0f} us each)")


if __name__ == "__main__":
    main()
