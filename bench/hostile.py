"""Hostile traffic against a live `twistd kubernetai`: random and mutated UDP packets, hostile TCP connections.

    .venv/bin/python bench/hostile.py [--packets 200000] [--connections 2000]

Serves the demo clusters (etc/demo) on 127.0.0.1 (port 0), then sends the
packets, a well-formed query after every 1,000 of them (which must be
answered), and the TCP connections (closed at once, garbage, a length and
nothing more, oversized lengths, pipelined queries never read), 50 open at a
time, with a well-formed TCP query after every 100.  Reports unanswered
well-formed queries and any traceback in the server's log.  Loopback only;
bounded in count and time; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["web.default.svc.cluster.local", "ledger.payments.svc.cluster.local", "api.default.svc.cluster.local"]


def start(workdir: Path) -> tuple[subprocess.Popen, int, Path]:
    shutil.copytree(ROOT / "etc" / "demo", workdir, dirs_exist_ok=True)
    core = workdir / "Corefile"
    text = core.read_text().replace(".:1053", ".:0").replace("127.0.0.1:8080", "127.0.0.1:0")
    core.write_text(text.replace("127.0.0.1:8181", "127.0.0.1:0").replace("    log\n", ""))
    log = workdir / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    proc = subprocess.Popen(
        [*cmd, "--pidfile=", "--logfile=-", "-n", "kubernetai", "--config", str(core)],
        cwd=workdir, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening on \S+ port (\d+) \(udp\+tcp\)", log.read_text())
        if found:
            port = int(found.group(1))
            for _ in range(100):
                try:
                    dns.query.udp(dns.message.make_query(NAMES[0], "A"), "127.0.0.1", port=port, timeout=0.2)
                    return proc, port, log
                except Exception:
                    time.sleep(0.1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def well_formed(port: int, tcp: bool = False) -> bool:
    q = dns.message.make_query(random.choice(NAMES), random.choice(["A", "AAAA", "SRV", "TXT"]))
    for _ in range(3):  # UDP may lose a datagram under load
        try:
            r = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=2)
            return r.id == q.id
        except Exception:
            continue
    return False


def mutated(rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return rng.randbytes(rng.randint(0, 600))
    q = bytearray(
        dns.message.make_query(rng.choice(NAMES), rng.choice(["A", "SRV", "PTR", "ANY"]), use_edns=0).to_wire()
    )
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        i = rng.randrange(len(q))
        if op < 0.6:
            q[i] = rng.randrange(256)
        elif op < 0.8:
            del q[i:]
            if not q:
                break
        else:
            q[i:i] = rng.randbytes(rng.randint(1, 40))
    return bytes(q)


def udp_storm(port: int, count: int, rng: random.Random, deadline: float) -> tuple[int, int]:
    unanswered = checked = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for i in range(count):
            if time.monotonic() > deadline:
                break
            try:
                s.sendto(mutated(rng), ("127.0.0.1", port))
            except (BlockingIOError, OSError):
                time.sleep(0.001)
            try:
                while True:
                    s.recv(65535)  # drain whatever comes back
            except (BlockingIOError, OSError):
                pass
            if i % 1000 == 999:
                checked += 1
                unanswered += not well_formed(port)
    return checked, unanswered


def tcp_storm(port: int, count: int, rng: random.Random, deadline: float) -> tuple[int, int]:
    query = dns.message.make_query(NAMES[0], "A").to_wire()
    framed = struct.pack("!H", len(query)) + query
    unanswered = checked = 0
    open_socks: list[socket.socket] = []
    for i in range(count):
        if time.monotonic() > deadline:
            break
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            continue
        kind = i % 5
        try:
            if kind == 0:
                s.close()
                continue
            if kind == 1:
                s.sendall(rng.randbytes(rng.randint(1, 2000)))
            elif kind == 2:
                s.sendall(b"\x00")  # half a length prefix, then silence
            elif kind == 3:
                s.sendall(b"\xff\xff" + rng.randbytes(100))  # promises 65535 bytes
            else:
                s.setblocking(False)
                for _ in range(500):  # pipelined, never read
                    try:
                        s.send(framed)
                    except (BlockingIOError, OSError):
                        break
        except OSError:
            pass
        open_socks.append(s)
        if len(open_socks) >= 50:
            for old in open_socks[:25]:
                old.close()
            del open_socks[:25]
        if i % 100 == 99:
            checked += 1
            unanswered += not well_formed(port, tcp=True)
    for s in open_socks:
        s.close()
    return checked, unanswered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--connections", type=int, default=2_000)
    ap.add_argument("--seconds", type=float, default=600, help="bound on the whole run")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, log = start(Path(tmp))
        try:
            t0 = time.monotonic()
            u_checked, u_missed = udp_storm(port, args.packets, rng, deadline)
            t1 = time.monotonic()
            t_checked, t_missed = tcp_storm(port, args.connections, rng, deadline)
            t2 = time.monotonic()
            alive = proc.poll() is None and well_formed(port) and well_formed(port, tcp=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        text = log.read_text()
    tracebacks = text.count("Traceback")
    print(f"UDP: {args.packets} random/mutated packets in {t1 - t0:.0f}s; ", end="")
    print(f"{u_missed} of {u_checked} well-formed queries unanswered")
    print(f"TCP: {args.connections} hostile connections in {t2 - t1:.0f}s; ", end="")
    print(f"{t_missed} of {t_checked} well-formed queries unanswered")
    print(f"server alive and answering at the end: {alive}; tracebacks in its log: {tracebacks}")
    sys.exit(0 if alive and not tracebacks and not u_missed and not t_missed else 1)


if __name__ == "__main__":
    main()
