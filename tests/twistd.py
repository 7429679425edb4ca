"""A real ``twistd kubernetai`` process for end-to-end tests: started on OS-picked ports, always stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from .conftest import wait_for_log

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def twistd(*args: str, cwd: Path) -> list[str]:
    return [*TWISTD, "--pidfile=", "--logfile=-", "-n", "kubernetai", *args]


class Server:
    """A twistd kubernetai process on ports the OS picked (``:0``); always stopped by the fixture.

    ``port`` is its DNS port and ``http`` maps each health/ready listener's
    name to its port, all read from its start-up log.
    """

    def __init__(self, corefile: Path, *args: str):
        self.out = corefile.parent / "server.log"
        self.proc = subprocess.Popen(
            twistd("--config", str(corefile), *args, cwd=corefile.parent),
            cwd=corefile.parent,
            env=env(),
            stdout=self.out.open("w"),
            stderr=subprocess.STDOUT,
        )
        found = wait_for_log(self.out, r"listening on \S+ port (\d+) \(udp\+tcp\)", self.proc, within=20)
        self.port = int(found.group(1))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                dns.query.udp(dns.message.make_query("probe.invalid", "A"), "127.0.0.1", port=self.port, timeout=0.2)
                # Answering means start-up is over: every HTTP listener has said its port by now.
                self.http = {m[0]: int(m[1]) for m in re.findall(r"(http \S+) listening on port (\d+)", self.log())}
                return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log()}")

    def log(self) -> str:
        return self.out.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode
