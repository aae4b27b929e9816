"""User path 8: a node dies mid-run (its kubelet, containerd and containers are SIGKILLed, as when
the machine loses power). The control plane marks it NotReady, the taint manager evicts its pods
after their `unreachable` toleration, the operator records each as NodeLost, force-deletes it and
creates its replacement, which lands on the other node; the run still succeeds. When the operator's
own pod was on that node, it is lost and replaced too.

Runs last but one (the node stays down for the rest of the session) and only on the test cluster's
own nodes: a user's cluster is not ours to break."""

from __future__ import annotations

import pytest

from .kube import Kube, example, poll, sized_for_test_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

NAMESPACE = "e2e-node-lost"
JOB = "node-lost"


def _node_of(kube: Kube, node_id: str) -> str:
    pod = kube.pod_of(NAMESPACE, JOB, node_id)
    assert pod is not None, node_id
    assert pod["spec"].get("nodeName"), node_id
    return str(pod["spec"]["nodeName"])


def test_pods_of_a_lost_node_are_replaced_on_the_other_node(chart: Kube) -> None:
    if chart.cluster is None:
        pytest.skip("stopping a node needs the test cluster's own nodes, not --existing-cluster")
    manifest = sized_for_test_nodes(example("training.yaml"), name=JOB)
    # Rounds wait for every worker (minPeers = replicas): the run cannot finish around the lost
    # pods, it stalls until their replacements report, however fast the rounds are.
    manifest["spec"]["training"]["rounds"] = 300
    manifest["spec"]["training"]["minPeers"] = manifest["spec"]["workers"]["replicas"]
    # Hearing from every worker leaves no room for misbehaving children: a spec asking for both is
    # refused (swarm_contract.tolerance), so this run tolerates none.
    manifest["spec"]["robustness"]["f"] = 0
    chart.namespace(NAMESPACE)
    assert chart.apply(manifest, NAMESPACE).returncode == 0
    chart.wait_round(NAMESPACE, JOB, 3, timeout=300)

    # Lose the node without the root: the root's checkpoints live in an emptyDir here (no
    # PersistentVolume provisioner), and a lost root would restart the run rather than resume it.
    pods = {p["metadata"]["labels"]["swarm.ncrsh.io/node"]: p for p in chart.pods(NAMESPACE, JOB)}
    survivor = _node_of(chart, "root")
    victim = next(n for n in ("node0", "node1") if n != survivor)
    lost = sorted(k for k, p in pods.items() if p["spec"].get("nodeName") == victim)
    assert lost, f"the scheduler put every pod on {survivor}"
    # The operator's pod may be on the victim too: it goes down with the node and its Deployment
    # brings it back on the survivor (tests/e2e/values.yaml tolerates a lost node for 20 s).
    chart.stop_node(victim)

    def replaced_elsewhere() -> bool:
        for node_id in lost:
            pod = chart.pod_of(NAMESPACE, JOB, node_id)
            if pod is None or pod["spec"].get("nodeName") != survivor:
                return False
        return True

    poll(f"{', '.join(lost)} replaced on {survivor}", replaced_elsewhere, timeout=300, interval=2)
    final = chart.wait_phase(NAMESPACE, JOB, {"Succeeded"}, timeout=600)
    assert final["restarts"]["byCause"].get("NodeLost", 0) >= len(lost), final["restarts"]
    for node_id in lost:
        assert final["restarts"]["lastFailure"][node_id].startswith("NodeLost"), final["restarts"]
    assert final["accuracy"] >= 0.9
    node = chart.get("node", victim)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "Unknown"
    chart.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
    # What an admin does about a machine that is gone for good: the pods still bound to it (the
    # operator's old pod, when it was there) can never finish terminating, so they are force-deleted.
    chart.kubectl(
        "delete", "pods", "-A", "--field-selector", f"spec.nodeName={victim}", "--force", "--grace-period=0"
    )
