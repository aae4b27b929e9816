"""The SwarmTraining CRD against a real kube-apiserver: it is Established, every example is
accepted by server-side dry run, and the schema and CEL rules reject bad specs with a message that
names the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .binaries import CONTROL_PLANE_BINARIES, not_built
from .fixtures import kube_cluster  # noqa: F401
from .harness import kubectl, poll

NOT_BUILT = not_built(*CONTROL_PLANE_BINARIES)
pytestmark = [pytest.mark.cluster, pytest.mark.skipif(bool(NOT_BUILT), reason=NOT_BUILT)]

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "swarmtraining.yaml"
#: Every example: the operator runs each of them.
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
NAMESPACE = "crd-test"


def install_crd(kubeconfig: Path) -> None:
    """Apply crds/ server-side and wait until the apiserver serves it (Established)."""
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(CRD))
    poll(
        "the CRD to be Established",
        lambda: (
            kubectl(
                kubeconfig,
                "get",
                "crd",
                "swarmtrainings.swarm.ncrsh.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                check=False,  # just after the apply the apiserver may not list it yet: poll again
            ).stdout
            == "True"
        ),
    )


@pytest.fixture(scope="module")
def crd_cluster(kube_cluster: Path) -> Path:  # noqa: F811
    """The cluster with the CRD applied and Established, and the test namespace."""
    install_crd(kube_cluster)
    kubectl(kube_cluster, "create", "namespace", NAMESPACE, check=False)
    return kube_cluster


def test_crd_is_established_with_its_names(crd_cluster: Path) -> None:
    crd = json.loads(kubectl(crd_cluster, "get", "crd", "swarmtrainings.swarm.ncrsh.io", "-o", "json").stdout)
    names = crd["status"]["acceptedNames"]
    assert (names["kind"], names["plural"]) == ("SwarmTraining", "swarmtrainings")
    assert "swt" in names["shortNames"]
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["NamesAccepted"] == "True"
    assert conditions.get("NonStructuralSchema", "False") == "False"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_is_accepted_by_server_side_dry_run(crd_cluster: Path, example: Path) -> None:
    result = kubectl(
        crd_cluster, "apply", "--dry-run=server", "-n", NAMESPACE, "-f", str(example), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "created (server dry run)" in result.stdout


def _digits() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / "digits.yaml").read_text()))


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(_digits())
    obj["metadata"]["name"] = "bad"
    *parents, leaf = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return obj


INVALID = [
    (
        "negative-rounds",
        _with("spec.training.rounds", -1),
        ["spec.training.rounds", "should be greater than or equal to 1"],
    ),
    ("unknown-field", _with("spec.training.roundz", 3), ['unknown field "spec.training.roundz"']),
    (
        "min-peers-above-replicas",
        _with("spec.training.minPeers", 9),
        ["spec.training.minPeers", "training.minPeers exceeds workers.replicas"],
    ),
    (
        "byzantine-rank-out-of-range",
        _with("spec.simulation", {"byzantine": [{"worker": 8, "attack": "alie"}]}),
        ["spec.simulation.byzantine", "not a rank below workers.replicas"],
    ),
    (
        "pipeline-with-alpha",
        _with("spec.training", {"pipeline": True, "alpha": 0.5}),
        ["spec.training.pipeline", "cannot be combined with training.alpha > 0"],
    ),
    (
        "lm-dirichlet",
        _with("spec.task", {"name": "lm", "partition": "dirichlet"}),
        ["spec.task.partition", "needs class labels"],
    ),
    (
        "ports-clash",
        _with("spec.network", {"consensusPort": 5555}),
        ["spec.network", "dataPort, metricsPort and consensusPort must differ"],
    ),
    (
        "bad-enum",
        _with("spec.compression.method", "zip"),
        ["spec.compression.method", "Unsupported value", '"zip"'],
    ),
    (
        "bad-name",
        {**_with("spec.training.rounds", 3), "metadata": {"name": "a" * 52}},
        ["DNS-1035 label of at most 51"],
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected"), [(s, e) for _, s, e in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_spec_is_rejected_naming_the_field(
    crd_cluster: Path, spec: dict[str, Any], expected: list[str]
) -> None:
    result = kubectl(
        crd_cluster,
        "apply",
        "--dry-run=server",
        "-n",
        NAMESPACE,
        "-f",
        "-",
        stdin=json.dumps(spec),
        check=False,
    )
    assert result.returncode != 0, result.stdout
    for fragment in expected:
        assert fragment in result.stderr


def test_shape_fields_are_immutable(crd_cluster: Path) -> None:
    obj = _with("spec.training.rounds", 3)
    obj["metadata"]["name"] = "immutable"
    kubectl(crd_cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(obj))
    try:
        obj["spec"]["workers"]["replicas"] = 4
        result = kubectl(crd_cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(obj), check=False)
        assert result.returncode != 0, result.stdout
        assert "workers, topology, network and consensus are immutable" in result.stderr
        obj["spec"]["workers"]["replicas"] = 8
        obj["spec"]["training"]["rounds"] = 4
        kubectl(crd_cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(obj))
    finally:
        kubectl(crd_cluster, "delete", "swt", "immutable", "-n", NAMESPACE, "--wait=false", check=False)
