"""The Kubernetes kinds a stanza reads: where each lives in the API, how it shrinks, who needs it.

One table (``KINDS``) and two questions asked of it, so the API watcher and
the manifests reader can never disagree: ``needed(opts)`` — which kinds a
stanza needs — and ``selected(opts, kind, obj)`` — whether the stanza's
namespace and label filters keep an object, as the API server would apply
them.  ``convert`` is the one way from API JSON to a compact object.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from kubernetai.cluster import objects
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.selectors import Selector, parse_selector
from kubernetai.lazy_repr import LazyRepr

__all__ = ["KINDS", "Kind", "convert", "needed", "selected"]


@attrs.frozen(repr=False)
class Kind(LazyRepr):
    name: str
    api: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool
    # The stanza option whose label selector applies to this kind, if any.
    selector: Callable[[KubernetesOptions], Selector] | None
    shrink: Callable[[Mapping[str, Any]], Any]
    # Whether a stanza with these options needs this kind at all.
    wanted: Callable[[KubernetesOptions], bool]
    # A field selector the API applies (pods: only those that can still have an address).
    fields: str = ""


def _slice_selector(o: KubernetesOptions) -> Selector:
    return _mcs_only(o.labels) if o.noendpoints else o.labels


@functools.lru_cache(maxsize=16)
def _mcs_only(labels: Selector) -> Selector:
    """``labels`` and "is a multicluster slice"; parsed once, not per object read from a manifest."""
    mcs = objects.MCS_SERVICE_NAME_LABEL
    return parse_selector(f"{labels},{mcs}" if labels else mcs)


POD_PHASES = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
ENDED_PHASES = ("Succeeded", "Failed", "Unknown")

# Selected exactly as CoreDNS's informers select them (plugin/kubernetes/controller.go).
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("Service", "/api/v1", "services", True,
             selector=lambda o: o.labels, shrink=objects.service, wanted=lambda o: True),
        # With noendpoints, CoreDNS still watches the multicluster ones (for ServiceImports).
        Kind("EndpointSlice", "/apis/discovery.k8s.io/v1", "endpointslices", True,
             selector=_slice_selector, shrink=objects.endpoint_slice,
             wanted=lambda o: not o.noendpoints or bool(o.multicluster)),
        # Only for ``pods verified`` (endpoint_pod_names uses EndpointSlice targetRefs); by ``labels`` and phase.
        Kind("Pod", "/api/v1", "pods", True,
             selector=lambda o: o.labels, shrink=objects.pod, wanted=lambda o: o.pods == "verified", fields=POD_PHASES),
        # Always: a name exists only in an existing namespace (CoreDNS's namespaceExposed).
        Kind("Namespace", "/api/v1", "namespaces", False,
             selector=lambda o: o.namespace_labels, shrink=objects.namespace, wanted=lambda o: True),
        # CoreDNS selects ServiceImports by the namespace_labels selector (sic); so do we, for the same answers.
        Kind("ServiceImport", "/apis/multicluster.x-k8s.io/v1alpha1", "serviceimports", True,
             selector=lambda o: o.namespace_labels, shrink=objects.service_import,
             wanted=lambda o: bool(o.multicluster)),
    )
}  # fmt: skip


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
    if kind.fields and (obj.get("status") or {}).get("phase") in ENDED_PHASES:
        return False
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise objects.ObjectError("metadata.labels must map names to strings")
    selector = kind.selector(opts) if kind.selector else None
    return not selector or selector.matches(labels)
