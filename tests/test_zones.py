"""Server keys, zone normalisation and CIDR → reverse zones."""

from __future__ import annotations

import pytest

from kubernetai.zones import ZoneError, cidr_reverse_zones, match_zone, normalize, parse_server_key


@pytest.mark.parametrize(
    "cidr,zones",
    [
        ("10.0.0.0/8", ["10.in-addr.arpa."]),
        ("10.0.0.0/15", ["0.10.in-addr.arpa.", "1.10.in-addr.arpa."]),
        ("10.0.0.0/16", ["0.10.in-addr.arpa."]),
        ("192.168.0.0/22", [f"{i}.168.192.in-addr.arpa." for i in range(4)]),
        ("10.1.2.3/24", ["2.1.10.in-addr.arpa."]),
        ("10.1.2.3/32", ["3.2.1.10.in-addr.arpa."]),
        ("0.0.0.0/0", ["in-addr.arpa."]),
        ("fd00::/8", ["f.ip6.arpa.", "d.f.ip6.arpa."][1:] if False else ["d.f.ip6.arpa."]),
        ("fd00:10:96::/48", ["6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa."]),
        ("fd00::/7", ["c.f.ip6.arpa.", "d.f.ip6.arpa."]),
    ],
)
def test_cidr_reverse_zones(cidr, zones):
    assert cidr_reverse_zones(cidr) == zones


def test_cidr_17_gives_128_zones():
    zones = cidr_reverse_zones("10.0.0.0/17")
    assert len(zones) == 128
    assert zones[0] == "0.0.10.in-addr.arpa." and zones[-1] == "127.0.10.in-addr.arpa."


def test_not_a_cidr():
    assert cidr_reverse_zones("cluster.local") is None
    assert cidr_reverse_zones("a/b") is None


@pytest.mark.parametrize(
    "key,transport,zones,port",
    [
        (".", "dns", (".",), 53),
        (".:1053", "dns", (".",), 1053),
        ("Cluster.Local", "dns", ("cluster.local.",), 53),
        ("dns://example.org:1053", "dns", ("example.org.",), 1053),
        ("10.0.0.0/15:1053", "dns", ("0.10.in-addr.arpa.", "1.10.in-addr.arpa."), 1053),
        ("fd00::/8", "dns", ("d.f.ip6.arpa.",), 53),
        ("fd00::/8:5300", "dns", ("d.f.ip6.arpa.",), 5300),
        ("cluster.local.", "dns", ("cluster.local.",), 53),
    ],
)
def test_server_keys(key, transport, zones, port):
    k = parse_server_key(key, 53)
    assert (k.transport, k.zones, k.port) == (transport, zones, port)


def test_default_port_applies_only_without_a_port():
    assert parse_server_key(".", 1053).port == 1053
    assert parse_server_key(".:53", 1053).port == 53


@pytest.mark.parametrize(
    "key,message",
    [
        ("tls://example.org", "not supported"),
        ("foo://example.org", "unknown transport"),
        ("example.org:", "expecting a port"),
        ("example.org:70000", "out of range"),
        ("a..b", "not a valid domain name"),
        ("x" * 64 + ".org", "not a valid domain name"),
        ("::/0", "invalid CIDR"),
    ],
)
def test_bad_server_keys(key, message):
    with pytest.raises(ZoneError, match=message):
        parse_server_key(key, 53)


def test_normalize_and_match():
    assert normalize("A.B") == "a.b."
    assert normalize("") == "."
    zones = [".", "cluster.local.", "svc.cluster.local."]
    assert match_zone("x.svc.cluster.local.", zones) == "svc.cluster.local."
    assert match_zone("x.cluster.local.", zones) == "cluster.local."
    assert match_zone("example.org.", zones) == "."
    assert match_zone("notcluster.local.", ["cluster.local."]) is None
