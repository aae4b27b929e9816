"""Manifest builders: Service, ConfigMap and pods of a SwarmTraining, checked as plain dicts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from swarm_contract.manifest import parse_manifest, parse_spec
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import plan_tree
from swarm_operator.builders import build_configmap, build_secret, build_service, tree_of
from swarm_operator.pods import build_pod, build_pods, node_command, pod_nodes
from swarm_operator.resources import GPU_RESOURCE, cpu_threads, gpu_resources
from swarm_operator.settings import Settings, SettingsError

OWNER = {
    "apiVersion": "swarm.ncrsh.io/v1alpha1",
    "kind": "SwarmTraining",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "uid-1"},
}


def _spec(**overrides: Any) -> SwarmSpec:
    return parse_spec(overrides)


def _pod(spec: SwarmSpec, node_id: str, settings: Settings | None = None) -> dict[str, Any]:
    return build_pod(spec, OWNER, tree_of(spec).node(node_id), settings)


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        (
            "root",
            [
                "swarm",
                "node",
                "--manifest",
                "/etc/swarm/manifest.yaml",
                "--node-id",
                "root",
                "--bind-port",
                "5555",
                "--metrics-port",
                "9090",
                "--workdir",
                "/var/lib/swarm",
                "--keys",
                "/var/run/swarm/keys",
            ],
        ),
        (
            "agg-1",
            [
                "swarm",
                "node",
                "--manifest",
                "/etc/swarm/manifest.yaml",
                "--node-id",
                "agg-1",
                "--parent",
                "digits-root.digits.ml.svc:5555",
                "--bind-port",
                "5555",
                "--metrics-port",
                "9090",
                "--workdir",
                "/var/lib/swarm",
                "--keys",
                "/var/run/swarm/keys",
            ],
        ),
        (
            "worker-5",
            [
                "swarm",
                "node",
                "--manifest",
                "/etc/swarm/manifest.yaml",
                "--node-id",
                "worker-5",
                "--parent",
                "digits-agg-1.digits.ml.svc:5555",
                "--bind-port",
                "5555",
                "--metrics-port",
                "9090",
                "--workdir",
                "/var/lib/swarm",
                "--keys",
                "/var/run/swarm/keys",
            ],
        ),
    ],
    ids=["root-has-no-parent", "aggregator-dials-root", "worker-dials-its-aggregator"],
)
def test_node_command(node_id: str, expected: list[str]) -> None:
    """Every pod gets the job's CURVE keys at the same path (its Secret volume holds only its own)."""
    spec = _spec()  # 8 workers, branching 4: root <- agg-0 (0..3), agg-1 (4..7)
    assert node_command(spec, "digits", "ml", tree_of(spec).node(node_id)) == expected
    assert _pod(spec, node_id)["spec"]["containers"][0]["command"] == expected


def test_ports_follow_the_spec() -> None:
    spec = _spec(network={"dataPort": 6000, "metricsPort": 9100})
    cmd = node_command(spec, "j", "ns", tree_of(spec).node("worker-0"))
    assert cmd[cmd.index("--parent") + 1] == "j-agg-0.j.ns.svc:6000"
    assert cmd[cmd.index("--bind-port") + 1 :][:3] == ["6000", "--metrics-port", "9100"]


def test_reshuffled_workers_get_every_bottom_aggregator() -> None:
    spec = _spec(topology={"branchingFactor": 4, "reshuffle": True})
    cmd = node_command(spec, "j", "ns", tree_of(spec).node("worker-6"))
    peers = cmd[cmd.index("--peers") + 1]
    assert peers == "agg-0=j-agg-0.j.ns.svc:5555,agg-1=j-agg-1.j.ns.svc:5555"
    assert "--peers" not in node_command(spec, "j", "ns", tree_of(spec).node("agg-0"))


