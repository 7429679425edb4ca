"""``ready [ADDRESS]``: HTTP /ready, 200 only when every plugin reports ready.

Plugins register a check with ``ctx.server.readiness``; kubernetai stanzas
are ready once synced.  503 lists those not ready, like CoreDNS.  Next to it,
/status gives, as JSON, the version and uptime, each stanza's state and
the answer caches' statistics.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from kubernetai import __version__
from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.plugins.http import Page, mount
from kubernetai.values import arg_count, no_block

DEFAULT_ADDRESS = ":8181"


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.once(d)
    args = arg_count(d, 0, 1)
    no_block(d)
    readiness = ctx.server.readiness

    def ready_page() -> tuple[int, str, bytes]:
        missing = readiness.not_ready()
        if missing:
            return 503, "text/plain", ", ".join(missing).encode()
        return 200, "text/plain", b"OK"

    def status_page() -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(status_of(ctx), indent=2, sort_keys=True).encode()

    address = args[0] if args else DEFAULT_ADDRESS
    mount(ctx, d, address, b"ready", Page(ready_page))
    mount(ctx, d, address, b"status", Page(status_page))


def status_of(ctx: SetupContext) -> dict:
    """/status: version, uptime, each stanza (see KubernetesCluster.status) and the answer caches."""
    server = ctx.server
    now = time.time()
    return {
        "version": __version__,
        "started": datetime.fromtimestamp(server.started, UTC).isoformat(timespec="seconds"),
        "uptime_seconds": round(now - server.started, 3),
        "stanzas": {name: status() for name, status in server.status.items()},
        "answer_cache": {
            listener: {
                "entries": len(cache),
                "capacity": cache.capacity,
                "hits": cache.hits,
                "misses": cache.misses,
                "evictions": cache.evictions,
            }
            for listener, cache in sorted(server.answer_caches.items())
        },
        **{name: status() for name, status in server.process_status.items()},
    }
