"""One Kubernetes cluster behind one ``kubernetai`` stanza: from the API (or manifests) to answers.

Data flows one way: connection → watch/snapshot → objects → store →
names/lookup → records → resolver.  Nothing here imports the DNS server.

The public API (semantic versioning from 0.2 on) is what this package
exports: ``connect()``, ``KubernetesCluster`` and ``ClusterConfigError``.
Its submodules are internal.
"""

from kubernetai.cluster.embed import ClusterConfigError, connect
from kubernetai.cluster.stanza import KubernetesCluster

__all__ = ["ClusterConfigError", "KubernetesCluster", "connect"]
