"""Registers ``twistd kubernetai`` (no __init__.py here: twisted.plugins is a namespace)."""

from twisted.application.service import ServiceMaker

kubernetai = ServiceMaker(
    "kubernetai",
    "kubernetai.tap",
    "Kubernetes DNS for several clusters at once (CoreDNS Corefile, kubernetai stanzas).",
    "kubernetai",
)
