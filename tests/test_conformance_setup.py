"""CoreDNS's Corefile facts (tests/conformance/setup-*.yaml): accepted or refused, and what was parsed.

As the tables' README says, endpoint/kubeconfig/tls lines are never written
there: the runner injects an endpoint into every kubernetai stanza.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest
import yaml
from twisted.internet import task

from kubernetai.build import load_text
from kubernetai.cluster.names import InvalidRequest, parse_request
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.corefile import CorefileError

HERE = Path(__file__).parent / "conformance"
FILES = sorted(glob.glob(str(HERE / "setup-*.yaml")))


def cases():
    for path in FILES:
        with open(path) as f:
            data = yaml.safe_load(f)
        for i, case in enumerate(data["cases"]):
            yield pytest.param(case, id=f"{os.path.basename(path)}::{i}::{case['name'][:70]}")


def inject_endpoint(corefile: str) -> str:
    out = []
    for line in corefile.splitlines():
        stripped = line.strip()
        if stripped.startswith("kubernetai"):
            if stripped.endswith("{"):
                line = line + "\n    endpoint http://127.0.0.1:1"
            else:
                line = line + " {\n    endpoint http://127.0.0.1:1\n  }"
        out.append(line)
    return "\n".join(out) + "\n"


def stanzas(plan) -> list[KubernetesResolver]:
    return [r for bp in plan.blocks for r in bp.block.resolver.resolvers if isinstance(r, KubernetesResolver)]


def fact(opts, key):
    return {
        "zones": lambda: list(opts.zones),
        "namespaces": lambda: list(opts.namespaces),
        "labels": lambda: str(opts.labels),
        "pods": lambda: opts.pods,
        "fallthrough": lambda: list(opts.fallthrough.zones),
        "startup_timeout": lambda: opts.startup_timeout,
        "endpoint_pod_names": lambda: opts.endpoint_pod_names,
        "endpoint_cache": lambda: not opts.noendpoints,
        "ignore_empty_service": lambda: opts.ignore_empty_service,
        "multicluster": lambda: list(opts.multicluster),
        "apiserver_qps": lambda: opts.apiserver_qps,
        "apiserver_burst": lambda: opts.apiserver_burst,
        "apiserver_max_inflight": lambda: opts.apiserver_max_inflight,
        "zonal": lambda: opts.zonal,
        "ttl": lambda: opts.ttl,
    }[key]()


@pytest.mark.parametrize("case", list(cases()))
def test_setup(case):
    text = inject_endpoint(case["corefile"])
    if not case["ok"]:
        with pytest.raises(CorefileError) as e:
            load_text(text, 53, task.Clock())
        assert re.match(r"Corefile:\d+: ", str(e.value)), "errors name the file and line"
        if case.get("error_contains"):
            assert case["error_contains"] in str(e.value)
        return
    plan = load_text(text, 53, task.Clock())
    found = stanzas(plan)
    for key, want in (case.get("expect") or {}).items():
        if key == "stanzas":
            assert len(found) == want
        elif key == "stanza_zones":
            assert [list(r.opts.zones) for r in found] == want
        elif key == "parse_request":
            opts = found[0].opts
            zone = next((z for z in opts.zones), ".")
            try:
                r = parse_request(want["qname"].lower(), zone, zone in opts.multicluster, opts.zonal)
            except InvalidRequest:
                assert want["error"] is True
                continue
            assert want["error"] is False
            got = {
                "port": r.port,
                "protocol": r.protocol,
                "endpoint": r.endpoint,
                "cluster": r.cluster,
                "service": r.service,
                "namespace": r.namespace,
                "pod_or_svc": r.pod_or_svc,
                "zone": r.zone,
            }
            assert got == {k: want[k] for k in got}
        elif key == "startup_timeout":
            assert fact(found[0].opts, key) == _seconds(want)
        else:
            assert fact(found[0].opts, key) == want, key


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    assert m, text
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]
