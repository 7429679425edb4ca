"""kubernetai: Kubernetes DNS-based service discovery for several clusters at once, on Twisted."""

__version__ = "0.2.0"
