"""The real thing: `twistd kubernetai` against a real kube-apiserver + etcd, queried over loopback.

The cluster (tests/realapi/harness.py) is shared by the tests of this module;
each test makes its own namespace.  Without Go or etcd the tests skip with
one line; in CI (CI=true) they must run, so a missing piece fails instead.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from .realapi.harness import RealCluster, Unavailable, etcd_binaries, kube_apiserver_binary
from .twistd import ROOT, Server

pytestmark = [pytest.mark.realapi, pytest.mark.e2e]


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true" or os.environ.get("KUBERNETAI_REQUIRE_REALAPI"):
        pytest.fail(f"the real-API tier must run in CI, but: {reason}")
    pytest.skip(f"no real API server here: {reason}")


@pytest.fixture(scope="session")
def apiserver_bin() -> str:
    try:
        etcd_binaries()
        return kube_apiserver_binary()
    except Unavailable as e:
        unavailable(str(e))
        raise


@pytest.fixture(scope="module")
def real(apiserver_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    c = RealCluster(tmp_path_factory.mktemp("realapi"), apiserver_bin)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(corefile: str, name: str = "Corefile") -> Server:
        path = tmp_path / name
        path.write_text(corefile)
        s = Server(path)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


# ---------------------------------------------------------------- helpers


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    return (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=3)


def rdatas(r: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in r.answer for rr in rrset)


def eventually(check: Callable[[], object], within: float, what: str) -> float:
    """Poll ``check`` until truthy; returns the seconds it took (bounded by ``within``)."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within}s")
        time.sleep(0.05)


