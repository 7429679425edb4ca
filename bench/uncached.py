"""Uncached answers, in process (issue 15): bench/uncached.py [SERVICES] [SECONDS] [--profile|--floor] [--against TREE].

The same cluster and query mix as bench/churn.py (A and SRV of Services,
NXDOMAIN, NODATA), each query answered with the answer cache emptied first:
the cost of a first query of a name, or of the first after a change.  No
sockets: the server's own work.  ``--profile`` prints where the time goes.
``--floor`` answers every query with one constant record instead of asking
the store, through the general path (the short path is off): what the
server itself costs per uncached answer there (parsing, the request,
encoding, the cache miss and entry), whatever the resolvers do.

``--against TREE`` (another checkout of kubernetai, e.g. a ``git worktree`` of
an older commit) runs this bench from both trees, interleaved, five rounds
each in fresh processes, and prints both medians and their ratio: this
machine's speed drifts too much for figures taken minutes apart.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from churn import build, query_mix  # noqa: E402


def run(n: int, seconds: float, floor: bool = False) -> float:
    _, stanza, f = build(n)
    qs = query_mix(n, random.Random(1))
    if floor:
        constant_answers(f, stanza)
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


def constant_answers(f, stanza) -> None:
    """``--floor``: the chain answers every query with one A record, made once, without asking the store.

    What is left is the server's own share of an uncached answer: the cache
    miss, parsing, the request, encoding and the cache entry.
    """
    from twisted.names import dns

    record = dns.RRHeader(b"floor.cluster.local", dns.A, dns.IN, 5, dns.Record_A("10.0.0.1", 5), auth=True)
    fixed: tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]] = ([record], [], [])

    def answer_now(query, info):
        info.trace.consulted(stanza)  # cacheable, as the stanza's own answers
        return fixed

    for block in f.blocks:
        block.resolver.answer_now = answer_now
    f.short_path = False  # the general path's share (the short one asks no answer_now)


def against(tree: str, n: int, seconds: float, rounds: int = 5) -> None:
    """This tree and ``tree``, interleaved rounds in fresh processes."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rates: dict[str, list[float]] = {here: [], tree: []}
    for _ in range(rounds):
        for root in (tree, here):
            out = subprocess.run(
                [sys.executable, os.path.join(root, "bench", "uncached.py"), str(n), str(seconds)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            ).stdout
            found = re.search(r"in process: ([\d,]+)/s", out)
            if found is None:
                raise SystemExit(f"unexpected output from {root}: {out!r}")
            rates[root].append(float(found.group(1).replace(",", "")))
    before, after = statistics.median(rates[tree]), statistics.median(rates[here])
    each = {k: ", ".join(f"{r:,.0f}" for r in v) for k, v in rates.items()}
    print(f"uncached answers, in process, before ({tree}): median {before:,.0f}/s (rounds: {each[tree]})")
    print(f"uncached answers, in process, now: median {after:,.0f}/s (rounds: {each[here]})")
    print(f"uncached answers: now / before = {after / before:.2f}x")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--against" in sys.argv:
        tree = sys.argv[sys.argv.index("--against") + 1]
        args = [a for a in args if a != tree]
    n = int(args[0]) if args else 10000
    seconds = float(args[1]) if len(args) > 1 else 5
    if "--against" in sys.argv:
        against(tree, n, seconds)
        return
    if "--profile" in sys.argv:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(run, n, seconds)
        pstats.Stats(profile).sort_stats("tottime").print_stats(35)
        return
    if "--floor" in sys.argv:
        rate = run(n, seconds, floor=True)
        print(f"uncached answers, the server's share alone (--floor): {rate:,.0f}/s ({1e6 / rate:.0f} us each)")
        return
    rate = run(n, seconds)
    print(f"uncached answers, in process: {rate:,.0f}/s ({1e6 / rate:.0f} us each)")


if __name__ == "__main__":
    main()
