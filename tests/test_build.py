"""Corefile → plan: keys, duplicate zones, plugin order, directive errors, --check."""

from __future__ import annotations

import pytest
from twisted.internet import task

from kubernetai.build import load_text
from kubernetai.corefile import CorefileError
from kubernetai.directives import BUILTIN, ORDER, order_of


def plan(text: str, port: int = 53, environ=None):
    return load_text(text, port, task.Clock(), environ=environ or {})


def test_plugin_order_is_fixed_not_corefile_order():
    p = plan(
        ". {\n forward . 127.0.0.1\n log\n kubernetai a.local {\n  endpoint http://127.0.0.1:1\n }\n errors\n hosts {\n  fallthrough\n }\n kubernetai b.local {\n  endpoint http://127.0.0.1:1\n }\n}"
    )
    assert p.blocks[0].plugins == ("errors", "log", "hosts", "kubernetai", "kubernetai", "forward")
    zones = [r.opts.zones for r in p.blocks[0].block.resolver.resolvers[1:3]]
    assert zones == [("a.local.",), ("b.local.",)]  # stanzas keep Corefile order


def test_blocks_sharing_a_port_share_a_listener():
    p = plan("a.org {\n log\n}\nb.org {\n log\n}\nc.org:1053 {\n log\n}")
    listeners = p.listeners()
    assert sorted(listeners) == [("", 53), ("", 1053)]
    assert [b.zones for b in listeners[("", 53)]] == [("a.org.",), ("b.org.",)]


def test_bind_limits_listen_addresses():
    p = plan(". {\n bind 127.0.0.1 ::1\n}")
    assert sorted(p.listeners()) == [("127.0.0.1", 53), ("::1", 53)]


def test_bind_except():
    p = plan(". {\n bind 127.0.0.1 127.0.0.2 {\n  except 127.0.0.2\n }\n}")
    assert list(p.listeners()) == [("127.0.0.1", 53)]


def test_bind_loopback_interface_by_name():
    p = plan(". {\n bind lo\n}")
    assert ("127.0.0.1", 53) in p.listeners()


def test_cidr_key_and_dns_port_default():
    p = plan("10.0.0.0/15 {\n log\n}", port=1053)
    assert p.blocks[0].zones == ("0.10.in-addr.arpa.", "1.10.in-addr.arpa.")
    assert p.blocks[0].port == 1053


def test_one_block_with_keys_on_two_ports():
    p = plan("a.org:53 b.org:1053 {\n log\n}")
    assert [(b.zones, b.port) for b in p.blocks] == [(("a.org.",), 53), (("b.org.",), 1053)]


def test_describe_lists_blocks_zones_ports_and_chain():
    text = plan(
        ". {\n bind 127.0.0.1\n log\n kubernetai cluster.local {\n  endpoint http://127.0.0.1:1\n }\n}", port=1053
    ).describe()
    assert "server block ." in text and "port:    1053 udp+tcp on 127.0.0.1" in text
    assert "plugins: bind -> log -> kubernetai" in text


BAD = [
    (
        "duplicate zone and port",
        "a.org {\n log\n}\na.org {\n errors\n}",
        4,
        "a.org. on port 53 is defined more than once (first at Corefile:1)",
    ),
    (
        "duplicate zone, same block keys differ in case",
        "A.org {\n log\n}\na.ORG:53 {\n log\n}",
        4,
        "defined more than once",
    ),
    ("unknown directive", ". {\n cachex 30\n}", 2, "unknown directive 'cachex'"),
    ("a CoreDNS plugin we lack", ". {\n chaos\n}", 2, "CoreDNS plugin 'chaos' is not available in kubernetai"),
    ("a near miss", ". {\n kubernets\n}", 2, "unknown directive 'kubernets' (did you mean 'kubernetes'?)"),
    ("bad key", "tls://a.org {\n log\n}", 1, "not supported"),
    ("bad zone in stanza", ". {\n kubernetai a..b\n}", 2, "kubernetai: zone is not a valid domain name"),
    ("unsupported stanza option", ". {\n kubernetai a.org {\n  foo bar\n }\n}", 3, "unknown property 'foo'"),
    ("health twice", ". {\n health\n health :9090\n}", 3, "only be used once"),
    ("health bad lameduck", ". {\n health {\n  lameduck 5parsecs\n }\n}", 3, "invalid duration"),
    ("health unknown property", ". {\n health {\n  slow 5s\n }\n}", 3, "unknown property 'slow'"),
    ("health too many args", ". {\n health :1 :2\n}", 2, "wrong argument count"),
    ("ready with a block", ". {\n ready {\n }\n}", 2, "takes no block"),
    ("ready bad address", ". {\n ready 8181\n}", 2, "invalid address"),
    ("log bad class", ". {\n log {\n  class sometimes\n }\n}", 3, "unknown class 'sometimes'"),
    ("errors bad regexp", ". {\n errors {\n  consolidate 5m (\n }\n}", 3, "invalid regular expression"),
    ("errors bad level", ". {\n errors {\n  consolidate 5m x loud\n }\n}", 3, "unknown log level"),
    ("bind nothing", ". {\n bind\n}", 2, "wrong argument count"),
    ("bind bad address", ". {\n bind 999.1.1.1\n}", 2, "not a valid IP address or interface name"),
    ("hosts bad ttl", ". {\n hosts {\n  ttl abc\n }\n}", 3, "ttl must be an integer"),
    ("hosts bad inline", ". {\n hosts {\n  example.org 1.2.3.4\n }\n}", 3, "invalid inline entry"),
    ("forward no upstream", ". {\n forward .\n}", 2, "wrong argument count"),
    ("forward bad upstream", ". {\n forward . not-an-ip\n}", 2, "not an IP address"),
    ("forward bad policy", ". {\n forward . 127.0.0.1 {\n  policy fastest\n }\n}", 3, "unknown policy"),
    ("forward unsupported option", ". {\n forward . 127.0.0.1 {\n  health_check 5s\n }\n}", 3, "unknown property"),
    ("forward tls", ". {\n forward . tls://1.1.1.1\n}", 2, "tls:// upstreams are not supported"),
    (
        "forward missing resolv.conf",
        ". {\n forward . /nonexistent/resolv.conf\n}",
        2,
        "cannot read /nonexistent/resolv.conf",
    ),
]


@pytest.mark.parametrize("name,text,line,message", BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_names_file_line_and_problem(name, text, line, message):
    with pytest.raises(CorefileError) as e:
        plan(text)
    assert (e.value.file, e.value.line) == ("Corefile", line), str(e.value)
    assert message in str(e.value)


def test_registry_order_covers_every_builtin():
    assert set(ORDER) | {"kubernetes"} == set(BUILTIN)
    assert order_of("thirdparty", BUILTIN) < order_of("forward", BUILTIN)
    assert order_of("thirdparty", BUILTIN) > order_of("kubernetai", BUILTIN)


def test_env_substitution_reaches_plugins():
    p = plan(". {\n forward . {$UP}\n}", environ={"UP": "127.0.0.1:5300"})
    assert p.blocks[0].block.resolver.resolvers[0].upstreams == [("127.0.0.1", 5300)]
