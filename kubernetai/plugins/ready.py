"""``ready [ADDRESS]``: HTTP /ready, 200 only when every plugin reports ready.

Plugins register a check with ``ctx.server.readiness``; kubernetai stanzas
are ready once synced.  503 lists those not ready, like CoreDNS.  Next to it,
/status gives per-plugin status as JSON.
"""

from __future__ import annotations

import json

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
        body = {name: status() for name, status in ctx.server.status.items()}
        return 200, "application/json", json.dumps(body, indent=2, sort_keys=True).encode()

    address = args[0] if args else DEFAULT_ADDRESS
    mount(ctx, d, address, b"ready", Page(ready_page))
    mount(ctx, d, address, b"status", Page(status_page))
