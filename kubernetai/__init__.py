"""kubernetai: Kubernetes DNS-based service discovery for several clusters at once, on Twisted."""

__version__ = "0.4.0"


def version_line() -> str:
    """What ``twistd kubernetai --version`` prints and the start-up line says."""
    import platform

    import twisted

    return f"kubernetai {__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})"
