"""Labels and names of a job's Kubernetes objects, which the operator sets and everything else finds.

    <job>                            the headless Service (service_name)
    <job>-config                     the ConfigMap holding the manifest (configmap_name)
    <job>-<node id>                  the pod of one tree node (pod_name), also its host name
    <job>-<node id>.<job>.<ns>.svc   that pod's stable DNS name (node_host): a replaced pod keeps it,
                                     so its children find their parent again

Every object of a job carries `swarm.ncrsh.io/job=<job>`; pods add their role and node id. Pure.
"""

from __future__ import annotations

from swarm_contract.spec import API_GROUP
from swarm_contract.topology import TreeNode

JOB_LABEL = f"{API_GROUP}/job"
ROLE_LABEL = f"{API_GROUP}/role"
NODE_LABEL = f"{API_GROUP}/node"
#: On a worker pod that shares a GPU: the fraction of the device it may use.
GPU_FRACTION_ANNOTATION = f"{API_GROUP}/gpu-fraction"


def service_name(job: str) -> str:
    return job


def pod_name(job: str, node_id: str) -> str:
    return f"{job}-{node_id}"


def configmap_name(job: str) -> str:
    return f"{job}-config"


def node_host(job: str, namespace: str, node_id: str) -> str:
    """Stable DNS name of a node's pod through the headless Service `<job>`."""
    return f"{pod_name(job, node_id)}.{service_name(job)}.{namespace}.svc"


def labels(job: str, node: TreeNode | None = None) -> dict[str, str]:
    """The labels of a job's object; of a node's pod when `node` is given."""
    out = {
        "app.kubernetes.io/name": "ncrsh-swarm",
        "app.kubernetes.io/instance": job,
        "app.kubernetes.io/part-of": "ncrsh-swarm",
        "app.kubernetes.io/managed-by": "ncrsh-swarm-operator",
        JOB_LABEL: job,
    }
    if node is not None:
        out["app.kubernetes.io/component"] = node.role
        out[ROLE_LABEL] = node.role
        out[NODE_LABEL] = node.id
    return out
