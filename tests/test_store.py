"""The store's indexes against a brute-force scan, under random writes (one object per key, or several)."""

from __future__ import annotations

import random

import pytest

from kubernetai.cluster.objects import Endpoint, EndpointSlice, Service
from kubernetai.cluster.store import ClusterStore


def _slice(rng: random.Random, i: int) -> EndpointSlice:
    # Few addresses, so that keys are often shared by two or three slices, then by one again.
    eps = tuple(Endpoint(addresses=(f"10.1.0.{rng.randrange(6)}",)) for _ in range(rng.randrange(3)))
    return EndpointSlice(namespace="a", name=f"s{i}", service=f"svc{i % 3}", endpoints=eps, ports=())


def _service(rng: random.Random, i: int) -> Service:
    return Service(
        namespace="a", name=f"svc{i}", type="ClusterIP", cluster_ips=(f"10.96.0.{rng.randrange(4)}",), ports=()
    )


@pytest.mark.parametrize("seed", range(10))
def test_every_index_answers_what_a_scan_of_the_objects_answers(seed):
    rng = random.Random(seed)
    store = ClusterStore()
    for _ in range(400):
        i = rng.randrange(8)
        kind = rng.choice(["EndpointSlice", "Service"])
        if rng.random() < 0.3:
            store.apply("DELETED", kind, _slice(rng, i) if kind == "EndpointSlice" else _service(rng, i))
        else:
            store.apply("MODIFIED", kind, _slice(rng, i) if kind == "EndpointSlice" else _service(rng, i))
        slices = list(store.objects["EndpointSlice"].values())
        services = list(store.objects["Service"].values())
        for n in range(6):
            ip = f"10.1.0.{n}"
            want = {sl.key for sl in slices if any(ip in ep.addresses for ep in sl.endpoints)}
            assert {sl.key for sl in store.slices_with_ip(ip)} == want
        for n in range(4):
            ip = f"10.96.0.{n}"
            assert {s.key for s in store.services_with_ip(ip)} == {s.key for s in services if ip in s.cluster_ips}
        for n in range(3):
            want_by_service = {sl.key for sl in slices if sl.service == f"svc{n}"}
            assert {sl.key for sl in store.slices("a", f"svc{n}")} == want_by_service
        # A key no object has any more is gone, not an empty bucket.
        assert all(bucket not in ({}, None) for table in store.indexes.values() for bucket in table.values())


def test_objects_pickle_as_their_arguments_and_come_back_equal():
    """The manifests child and --workers send objects pickled; no per-object state dict on the way."""
    import pickle

    from kubernetai.cluster.objects import Namespace, Pod, Port, ServiceImport

    port = Port("http", "TCP", 80)
    values = [
        port,
        Service("a", "web", "ClusterIP", ("10.0.0.1",), (port,), "", ("192.0.2.1", "lb.example.com")),
        EndpointSlice("a", "web-x", "web", (Endpoint(("10.1.0.1",), "h", True, "pod-0", "z"),), (port,), False, "c"),
        Pod("a", "pod-0", ("10.1.0.1",)),
        Namespace("a"),
        ServiceImport("a", "web", "ClusterSetIP", ("10.2.0.1",), (port,)),
    ]
    for value in values:
        back = pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        assert back == value and type(back) is type(value)
        assert b"__getstate__" not in pickle.dumps(value) and type(value).__reduce__(value)[0] is type(value)
    sl = pickle.loads(pickle.dumps(values[2]))
    assert sl.ready_addresses == 1  # computed again, not carried