def test_pod_identity_and_dns() -> None:
    pod = _pod(_spec(), "worker-3")
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "digits-worker-3"
    assert meta["namespace"] == "ml"
    assert (spec["hostname"], spec["subdomain"]) == ("digits-worker-3", "digits")
    assert spec["restartPolicy"] == "Never"
    assert meta["labels"] == {
        "app.kubernetes.io/name": "ncrsh-swarm",
        "app.kubernetes.io/instance": "digits",
        "app.kubernetes.io/part-of": "ncrsh-swarm",
        "app.kubernetes.io/managed-by": "ncrsh-swarm-operator",
        "app.kubernetes.io/component": "worker",
        "swarm.ncrsh.io/job": "digits",
        "swarm.ncrsh.io/role": "worker",
        "swarm.ncrsh.io/node": "worker-3",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "swarm.ncrsh.io/v1alpha1",
            "kind": "SwarmTraining",
            "name": "digits",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize(
    ("gpus", "node_id", "gpu_count", "fraction"),
    [
        (0, "worker-0", None, None),
        (1, "worker-0", "1", None),
        (2, "worker-0", "2", None),
        (0.5, "worker-0", "1", "0.5"),
        (1.5, "worker-0", "2", None),
        (1, "root", None, None),
        (1, "agg-0", None, None),
    ],
    ids=[
        "cpu-only",
        "one",
        "two",
        "half-shares-one",
        "one-and-a-half-rounds-up",
        "root-cpu",
        "aggregator-cpu",
    ],
)
def test_gpu_requests_equal_limits(
    gpus: float, node_id: str, gpu_count: str | None, fraction: str | None
) -> None:
    pod = _pod(_spec(workers={"resources": {"gpus": gpus}}), node_id)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["requests"].get(GPU_RESOURCE) == gpu_count
    assert resources["limits"].get(GPU_RESOURCE) == gpu_count
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env.get("SWARM_GPU_FRACTION") == fraction
    assert pod["metadata"].get("annotations", {}).get("swarm.ncrsh.io/gpu-fraction") == (
        f"{gpus:g}" if gpu_count else None
    )


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [(0, {}), (0.25, {GPU_RESOURCE: "1"}), (3, {GPU_RESOURCE: "3"})],
    ids=["none", "fraction", "whole"],
)
def test_gpu_resources(gpus: float, expected: dict[str, str]) -> None:
    assert gpu_resources(gpus) == (expected, expected)


SHARED = "nvidia.com/gpu.shared"


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        (0, {}),
        (0.5, {SHARED: "1"}),
        (0.999, {SHARED: "1"}),
        (1, {"example.com/gpu": "1"}),
        (2.5, {"example.com/gpu": "3"}),
    ],
    ids=["none", "half", "almost-one", "one", "two-and-a-half"],
)
def test_fractions_ask_for_one_shared_replica_and_whole_gpus_for_devices(
    gpus: float, expected: dict[str, str]
) -> None:
    assert gpu_resources(gpus, "example.com/gpu", SHARED) == (expected, expected)


@pytest.mark.parametrize(
    ("gpus", "resource", "count"),
    [(0.5, SHARED, "1"), (0.25, SHARED, "1"), (2, GPU_RESOURCE, "2")],
    ids=["half", "quarter", "two-whole"],
)
def test_resource_names_come_from_the_settings(gpus: float, resource: str, count: str) -> None:
    settings = Settings(shared_gpu_resource_name=SHARED)
    pod = _pod(_spec(workers={"resources": {"gpus": gpus}}), "worker-0", settings)
    resources = pod["spec"]["containers"][0]["resources"]
    gpu_keys = {k for k in resources["limits"] if "gpu" in k}
    assert gpu_keys == {resource}
    assert resources["requests"][resource] == resources["limits"][resource] == count


