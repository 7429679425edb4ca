"""``loadbalance [round_robin]``: rotate A, AAAA and MX records between answers, as CoreDNS's plugin.

Each answer of the block starts its address records one further along, so
clients that take the first address spread over all of them.  Works on
cached answers too (see kubernetai.rotation): answers stay cacheable.
"""

from __future__ import annotations

from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.values import arg_count, no_block

POLICIES = ("round_robin",)


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.once(d)
    args = arg_count(d, 0, 1)
    if args and args[0] not in POLICIES:
        raise d.error(f"unknown policy {args[0]!r} (allowed: {', '.join(POLICIES)})")
    no_block(d)
    ctx.rotate = True
