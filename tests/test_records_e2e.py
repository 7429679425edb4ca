"""ExternalName CNAMEs completed through the rest of the chain (CoreDNS's upstream), end to end."""

from __future__ import annotations

import dns.message
import dns.query
import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.names import dns as tdns

from kubernetai.build import KubernetaiService, load_text

from .fakeapi import FakeCluster, listen, namespace, service

pytestmark = pytest.mark.e2e  # real sockets on loopback


@pytest_twisted.inlineCallbacks
def test_external_name_is_chased_through_forward(dns_upstream):
    up = dns_upstream("example.test.", {("ext.example.test", tdns.A): [tdns.Record_A("192.0.2.10", 5)]})
    cluster = FakeCluster()
    cluster.load(
        [
            namespace("ns"),
            service("ext", "ns", type="ExternalName", external_name="ext.example.test"),
            service("gone", "ns", type="ExternalName", external_name="missing.example.test"),
        ]
    )
    api = listen(cluster)
    text = f""".:0 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint http://127.0.0.1:{api.getHost().port}
    }}
    forward example.test 127.0.0.1:{up}
}}"""
    svc = KubernetaiService(load_text(text, 53, reactor), reactor)
    svc.startService()
    try:
        ((_, port),) = svc.addresses()
        q = dns.message.make_query("ext.ns.svc.cluster.local", "A")
        r = yield threads.deferToThread(dns.query.udp, q, "127.0.0.1", port=port, timeout=3)
        got = sorted(rrset.to_text() for rrset in r.answer)
        assert got == ["ext.example.test. 5 IN A 192.0.2.10", "ext.ns.svc.cluster.local. 5 IN CNAME ext.example.test."]
        # A target nobody can resolve: the CNAME alone, as CoreDNS.
        q = dns.message.make_query("gone.ns.svc.cluster.local", "A")
        r = yield threads.deferToThread(dns.query.udp, q, "127.0.0.1", port=port, timeout=3)
        assert [rrset.to_text() for rrset in r.answer] == [
            "gone.ns.svc.cluster.local. 5 IN CNAME missing.example.test."
        ]
    finally:
        yield svc.stopService()
        yield api.stopListening()
        cluster.drop_watches()
