"""User path: checkpoints that outlive the root pod (examples/checkpointed.yaml, `checkpoint.claimName`).

`kubectl delete pod` of the root mid-run: the operator replaces the pod, the new root resumes at the
checkpoint its predecessor wrote when it was stopped (not at round 0), the job's `status.round`
never goes back, any worker that held a later round says so in one WARNING and goes back no further
than the checkpoint, and the run Succeeds. The job runs beside the jobs of test_3_byzantine.py (its
`jobs` fixture applies all of them before any is awaited), so it costs the suite no serial run.

The test cluster has no volume provisioner: the claim is bound to a `local` PersistentVolume made
here, a directory on the host owned by root with mode 0755, so only the pod's fsGroup (which the
kubelet applies to `local` volumes) lets the non-root root process write its checkpoints. On
another cluster (`--existing-cluster`) the example's claim is used as is, with the default StorageClass.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import yaml

from tests.cluster.harness import poll

from .kube import EXAMPLES, Kube, sized_for_test_nodes

NAMESPACE = "e2e-checkpoint"
ROUNDS = 60
EVERY_ROUNDS = 3
RESUMED = re.compile(r"root: resumed from checkpoint at round (\d+)")
#: swarm_worker.node.model_sync.accepted_round's WARNING: a node applied an older round's model.
ROLLBACK = re.compile(
    r"(?P<node>\S+): round (?P<held>\d+) -> (?P<to>\d+): the parent \S+ sent an older model"
)


def checkpointed_job(kube: Kube) -> dict[str, Any]:
    """examples/checkpointed.yaml as one `kubectl apply`-able List (the claim, then the job): two
    workers under the root, 60 rounds, a checkpoint every 3. On the harness's own cluster the claim
    is bound to a `local` PersistentVolume created here first."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "checkpointed.yaml").read_text()) if d]
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    job = sized_for_test_nodes(next(d for d in docs if d["kind"] == "SwarmTraining"))
    if kube.cluster is not None:
        claim["spec"].update(storageClassName="", volumeName=_local_volume(kube, claim))
    spec = job["spec"]
    spec["workers"]["replicas"] = 2
    spec["topology"]["branchingFactor"] = 2
    spec["training"].update(rounds=ROUNDS, syncEvery=30, roundDeadlineSeconds=10)
    spec["checkpoint"]["everyRounds"] = EVERY_ROUNDS
    return {"apiVersion": "v1", "kind": "List", "items": [claim, job]}


def _local_volume(kube: Kube, claim: dict[str, Any]) -> str:
    """A `local` PersistentVolume on the first node for `claim`, over a fresh root-owned directory."""
    name = f"{NAMESPACE}-checkpoints"
    path = kube.own_cluster().root / "volumes" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    path.chmod(0o755)  # not writable by uid 10001: the pod's fsGroup must make it so
    node = sorted(n["metadata"]["name"] for n in kube.items("nodes"))[0]
    kube.kubectl("delete", "persistentvolume", name, "--ignore-not-found", "--wait=true")
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": dict(claim["spec"]["resources"]["requests"]),
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                }
            },
        },
    }
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(volume))
    return name


def check_deleted_root_resumes(kube: Kube, applied: dict[str, Any]) -> str:
    """Delete the root pod once a checkpoint exists; assert the resume (module docstring). Returns
    a line for the suite's report."""
    job = next(d for d in applied["items"] if d["kind"] == "SwarmTraining")
    name = job["metadata"]["name"]
    seen: list[int] = []  # status.round at every poll, from the first checkpoint to the end

    def status() -> dict[str, Any]:
        return kube.watch_rounds(NAMESPACE, name, seen)

    poll(
        f"{name} past its first checkpoint",
        lambda: status().get("round", 0) > EVERY_ROUNDS,
        600,
        interval=1.0,
    )
    old = kube.pod_of(NAMESPACE, name, "root")
    assert old is not None
    before = status()["round"]
    assert before < ROUNDS, f"the run ended (round {before}) before the root could be deleted mid-run"
    kube.kubectl("delete", "pod", "-n", NAMESPACE, old["metadata"]["name"], "--wait=true", timeout=120)
    deleted_at = len(seen)

    def replaced() -> dict[str, Any] | None:
        pod = kube.pod_of(NAMESPACE, name, "root")
        if pod is None or pod["metadata"]["uid"] == old["metadata"]["uid"]:
            return None
        return pod if pod["status"].get("phase") == "Running" else None

    root = poll("the operator to replace the root pod", replaced, 300, interval=1.0)
    resumed_at = poll(
        "the new root to resume from its checkpoint",
        lambda: RESUMED.findall(
            kube.kubectl("logs", "-n", NAMESPACE, root["metadata"]["name"], check=False).stdout
        ),
        300,
        interval=2.0,
    )
    assert len(resumed_at) == 1, resumed_at
    resumed = int(resumed_at[0])
    # SIGTERM made the old root write a checkpoint at the round it had reached (test_root_sigterm).
    assert 0 < before <= resumed < ROUNDS, (before, resumed)

    # Once the new root has closed two rounds, every worker holds the resumed model or a later one.
    poll(
        f"{name} two rounds past the resume",
        lambda: status().get("round", 0) >= resumed + 2,
        300,
        interval=1.0,
    )
    for i in range(job["spec"]["workers"]["replicas"]):
        node = f"worker-{i}"
        log = kube.kubectl("logs", "-n", NAMESPACE, f"{name}-{node}").stdout
        rollbacks = [(int(m["held"]), int(m["to"])) for m in ROLLBACK.finditer(log) if m["node"] == node]
        assert all(held > to >= resumed for held, to in rollbacks), (node, resumed, rollbacks)

    final = poll(
        f"{name} to succeed", lambda: (st := status()).get("phase") == "Succeeded" and st, 600, interval=1.0
    )
    assert final["round"] == ROUNDS
    assert seen == sorted(seen), f"status.round went back: {seen}"
    assert min(seen[deleted_at:]) >= before, seen
    assert final["restarts"]["byNode"] == {"root": 1}, final["restarts"]
    root_entry = next(n for n in final["nodes"] if n["id"] == "root")
    assert root_entry["restarts"] == 1
    kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
    if kube.cluster is not None:
        kube.kubectl("delete", "persistentvolume", f"{NAMESPACE}-checkpoints", "--wait=false")
    return f"e2e checkpoint: root deleted at round {before}, resumed at {resumed}, {ROUNDS} rounds Succeeded"
