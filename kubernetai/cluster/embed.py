"""``connect()``: one cluster as a Twisted resolver and service, for your own program.

The stable, public way to use kubernetai without a Corefile.  The options go
through exactly the checks a ``kubernetai`` stanza's do (they are written as
a stanza and parsed as one), so a bad option or connection setting fails
here, at construction, never later in the reactor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetai.cluster.options import KubernetesOptions, parse_options
from kubernetai.cluster.stanza import KubernetesCluster
from kubernetai.corefile import CorefileError, parse_text, tokenize
from kubernetai.hostaddrs import local_addresses
from kubernetai.zones import ZoneError, zones_of

__all__ = ["ClusterConfigError", "connect"]

# Option values a keyword argument may hold: a flag, one value, or several.
OptionValue = bool | int | float | str | Sequence[str]


class ClusterConfigError(ValueError):
    """A bad option or connection setting given to ``connect()``; the message says which and why."""


def _token(value: object) -> str:
    """One Corefile token: quoted (JSON's escapes are the Corefile's) unless plainly safe."""
    text = str(value)
    if text and all(c.isalnum() or c in "._-/:=!,@%+*" for c in text):
        return text
    return json.dumps(text)


def _line(name: str, value: OptionValue) -> str | None:
    """A keyword argument as a stanza property line; None when it is off."""
    if value is False or value is None:
        return None
    if value is True:
        return name
    if isinstance(value, str | int | float):
        return f"{name} {_token(value)}"
    return " ".join([name, *(_token(v) for v in value)])


def stanza_text(zones: Sequence[str], properties: Mapping[str, OptionValue], options: str = "") -> str:
    """The ``kubernetai`` stanza these arguments stand for (what ``connect`` parses)."""
    lines = [line for name, value in properties.items() if (line := _line(name, value)) is not None]
    body = "\n".join(["    " + line for line in lines] + [options])
    return f". {{\n  kubernetai {' '.join(_token(z) for z in zones)} {{\n{body}\n  }}\n}}\n"


def connect(
    zones: Sequence[str] = ("cluster.local",),
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    endpoint: str | None = None,
    tls: tuple[str, str, str] | None = None,
    manifests: Sequence[str] = (),
    options: str = "",
    local_ips: Sequence[str] = (),
    reactor: Any = None,
    **properties: OptionValue,
) -> KubernetesCluster:
    """A cluster's resolver and service, like one ``kubernetai`` stanza.

    The connection is one of: ``kubeconfig`` (and ``context``), ``endpoint``
    (and ``tls=(cert, key, ca)``), ``manifests`` (files or directories, a
    snapshot cluster), or none of them (in-cluster service account).
    Stanza options come as keyword arguments named as in a Corefile
    (``ttl=30``, ``pods="verified"``, ``fallthrough=True`` or a list of
    zones, ``namespaces=["a", "b"]``, ``ignore="empty_service"``), and/or
    as Corefile text in ``options`` (``"pods verified\\nfallthrough"``).
    ``local_ips`` are the addresses its NS records give (default: this
    host's non-loopback ones, as CoreDNS).

    The result is an ``IResolver`` (names outside ``zones`` and, with
    ``fallthrough``, missing ones fail with ``DomainError``, so a
    ``ResolverChain`` goes on; other misses with ``AuthoritativeDomainError``)
    and an ``IService``: ``startService()`` starts the list+watch (or the
    file reader), ``stopService()`` closes them; ``when_synced()`` fires once
    the first full list is in.  Raises ``ClusterConfigError`` for anything a
    Corefile would refuse.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        zone_names = tuple(dict.fromkeys(z for arg in zones for z in zones_of(arg)))
    except ZoneError as e:
        raise ClusterConfigError(f"zones: {e}") from None
    connection: dict[str, OptionValue] = {}
    if kubeconfig is not None:
        connection["kubeconfig"] = [kubeconfig, context] if context else kubeconfig
    elif context is not None:
        raise ClusterConfigError("context needs kubeconfig")
    if endpoint is not None:
        connection["endpoint"] = endpoint
    if tls is not None:
        connection["tls"] = list(tls)
    if manifests:
        connection["manifests"] = [manifests] if isinstance(manifests, str) else list(manifests)
    text = stanza_text(zone_names, {**connection, **properties}, options)
    from kubernetai.cluster.kubeconfig import ConfigError, connection_for  # only for API stanzas: plugins/kubernetai.py

    try:
        _check_braces(options)
        (block,) = parse_text(text, "<connect>", lambda name: name == "kubernetai", {})
        opts: KubernetesOptions = parse_options(block.directives[0], zone_names)
        if opts.manifests:
            return KubernetesCluster.from_manifests(opts, reactor, _local(local_ips))
        conn = connection_for(opts, reactor)
    except CorefileError as e:
        raise ClusterConfigError(e.message) from None
    except ConfigError as e:
        raise ClusterConfigError(str(e)) from None
    return KubernetesCluster.from_api(opts, conn, reactor, _local(local_ips))


def _check_braces(options: str) -> None:
    """Option text is a stanza's body: its braces must pair up, or it would end the stanza early."""
    depth = 0
    for tok in tokenize(options, "<options>", {}):
        depth += tok.is_brace("{") - tok.is_brace("}")
        if depth < 0:
            raise ClusterConfigError(f"options: line {tok.line}: '}}' without a '{{' before it")
    if depth:
        raise ClusterConfigError("options: a '{' is not closed")


def _local(ips: Sequence[str]) -> tuple[str, ...]:
    return tuple(ips) or local_addresses()