@pytest.mark.parametrize(
    ("aggregator", "node_id", "requests", "limits", "fraction"),
    [
        ({}, "root", {"cpu": "2", "memory": "4Gi"}, {"memory": "4Gi"}, None),
        ({"cpu": "500m"}, "agg-0", {"cpu": "500m", "memory": "4Gi"}, {"memory": "4Gi"}, None),
        (
            {"cpu": "4", "memory": "16Gi", "gpus": 1},
            "root",
            {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: "1"},
            {"memory": "16Gi", GPU_RESOURCE: "1"},
            None,
        ),
        (
            {"gpus": 0.5},
            "agg-1",
            {"cpu": "2", "memory": "4Gi", SHARED: "1"},
            {"memory": "4Gi", SHARED: "1"},
            "0.5",
        ),
        (
            {"cpu": "8", "gpus": 1},
            "worker-3",
            {"cpu": "2", "memory": "4Gi", SHARED: "1"},
            {"memory": "4Gi", SHARED: "1"},
            "0.25",
        ),
    ],
    ids=[
        "root-takes-workers",
        "aggregator-own-cpu",
        "root-whole-gpu",
        "aggregator-half-gpu",
        "worker-unaffected",
    ],
)
def test_aggregator_resources(
    aggregator: dict[str, Any],
    node_id: str,
    requests: dict[str, str],
    limits: dict[str, str],
    fraction: str | None,
) -> None:
    spec = _spec(
        workers={"resources": {"cpu": "2", "memory": "4Gi", "gpus": 0.25}},
        topology={"aggregatorResources": aggregator},
    )
    settings = Settings(shared_gpu_resource_name=SHARED, gpu_runtime_class="nvidia")
    pod = _pod(spec, node_id, settings)
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"requests": requests, "limits": limits}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("SWARM_GPU_FRACTION") == fraction
    assert env["OMP_NUM_THREADS"] == str(cpu_threads(requests["cpu"]))
    has_gpu = any("gpu" in k for k in limits)
    assert ("runtimeClassName" in pod["spec"]) == has_gpu
    assert ("annotations" in pod["metadata"]) == has_gpu


@pytest.mark.parametrize(
    "name", ["gpu", "nvidia.com/", "/gpu", "Nvidia.com/gpu", "nvidia.com/gpu shared"], ids=str
)
def test_a_bad_gpu_resource_name_is_refused(name: str) -> None:
    with pytest.raises(SettingsError, match="SWARM_SHARED_GPU_RESOURCE_NAME"):
        Settings.from_env({"SWARM_SHARED_GPU_RESOURCE_NAME": name})


def test_gpu_resource_names_from_the_environment() -> None:
    settings = Settings.from_env(
        {"SWARM_GPU_RESOURCE_NAME": "amd.com/gpu", "SWARM_SHARED_GPU_RESOURCE_NAME": SHARED}
    )
    assert (settings.gpu_resource_name, settings.shared_gpu_resource_name) == ("amd.com/gpu", SHARED)
    assert (Settings().gpu_resource_name, Settings().shared_gpu_resource_name) == (GPU_RESOURCE, GPU_RESOURCE)


def test_cpu_and_memory_from_spec() -> None:
    pod = _pod(_spec(workers={"resources": {"cpu": "500m", "memory": "1Gi"}}), "worker-0")
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }


