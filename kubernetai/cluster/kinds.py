"""The Kubernetes kinds a stanza reads: where each lives in the API, how it shrinks, who needs it.

One table (``KINDS``) and two questions asked of it, so the API watcher and
the manifests reader can never disagree: ``needed(opts)`` — which kinds a
stanza needs — and ``selected(opts, kind, obj)`` — whether the stanza's
namespace and label filters keep an object, as the API server would apply
them.  ``convert`` is the one way from API JSON to a compact object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from kubernetai.cluster import objects
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.selectors import Selector

__all__ = ["KINDS", "Kind", "convert", "needed", "selected"]


@attrs.frozen
class Kind:
    name: str
    api: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool
    # The stanza option whose label selector applies to this kind, if any.
    selector: Callable[[KubernetesOptions], Selector] | None
    shrink: Callable[[Mapping[str, Any]], Any]
    # Whether a stanza with these options needs this kind at all.
    wanted: Callable[[KubernetesOptions], bool]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("Service", "/api/v1", "services", True, lambda o: o.labels, objects.service, lambda o: True),
        Kind(
            "EndpointSlice",
            "/apis/discovery.k8s.io/v1",
            "endpointslices",
            True,
            lambda o: o.labels,
            objects.endpoint_slice,
            lambda o: not o.noendpoints,
        ),
        # Pods only for ``pods verified``: endpoint_pod_names uses EndpointSlice targetRefs, as CoreDNS.
        Kind("Pod", "/api/v1", "pods", True, None, objects.pod, lambda o: o.pods == "verified"),
        # Always: a name exists only in an existing namespace (CoreDNS's namespaceExposed).
        Kind(
            "Namespace", "/api/v1", "namespaces", False, lambda o: o.namespace_labels, objects.namespace, lambda o: True
        ),
        Kind(
            "ServiceImport",
            "/apis/multicluster.x-k8s.io/v1alpha1",
            "serviceimports",
            True,
            None,
            objects.service_import,
            lambda o: bool(o.multicluster),
        ),
    )
}


def needed(opts: KubernetesOptions) -> list[Kind]:
    """The kinds a stanza reads, in table order."""
    return [k for k in KINDS.values() if k.wanted(opts)]


def convert(kind: str, obj: Mapping[str, Any]) -> Any:
    """API JSON of ``kind`` → its compact object; raises ObjectError (or a ValueError) if malformed."""
    return KINDS[kind].shrink(obj)


def selected(opts: KubernetesOptions, kind: Kind, obj: Mapping[str, Any]) -> bool:
    """Whether the stanza's filters keep ``obj`` (raw JSON), as list/watch parameters would."""
    meta = obj.get("metadata") or {}
    if kind.namespaced and opts.namespaces and meta.get("namespace") not in opts.namespaces:
        return False
    selector = kind.selector(opts) if kind.selector else None
    return not selector or selector.matches(meta.get("labels") or {})
