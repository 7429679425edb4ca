"""``reload [INTERVAL] [JITTER]``: reload the Corefile when it changes, as CoreDNS's reload.

Every INTERVAL (default 30s) ± JITTER (default 15s) the Corefile's SHA-512
is compared with the running one's; a change reloads it (see
kubernetai.reload: a bad Corefile keeps the running configuration).
SIGUSR1 (and SIGHUP) reload at once, with or without this directive.
"""

from __future__ import annotations

from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.values import arg_count, duration, no_block

DEFAULT_INTERVAL = 30.0
DEFAULT_JITTER = 15.0


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.once(d)
    args = arg_count(d, 0, 2)
    no_block(d)
    interval = duration(d, args[0]) if args else DEFAULT_INTERVAL
    jitter = duration(d, args[1]) if len(args) > 1 else DEFAULT_JITTER
    if interval < 2:
        raise d.error("interval value must be greater or equal to 2s")
    if jitter < 1:
        raise d.error("jitter value must be greater or equal to 1s")
    jitter = min(jitter, interval / 2)  # as CoreDNS: at most half the interval
    ctx.server.reload_every = (interval, jitter)