def test_restricted_security_context() -> None:
    pod = _pod(_spec(), "worker-0")
    psc, csc = pod["spec"]["securityContext"], pod["spec"]["containers"][0]["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_hit_healthz_on_the_metrics_port(probe: str) -> None:
    container = _pod(_spec(), "worker-0")["spec"]["containers"][0]
    assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize(
    ("checkpoint", "mount", "source"),
    [
        ({}, "/var/lib/swarm/checkpoints", {"emptyDir": {}}),
        ({"path": "/ckpt"}, "/ckpt", {"emptyDir": {}}),
        (
            {"claimName": "swarm-checkpoints"},
            "/var/lib/swarm/checkpoints",
            {"persistentVolumeClaim": {"claimName": "swarm-checkpoints"}},
        ),
        ({"claimName": "ckpt", "path": "/ckpt"}, "/ckpt", {"persistentVolumeClaim": {"claimName": "ckpt"}}),
    ],
    ids=["default-path", "spec-path", "claim", "claim-at-spec-path"],
)
def test_root_checkpoint_volume(checkpoint: dict[str, Any], mount: str, source: dict[str, Any]) -> None:
    pod = _pod(_spec(checkpoint=checkpoint), "root")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes["checkpoints"] == {"name": "checkpoints", **source}
    assert mounts["checkpoints"] == {"name": "checkpoints", "mountPath": mount}  # writable
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["SWARM_CHECKPOINT_DIR"] == mount
    # The kubelet gives a claim's files the pod's fsGroup (group-writable, setgid) on volume types
    # that honour it: the process's own group, so the non-root root process can write there.
    psc = pod["spec"]["securityContext"]
    assert psc["fsGroup"] == psc["runAsGroup"] == psc["runAsUser"] != 0


def test_only_the_root_has_a_checkpoint_volume() -> None:
    for node_id in ("agg-0", "worker-0"):
        assert "checkpoints" not in {v["name"] for v in _pod(_spec(), node_id)["spec"]["volumes"]}


def test_settings_shape_pods() -> None:
    settings = Settings(image_pull_policy="Never", pod_service_account="swarm", gpu_runtime_class="nvidia")
    pod = _pod(_spec(workers={"resources": {"gpus": 1}}), "worker-0", settings)
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    assert pod["spec"]["serviceAccountName"] == "swarm"
    assert pod["spec"]["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in _pod(_spec(), "worker-0", settings)["spec"]


@pytest.mark.parametrize(("seconds", "expected"), [(None, 30), (0, 0), (120, 120)])
def test_pods_leave_a_lost_node_after_the_setting(seconds: int | None, expected: int) -> None:
    settings = Settings() if seconds is None else Settings(node_lost_seconds=seconds)
    for node_id in ("root", "agg-0", "worker-0"):
        tolerations = _pod(_spec(), node_id, settings)["spec"]["tolerations"]
        assert {(t["key"], t["effect"], t["tolerationSeconds"]) for t in tolerations} == {
            ("node.kubernetes.io/unreachable", "NoExecute", expected),
            ("node.kubernetes.io/not-ready", "NoExecute", expected),
        }


@pytest.mark.parametrize(
    ("cpu", "threads"), [("200m", 1), ("1", 1), ("1500m", 1), ("2", 2), ("2.5", 2), ("16", 16), ("x", 1)]
)
def test_compute_threads_follow_the_cpu_request(cpu: str, threads: int) -> None:
    assert cpu_threads(cpu) == threads
    pod = _pod(_spec(workers={"resources": {"cpu": cpu}}), "worker-0")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(threads)


def test_headless_service() -> None:
    svc = build_service(_spec(), OWNER)
    assert svc["metadata"]["name"] == "digits"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"swarm.ncrsh.io/job": "digits"}
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("data", 5555), ("metrics", 9090)]


def test_configmap_holds_a_manifest_swarm_node_can_load() -> None:
    spec = _spec(workers={"replicas": 3}, training={"rounds": 7})
    cm = build_configmap(spec, OWNER)
    assert cm["metadata"]["name"] == "digits-config"
    doc = yaml.safe_load(cm["data"]["manifest.yaml"])
    manifest = parse_manifest(doc)
    assert (manifest.name, manifest.namespace) == ("digits", "ml")
    assert manifest.spec == spec


@pytest.mark.parametrize(
    ("replicas", "branching", "pods"),
    [(1, 4, 2), (4, 4, 5), (8, 4, 11), (17, 4, 25), (64, 8, 73)],
    ids=["single-worker", "flat", "two-aggregators", "three-levels", "wide"],
)
def test_one_pod_per_tree_node_parents_first(replicas: int, branching: int, pods: int) -> None:
    spec = _spec(workers={"replicas": replicas}, topology={"branchingFactor": branching})
    built = build_pods(spec, OWNER)
    names = [p["metadata"]["name"] for p in built]
    assert len(names) == len(set(names)) == pods
    tree = plan_tree(replicas, branching)
    position = {n.id: i for i, n in enumerate(pod_nodes(spec))}
    for node in tree.nodes.values():
        if node.parent is not None:
            assert position[node.parent] < position[node.id]
    assert next(n.id for n in pod_nodes(spec)) == "root"