def namespace(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def service(name: str, ns: str, ports=(("http", 80),), **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": spec.pop("labels", {})},
        "spec": {"ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports], **spec},
    }


def endpoint_slice(service_name: str, ns: str, endpoints: list[dict], name: str = "", family: str = "IPv4") -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-{family.lower()}",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def cluster_ips(real: RealCluster, ns: str, name: str) -> list[str]:
    return list(real.request("GET", f"/api/v1/namespaces/{ns}/services/{name}")["spec"]["clusterIPs"])


def corefile(stanzas: str, http: bool = False) -> str:
    extra = "    health 127.0.0.1:0\n    ready 127.0.0.1:0\n" if http else ""
    return f".:0 {{\n    bind 127.0.0.1\n    errors\n{extra}{stanzas}}}\n"


def one_stanza(kubeconfig: Path) -> str:
    return f"    kubernetai cluster.local {{\n        kubeconfig {kubeconfig}\n    }}\n"


def ready_code(server: Server) -> int:
    (port,) = set(server.http.values())
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


# ---------------------------------------------------------------- records of every kind


def test_records_of_every_kind_and_the_filtering_options(real, servers, tmp_path):
    ns, other = "records", "records-other"
    real.apply(namespace(ns, team="dns"))
    real.apply(namespace(other, team="web"))
    real.apply(service("web", ns, labels={"app": "x"}))
    real.apply(service("dual", ns, ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"]))
    real.apply(service("six", ns, ipFamilyPolicy="SingleStack", ipFamilies=["IPv6"]))
    real.apply(service("head", ns, clusterIP="None"))
    real.apply(service("ext", ns, ports=(), type="ExternalName", externalName="example.org"))
    real.apply(service("away", other))
    ready = {"ready": True}
    real.apply(endpoint_slice("web", ns, [{"addresses": ["10.244.1.1"], "conditions": ready}]))
    real.apply(
        endpoint_slice(
            "head",
            ns,
            [
                {"addresses": ["10.244.2.1"], "hostname": "alpha", "conditions": ready},
                {"addresses": ["10.244.2.2"], "conditions": ready},
                {"addresses": ["10.244.2.9"], "conditions": {"ready": False}},
            ],
        )
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/none"}]},
    }
    real.apply(pod)  # no kubelet runs: its IP is set through the status subresource
    real.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/client/status",
        {"status": {"podIP": "10.244.3.3", "podIPs": [{"ip": "10.244.3.3"}]}},
        content_type="application/merge-patch+json",
    )
    kubeconfig = real.kubeconfig(tmp_path / "kubeconfig")
    s = servers(
        corefile(
            f"""    kubernetai cluster.local 10.96.0.0/16 {{
        kubeconfig {kubeconfig}
        pods verified
    }}
    kubernetai only.local {{
        kubeconfig {kubeconfig}
        namespaces {other}
    }}
    kubernetai labels.local {{
        kubeconfig {kubeconfig}
        labels app=x
    }}
    kubernetai teams.local {{
        kubeconfig {kubeconfig}
        namespace_labels team=web
    }}
""",
        )
    )
    web = cluster_ips(real, ns, "web")[0]
    dual = cluster_ips(real, ns, "dual")
    six = cluster_ips(real, ns, "six")[0]
    # ClusterIP: v4, dual-stack, v6
    assert rdatas(ask(s.port, f"web.{ns}.svc.cluster.local")) == [web]
    assert rdatas(ask(s.port, f"dual.{ns}.svc.cluster.local")) == [dual[0]]
    assert rdatas(ask(s.port, f"dual.{ns}.svc.cluster.local", "AAAA")) == [dual[1]]
    assert rdatas(ask(s.port, f"six.{ns}.svc.cluster.local", "AAAA", tcp=True)) == [six]
    r = ask(s.port, f"_http._tcp.web.{ns}.svc.cluster.local", "SRV")
    assert rdatas(r) == [f"0 100 80 web.{ns}.svc.cluster.local."]
    # headless: ready endpoints only, with hostnames
    assert rdatas(ask(s.port, f"head.{ns}.svc.cluster.local")) == ["10.244.2.1", "10.244.2.2"]
    assert rdatas(ask(s.port, f"alpha.head.{ns}.svc.cluster.local")) == ["10.244.2.1"]
    srv = rdatas(ask(s.port, f"_http._tcp.head.{ns}.svc.cluster.local", "SRV"))
    assert srv == [
        f"0 50 8080 10-244-2-2.head.{ns}.svc.cluster.local.",
        f"0 50 8080 alpha.head.{ns}.svc.cluster.local.",
    ]
    # ExternalName, pods verified, PTR, TXT, NXDOMAIN
    assert rdatas(ask(s.port, f"ext.{ns}.svc.cluster.local", "CNAME")) == ["example.org."]
    assert rdatas(ask(s.port, f"10-244-3-3.{ns}.pod.cluster.local")) == ["10.244.3.3"]
    assert ask(s.port, f"10-244-3-4.{ns}.pod.cluster.local").rcode() == dns.rcode.NXDOMAIN
    ptr = ".".join(reversed(web.split("."))) + ".in-addr.arpa"
    assert rdatas(ask(s.port, ptr, "PTR")) == [f"web.{ns}.svc.cluster.local."]
    assert rdatas(ask(s.port, "dns-version.cluster.local", "TXT")) == ['"1.1.0"']
    assert ask(s.port, f"nothing.{ns}.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    # namespaces, labels, namespace_labels
    assert rdatas(ask(s.port, f"away.{other}.svc.only.local")) == cluster_ips(real, other, "away")
    assert ask(s.port, f"web.{ns}.svc.only.local").rcode() == dns.rcode.NXDOMAIN
    assert rdatas(ask(s.port, f"web.{ns}.svc.labels.local")) == [web]
    assert ask(s.port, f"dual.{ns}.svc.labels.local").rcode() == dns.rcode.NXDOMAIN
    assert rdatas(ask(s.port, f"away.{other}.svc.teams.local")) == cluster_ips(real, other, "away")
    assert ask(s.port, f"web.{ns}.svc.teams.local").rcode() == dns.rcode.NXDOMAIN


# ---------------------------------------------------------------- changes, restarts, compaction, size


def test_changes_restart_and_compaction(real, servers, tmp_path):
    ns = "changes"
    real.apply(namespace(ns))
    real.apply(service("keep", ns))
    kubeconfig = real.kubeconfig(tmp_path / "kubeconfig")
    s = servers(corefile(one_stanza(kubeconfig)))
    name = f"keep.{ns}.svc.cluster.local"
    keep = cluster_ips(real, ns, "keep")
    assert rdatas(ask(s.port, name)) == keep

    # Create, update, delete: each visible within a second.
    real.apply(service("late", ns))
    eventually(lambda: rdatas(ask(s.port, f"late.{ns}.svc.cluster.local")), 1.0, "created")
    real.apply(service("head", ns, clusterIP="None"))
    real.apply(endpoint_slice("head", ns, [{"addresses": ["10.244.0.1"], "conditions": {"ready": True}}]))
    eventually(lambda: rdatas(ask(s.port, f"head.{ns}.svc.cluster.local")) == ["10.244.0.1"], 1.0, "endpoints")
    real.apply(endpoint_slice("head", ns, [{"addresses": ["10.244.0.2"], "conditions": {"ready": True}}]))
    eventually(lambda: rdatas(ask(s.port, f"head.{ns}.svc.cluster.local")) == ["10.244.0.2"], 1.0, "updated")
    real.delete(service("late", ns))
    eventually(lambda: ask(s.port, f"late.{ns}.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN, 1.0, "deleted")

    # The API server restarts: names keep resolving; a change made once it is back applies within 2 s.
    real.stop_apiserver()
    for _ in range(5):
        assert rdatas(ask(s.port, name)) == keep
    real.start_apiserver()
    real.apply(service("after-restart", ns))
    took = eventually(lambda: rdatas(ask(s.port, f"after-restart.{ns}.svc.cluster.local")), 2.0, "after restart")
    print(f"after an API server restart, a new Service resolved in {took:.2f}s")

    # Off the network while its history is compacted and it restarts: the watch resumes with a
    # resourceVersion that is gone (410) and kubernetai relists; what was deleted meanwhile goes.
    real.proxy.down = True
    real.delete(service("keep", ns))
    real.apply(service("meanwhile", ns))
    real.compact()
    real.stop_apiserver()
    real.start_apiserver()
    assert rdatas(ask(s.port, name)) == keep  # still the last good data
    real.proxy.down = False
    eventually(lambda: ask(s.port, name).rcode() == dns.rcode.NXDOMAIN, 5.0, "deleted while away")
    assert rdatas(ask(s.port, f"meanwhile.{ns}.svc.cluster.local"))
    assert "410" in s.log() or "relisting" in s.log()


def test_more_services_than_one_list_page(real, servers, tmp_path):
    ns = "many"
    real.apply(namespace(ns))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: real.apply(service(f"s{i}", ns)), range(2100)))
    kubeconfig = real.kubeconfig(tmp_path / "kubeconfig")
    s = servers(corefile(one_stanza(kubeconfig)))
    for i in (0, 499, 500, 1000, 1500, 2099):  # from every list page (500 a page)
        assert rdatas(ask(s.port, f"s{i}.{ns}.svc.cluster.local")) == cluster_ips(real, ns, f"s{i}"), i
    synced = re.search(r"synced \((\d+) Services", s.log())
    assert synced and int(synced.group(1)) >= 2100


# ---------------------------------------------------------------- RBAC


def load_yaml(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_rbac_manifest_as_is_and_a_permission_taken_away(real, servers, tmp_path):
    for obj in load_yaml(ROOT / "etc" / "rbac.yaml"):
        real.apply(obj)
    ns = "rbac"
    real.apply(namespace(ns))
    real.apply(service("web", ns, clusterIP="None"))
    real.apply(endpoint_slice("web", ns, [{"addresses": ["10.244.5.5"], "conditions": {"ready": True}}]))
    token = real.token_for("kube-system", "kubernetai")
    kubeconfig = real.kubeconfig(tmp_path / "kubeconfig", token=token)
    stanza = f"    kubernetai cluster.local {{\n        kubeconfig {kubeconfig}\n        pods verified\n    }}\n"
    s = servers(corefile(stanza, http=True))
    assert rdatas(ask(s.port, f"web.{ns}.svc.cluster.local")) == ["10.244.5.5"]
    assert ready_code(s) == 200

    (role,) = [o for o in load_yaml(ROOT / "etc" / "rbac.yaml") if o["kind"] == "ClusterRole"]
    narrowed = {**role, "rules": [r for r in role["rules"] if "endpointslices" not in r["resources"]]}
    real.apply(narrowed)
    real.proxy.cut()  # the watches reconnect, and now list without that permission
    eventually(lambda: ready_code(s) == 503, 10.0, "/ready says not ready")
    lines = [line for line in s.log().splitlines() if "forbidden (HTTP 403)" in line]
    assert len(lines) == 1 and "endpointslices (API group 'discovery.k8s.io')" in lines[0]
    assert "check RBAC (etc/rbac.yaml), serving the last good data" in lines[0]
    assert rdatas(ask(s.port, f"web.{ns}.svc.cluster.local")) == ["10.244.5.5"]  # still served

    real.apply(role)  # put back: recovers without a restart
    eventually(lambda: ready_code(s) == 200, 40.0, "/ready after the permission is back")
    real.apply(endpoint_slice("web", ns, [{"addresses": ["10.244.5.6"], "conditions": {"ready": True}}]))
    eventually(lambda: rdatas(ask(s.port, f"web.{ns}.svc.cluster.local")) == ["10.244.5.6"], 2.0, "changes again")


# ---------------------------------------------------------------- multicluster and its CRD

SERVICE_IMPORT_CRD = {
    # The Multi-Cluster Services API's ServiceImport (sigs.k8s.io/mcs-api), v1alpha1: its group,
    # names and the fields kubernetai reads, with the rest of the schema left open.
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "serviceimports.multicluster.x-k8s.io"},
    "spec": {
        "group": "multicluster.x-k8s.io",
        "scope": "Namespaced",
        "names": {
            "plural": "serviceimports",
            "singular": "serviceimport",
            "kind": "ServiceImport",
            "shortNames": ["svcim"],
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                                "properties": {
                                    "type": {"type": "string", "enum": ["ClusterSetIP", "Headless"]},
                                    "ips": {"type": "array", "items": {"type": "string"}},
                                    "ports": {
                                        "type": "array",
                                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                    },
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def test_multicluster_without_the_crd_then_with_it(real, servers, tmp_path):
    ns = "mcs"
    real.apply(namespace(ns))
    kubeconfig = real.kubeconfig(tmp_path / "kubeconfig")
    stanza = f"    kubernetai cluster.local clusterset.local {{\n        kubeconfig {kubeconfig}\n        multicluster clusterset.local\n    }}\n"
    s = servers(corefile(stanza, http=True))
    assert ready_code(s) == 200  # without the CRD: ready, and it says why there are no imports
    lines = [line for line in s.log().splitlines() if "CRD" in line]
    assert len(lines) == 1 and "the ServiceImport CRD (serviceimports.multicluster.x-k8s.io" in lines[0]
    assert "404 page not found" not in s.log()
    assert ask(s.port, f"db.{ns}.svc.clusterset.local").rcode() == dns.rcode.NXDOMAIN

    real.apply(SERVICE_IMPORT_CRD)
    eventually(lambda: _crd_served(real), 20.0, "CRD established")
    real.apply(
        {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceImport",
            "metadata": {"name": "db", "namespace": ns},
            "spec": {
                "type": "ClusterSetIP",
                "ips": ["10.100.0.7"],
                "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}],
            },
        }
    )
    eventually(lambda: rdatas(ask(s.port, f"db.{ns}.svc.clusterset.local")) == ["10.100.0.7"], 20.0, "import")
    srv = rdatas(ask(s.port, f"_sql._tcp.db.{ns}.svc.clusterset.local", "SRV"))
    assert srv == [f"0 100 5432 db.{ns}.svc.clusterset.local."]


def _crd_served(real: RealCluster) -> bool:
    try:
        real.request("GET", "/apis/multicluster.x-k8s.io/v1alpha1/serviceimports")
        return True
    except urllib.error.HTTPError:
        return False


# ---------------------------------------------------------------- two clusters in one server


def test_two_clusters_local_then_remote_with_fallthrough(real, apiserver_bin, servers, tmp_path):
    """The kubernetai README's example: the local cluster first, the remote one for what it lacks."""
    remote = RealCluster(tmp_path / "remote", apiserver_bin)
    try:
        remote.start()
        ns = "two"
        for c in (real, remote):
            c.apply(namespace(ns))
        real.apply(service("local-only", ns, clusterIP="None"))
        real.apply(endpoint_slice("local-only", ns, [{"addresses": ["10.244.7.1"], "conditions": {"ready": True}}]))
        remote.apply(service("remote-only", ns, clusterIP="None"))
        remote.apply(endpoint_slice("remote-only", ns, [{"addresses": ["10.245.7.2"], "conditions": {"ready": True}}]))
        remote.apply(service("both", ns, clusterIP="None"))
        remote.apply(endpoint_slice("both", ns, [{"addresses": ["10.245.7.3"], "conditions": {"ready": True}}]))
        real.apply(service("both", ns, clusterIP="None"))
        real.apply(endpoint_slice("both", ns, [{"addresses": ["10.244.7.3"], "conditions": {"ready": True}}]))
        local_kc = real.kubeconfig(tmp_path / "local.kubeconfig", name="local")
        remote_kc = remote.kubeconfig(tmp_path / "remote.kubeconfig", name="remote")
        s = servers(
            corefile(
                f"""    kubernetai cluster.local {{
        kubeconfig {local_kc}
        fallthrough
    }}
    kubernetai cluster.local {{
        kubeconfig {remote_kc}
    }}
""",
            )
        )
        assert rdatas(ask(s.port, f"local-only.{ns}.svc.cluster.local")) == ["10.244.7.1"]
        assert rdatas(ask(s.port, f"remote-only.{ns}.svc.cluster.local")) == ["10.245.7.2"]
        assert rdatas(ask(s.port, f"both.{ns}.svc.cluster.local")) == ["10.244.7.3"]  # the local one first
        assert ask(s.port, f"neither.{ns}.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        real.delete(service("both", ns, clusterIP="None"))  # gone locally: the remote one answers
        eventually(lambda: rdatas(ask(s.port, f"both.{ns}.svc.cluster.local")) == ["10.245.7.3"], 1.0, "fell through")
    finally:
        remote.stop()


# ---------------------------------------------------------------- deployment manifests


def test_deployment_manifests_pass_a_server_side_dry_run(real, tmp_path):
    docs = load_yaml(ROOT / "etc" / "kubernetes" / "kubernetai.yaml") + load_yaml(ROOT / "etc" / "rbac.yaml")
    kinds = set()
    for obj in docs:
        real.apply(obj, dry_run=True)  # raises on anything the API server refuses
        kinds.add(obj["kind"])
    want = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ClusterRole"}
    assert want <= kinds
    (deployment,) = [o for o in docs if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The ConfigMap's Corefile passes --check (in the pod it connects in-cluster; here, by a kubeconfig).
    (config,) = [o for o in docs if o["kind"] == "ConfigMap"]
    kubeconfig = real.kubeconfig(tmp_path / "kubeconfig")
    text = config["data"]["Corefile"].replace("pods verified", f"pods verified\n        kubeconfig {kubeconfig}")
    check = tmp_path / "Corefile"
    check.write_text(text)
    p = _check(check)
    assert p.returncode == 0, p.stderr


def _check(path: Path):
    import subprocess

    from .twistd import env, twistd

    return subprocess.run(
        twistd("--config", str(path), "--check", cwd=path.parent),
        cwd=path.parent,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
