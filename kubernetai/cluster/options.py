"""A ``kubernetai`` stanza's Directive → frozen KubernetesOptions.

Exactly the options of CoreDNS's ``kubernetes`` plugin (its README is the
reference), with its error wording where users may search for it.  Every
error names the file and line.  Pure: nothing here touches the network.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import attrs

from kubernetai.cluster.selectors import Selector, SelectorError, parse_selector
from kubernetai.corefile import Directive
from kubernetai.fallthrough import Fallthrough
from kubernetai.lazy_repr import LazyRepr
from kubernetai.values import arg_count, duration, zone_args

__all__ = ["KubernetesOptions", "parse_options", "PODS_MODES", "PROPERTIES"]

PODS_MODES = ("disabled", "insecure", "verified")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,62}")


@attrs.frozen(repr=False)
class KubernetesOptions(LazyRepr):
    """Everything one stanza was configured with."""

    zones: tuple[str, ...]
    file: str = "Corefile"
    line: int = 0
    endpoint: str = ""
    endpoints: tuple[str, ...] = ()  # every URL given: the first, then failover ones
    tls: tuple[str, str, str] | None = None  # cert, key, ca
    kubeconfig: str = ""
    context: str = ""
    namespaces: tuple[str, ...] = ()
    namespace_labels: Selector = Selector()
    labels: Selector = Selector()
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int = 5
    noendpoints: bool = False
    fallthrough: Fallthrough = Fallthrough()
    ignore_empty_service: bool = False
    multicluster: tuple[str, ...] = ()
    startup_timeout: float = 5.0
    apiserver_qps: float = 0.0  # 0 = unlimited
    apiserver_burst: int = 0
    apiserver_max_inflight: int = 0  # 0 = unlimited
    zonal: bool = False
    manifests: tuple[str, ...] = ()  # a snapshot cluster instead of an API server
    given_name: str = ""  # ``name NAME`` (ours): how metrics, logs, /ready and /status call the stanza

    def connection_name(self) -> str:
        """How logs name this stanza's cluster (never a credential)."""
        if self.manifests:
            return f"manifests {' '.join(self.manifests)}"
        if self.kubeconfig:
            return f"kubeconfig {self.kubeconfig}" + (f" context {self.context}" if self.context else "")
        if self.endpoint:
            return f"endpoint {self.endpoint}"
        return "in-cluster"

    def name(self) -> str:
        """The stanza's name: ``name NAME``, else its first zone and where its data comes from, short.

        ``cluster.local@10.0.0.1:6443``, ``cluster.local@prod`` (a kubeconfig
        context), ``cluster.local@kubeconfig``, ``cluster.local@manifests``,
        ``cluster.local@in-cluster``: never all its zones, never a credential.
        """
        if self.given_name:
            return self.given_name
        zone = self.zones[0].rstrip(".") or "."
        if self.manifests:
            source = "manifests"
        elif self.kubeconfig:
            source = self.context or "kubeconfig"
        elif self.endpoint:
            source = urlsplit(self.endpoint).netloc or self.endpoint
        else:
            source = "in-cluster"
        return f"{zone}@{source}"


def _selector(d: Directive) -> Selector:
    arg_count(d, 1)
    text = " ".join(d.args)
    try:
        return parse_selector(text)
    except SelectorError as e:
        raise d.error(f"unable to parse label selector value: '{text}': {e}") from None


# ------------------------------------------------------------ one parser per property
# Each takes the property's Directive (and the stanza's zones so far) and
# returns the KubernetesOptions fields it sets.  PROPERTIES is derived from it.


def _endpoint(c: Directive, zones: tuple[str, ...]) -> dict:
    # CoreDNS uses only the first; we fail over to the others (see kubeconfig.Connection).
    urls = arg_count(c, 1)
    for url in urls:
        if "@" in urlsplit(url).netloc:
            # It would show in /status, /ready and every log line: refuse it, and do not repeat it.
            raise c.error("credentials in an endpoint URL are not accepted; put them in a kubeconfig (kubeconfig PATH)")
    return {"endpoint": urls[0], "endpoints": tuple(urls)}


def _tls(c: Directive, zones: tuple[str, ...]) -> dict:
    return {"tls": tuple(arg_count(c, 3, 3))}


def _kubeconfig(c: Directive, zones: tuple[str, ...]) -> dict:
    args = arg_count(c, 1, 2)
    return {"kubeconfig": args[0], "context": args[1] if len(args) == 2 else ""}


def _name(c: Directive, zones: tuple[str, ...]) -> dict:
    (name,) = arg_count(c, 1, 1)
    if not NAME.fullmatch(name):
        raise c.error(f"invalid stanza name {name!r}: letters, digits and . _ - @ : only, at most 63")
    return {"given_name": name}