REPLICATED = {"consensus": {"replicas": 4}, "checkpoint": {"claimName": "ckpt"}}


def test_root_replicas_are_pods_that_reach_each_other_on_the_consensus_port() -> None:
    spec = _spec(**REPLICATED)  # root <- agg-0, agg-1 <- 8 workers; 3 more root replicas
    pods = {p["metadata"]["labels"]["swarm.ncrsh.io/node"]: p for p in build_pods(spec, OWNER)}
    assert list(pods)[:4] == ["root", "root-1", "root-2", "root-3"]  # before the children dial them
    assert len(pods) == len(tree_of(spec).nodes) + 3
    replica = pods["root-2"]
    assert replica["metadata"]["name"] == "digits-root-2"
    assert replica["metadata"]["labels"]["swarm.ncrsh.io/role"] == "root"
    (container,) = replica["spec"]["containers"]
    argv = container["command"]
    assert argv[argv.index("--consensus-port") + 1] == "5556"
    peers = dict(p.split("=") for p in argv[argv.index("--peers") + 1].split(","))
    assert peers == {r: f"digits-{r}.digits.ml.svc:5556" for r in ("root", "root-1", "root-3")}
    assert {"name": "consensus", "containerPort": 5556, "protocol": "TCP"} in container["ports"]
    # Only `root` mounts the claim: R pods cannot share one ReadWriteOnce volume.
    claims = {n: [v for v in p["spec"]["volumes"] if "persistentVolumeClaim" in v] for n, p in pods.items()}
    assert [n for n, c in claims.items() if c] == ["root"]
    checkpoints = [v for v in replica["spec"]["volumes"] if v["name"] == "checkpoints"]
    assert checkpoints == [{"name": "checkpoints", "emptyDir": {}}]
    # Every child of the root talks to all four; nobody else opens a consensus port.
    child = pods["agg-1"]["spec"]["containers"][0]
    assert child["command"][child["command"].index("--replicas") + 1].count("=") == 4
    assert "consensus" not in {p["name"] for p in child["ports"]}
    service_ports = {p["name"]: p["port"] for p in build_service(spec, OWNER)["spec"]["ports"]}
    assert service_ports["consensus"] == 5556
    assert "consensus" not in {p["name"] for p in build_service(_spec(), OWNER)["spec"]["ports"]}


def test_each_pod_mounts_only_its_own_secret_key_and_the_public_keys_it_needs() -> None:
    spec = _spec()  # root <- agg-0 (workers 0..3), agg-1 (workers 4..7)
    secret = build_secret(spec, OWNER)
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert len(secret["stringData"]) == 4 * len(tree_of(spec).nodes)  # a CURVE and an ed25519 pair each
    pod = _pod(spec, "agg-1")
    (keys,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert keys["secret"]["secretName"] == secret["metadata"]["name"]
    paths = {item["path"] for item in keys["secret"]["items"]}
    secrets = {p for p in paths if p.endswith((".secret", ".sign"))}
    assert secrets == {"agg-1.secret", "agg-1.sign"}
    publics = {p.removesuffix(".public") for p in paths if p.endswith(".public")}
    assert publics == {"agg-1", "root", "worker-4", "worker-5", "worker-6", "worker-7"}
    # With root replicas the Secret holds theirs too, and a top-level pod may dial each of them.
    replicated = _spec(consensus={"replicas": 4})
    assert len(build_secret(replicated, OWNER)["stringData"]) == 4 * (len(tree_of(spec).nodes) + 3)
    (replicated_keys,) = [v for v in _pod(replicated, "agg-1")["spec"]["volumes"] if "secret" in v]
    assert {"root-3.public", "root-3.verify"} <= {i["path"] for i in replicated_keys["secret"]["items"]}
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == keys["name"]]
    assert mount["mountPath"] == "/var/run/swarm/keys"
    assert mount["readOnly"] is True