def _pods(c: Directive, zones: tuple[str, ...]) -> dict:
    (mode,) = arg_count(c, 1, 1)
    if mode not in PODS_MODES:
        raise c.error(f"wrong value for pods: {mode}, must be one of: {', '.join(PODS_MODES)}")
    return {"pods": mode}


def _flag(c: Directive, zones: tuple[str, ...]) -> dict:
    arg_count(c, 0, 0)
    return {c.name: True}


def _ttl(c: Directive, zones: tuple[str, ...]) -> dict:
    (text,) = arg_count(c, 1, 1)
    try:
        ttl = int(text)
    except ValueError:
        raise c.error(f"ttl must be an integer, got {text!r}") from None
    if not 0 <= ttl <= 3600:
        raise c.error(f"ttl must be in range [0, 3600]: {ttl}")
    return {"ttl": ttl}


def _ignore(c: Directive, zones: tuple[str, ...]) -> dict:
    # As CoreDNS: the first argument decides, further ones are ignored.
    if not c.args:
        return {}
    if c.args[0] != "empty_service":
        raise c.error(f"unable to parse ignore value: '{c.args[0]}' (allowed: empty_service)")
    return {"ignore_empty_service": True}


def _multicluster(c: Directive, zones: tuple[str, ...]) -> dict:
    mzones = zone_args(c, c.args)
    for z in mzones:
        if z not in zones:
            raise c.error(f"kubernetai is not authoritative for the multicluster zone {z}")
    return {"multicluster": mzones}


def _manifests(c: Directive, zones: tuple[str, ...]) -> dict:
    base = os.path.dirname(os.path.abspath(c.file))
    return {"manifests": tuple(a if os.path.isabs(a) else os.path.join(base, a) for a in arg_count(c, 1))}


def _check_manifests(c: Directive, paths: tuple[str, ...]) -> None:
    for arg, path in zip(c.args, paths, strict=True):
        # A typo would otherwise give an empty cluster: NXDOMAIN for the whole zone.
        if not (glob.glob(path) if glob.has_magic(path) else os.path.exists(path)):
            raise c.error(f"{arg} matches no file or directory")


def _labels(c: Directive, zones: tuple[str, ...]) -> dict:
    return {c.name: _selector(c)}


def _number(cast: type) -> Callable[[Directive, tuple[str, ...]], dict]:
    def parse(c: Directive, zones: tuple[str, ...]) -> dict:
        (text,) = arg_count(c, 1, 1)
        try:
            value = cast(text)
        except ValueError:
            raise c.error(f"{c.name} must be a number, got {text!r}") from None
        if value < 0:
            raise c.error(f"{c.name} must be >= 0, got {text}")
        return {c.name: value}

    return parse


PARSERS: dict[str, Callable[[Directive, tuple[str, ...]], dict]] = {
    "endpoint": _endpoint,
    "tls": _tls,
    "kubeconfig": _kubeconfig,
    "namespaces": lambda c, zones: {"namespaces": tuple(arg_count(c, 1))},
    "namespace_labels": _labels,
    "labels": _labels,
    "pods": _pods,
    "endpoint_pod_names": _flag,
    "ttl": _ttl,
    "noendpoints": _flag,
    "fallthrough": lambda c, zones: {"fallthrough": Fallthrough.parse(c)},
    "ignore": _ignore,
    "multicluster": _multicluster,
    "startup_timeout": lambda c, zones: {"startup_timeout": duration(c, arg_count(c, 1, 1)[0])},
    "apiserver_qps": _number(float),
    "apiserver_burst": _number(int),
    "apiserver_max_inflight": _number(int),
    "zonal": _flag,
    "manifests": _manifests,
    "name": _name,
}
PROPERTIES = tuple(PARSERS)


def parse_options(d: Directive, block_zones: tuple[str, ...]) -> KubernetesOptions:
    zones = zone_args(d, d.args) or block_zones
    o: dict = {"zones": zones, "file": d.file, "line": d.line}
    for c in d.children:
        parse = PARSERS.get(c.name)
        if parse is None:
            raise c.error(f"unknown property '{c.name}' (known: {', '.join(PROPERTIES)})")
        o.update(parse(c, zones))
    if o.get("manifests"):
        for other in ("endpoint", "kubeconfig", "tls"):
            if o.get(other):
                raise d.error(
                    f"manifests cannot be combined with {other}: a stanza reads either files or an API server"
                )
    if o.get("namespaces") and o.get("namespace_labels"):
        raise d.error("namespaces and namespace_labels cannot both be set")
    if o.get("zonal") and o.get("noendpoints"):
        raise d.error("zonal cannot be used with noendpoints: zone names need endpoints")
    for c in d.children:
        if c.name == "manifests":
            _check_manifests(c, _manifests(c, zones)["manifests"])
    return KubernetesOptions(**o)
