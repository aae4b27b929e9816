"""`swarm run`'s GPU placement (local/placement.py): shares per GPU, the environment of each node
process, the one-line refusal to oversubscribe, and how the launcher counts this machine's GPUs."""

from __future__ import annotations

import math
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from swarm_contract.manifest import parse_manifest, parse_spec
from swarm_contract.spec import SpecError, SwarmSpec
from swarm_contract.topology import plan_tree
from swarm_worker import cli
from swarm_worker.local import launcher, placement
from swarm_worker.local.placement import (
    Slot,
    describe,
    gpus_needed,
    local_gpus,
    node_environ,
    place,
    plan_local_gpus,
)
from swarm_worker.node.device import GPU_FRACTION_ENV


@pytest.mark.parametrize(
    ("shares", "slots"),
    [
        ([0, 0], [None, None]),
        ([0.5, 0.5], [Slot((0,), 0.5), Slot((0,), 0.5)]),
        ([0.5, 0.5, 0.5], [Slot((0,), 0.5), Slot((0,), 0.5), Slot((1,), 0.5)]),
        ([0.3] * 4, [Slot((0,), 0.3)] * 3 + [Slot((1,), 0.3)]),
        ([0.1] * 10, [Slot((0,), 0.1)] * 10),
        ([1, 1], [Slot((0,)), Slot((1,))]),
        ([1.5, 0.5], [Slot((0, 1)), Slot((2,), 0.5)]),
        ([0.5, 2, 0.5], [Slot((0,), 0.5), Slot((1, 2)), Slot((0,), 0.5)]),
        ([0.5, 0.5, 0.25, 0.25], [Slot((0,), 0.5), Slot((0,), 0.5), Slot((1,), 0.25), Slot((1,), 0.25)]),
        ([0.75, 0.5, 0.25], [Slot((0,), 0.75), Slot((1,), 0.5), Slot((0,), 0.25)]),
    ],
    ids=[
        "none",
        "two-halves-share-one",
        "third-half-on-the-next",
        "floor-of-one-over-g",
        "tenths-add-up-to-one",
        "whole-each",
        "one-and-a-half-takes-two",
        "whole-skips-a-shared-gpu",
        "aggregators-after-workers",
        "first-fit",
    ],
)
def test_place(shares: list[float], slots: list[Slot | None]) -> None:
    assert place(shares) == slots


@pytest.mark.parametrize("share", [0.5, 0.34, 0.3, 0.25, 0.2, 0.125, 0.1, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("workers", [1, 2, 3, 7, 16])
def test_shares_fill_gpu_by_gpu(share: float, workers: int) -> None:
    slots = place([share] * workers)
    if share < 1:
        per_gpu = math.floor(1 / share + 1e-9)
        assert gpus_needed(slots) == math.ceil(workers / per_gpu)
        for rank, slot in enumerate(slots):
            assert slot == Slot((rank // per_gpu,), share)
    else:
        assert gpus_needed(slots) == workers * math.ceil(share)
        used = [i for slot in slots if slot is not None for i in slot.gpus]
        assert sorted(used) == list(range(len(used)))  # never two on one device


def _spec(device: str = "cuda", gpus: float = 0.5, replicas: int = 2, **more: Any) -> SwarmSpec:
    return parse_spec(
        {"workers": {"replicas": replicas, "device": device, "resources": {"gpus": gpus}}, **more}
    )


def _plan(spec: SwarmSpec, gpus: list[str]) -> dict[str, Slot | None]:
    return plan_local_gpus(spec, plan_tree(spec.workers.replicas, spec.topology.branching_factor), gpus)


def test_two_workers_share_one_gpu_and_the_root_stays_on_cpu() -> None:
    assert _plan(_spec(), ["0"]) == {"worker-0": Slot((0,), 0.5), "worker-1": Slot((0,), 0.5)}


@pytest.mark.parametrize(
    ("spec", "gpus", "message"),
    [
        (
            _spec(replicas=3),
            ["0"],
            "3 workers with workers.resources.gpus 0.5 need 2 GPUs, this machine has 1",
        ),
        (_spec(gpus=1, replicas=3), ["0", "1"], "3 workers with workers.resources.gpus 1 need 3 GPUs"),
        (
            _spec(replicas=2, topology={"aggregatorResources": {"gpus": 0.5}}),
            ["0"],
            "2 workers with workers.resources.gpus 0.5 and 1 aggregator/root nodes with "
            "topology.aggregatorResources.gpus 0.5 need 2 GPUs, this machine has 1",
        ),
        (
            _spec(device="cpu", replicas=8, topology={"aggregatorResources": {"gpus": 1}}),
            ["0", "1"],
            "3 aggregator/root nodes with topology.aggregatorResources.gpus 1 need 3 GPUs, "
            "this machine has 2",
        ),
        (_spec(gpus=0), [], "workers.device: cuda, but this machine has no GPU"),
    ],
    ids=["halves", "whole", "with-aggregators", "aggregators-only", "cuda-without-gpu"],
)
def test_too_little_gpu_is_one_line_naming_the_numbers(
    spec: SwarmSpec, gpus: list[str], message: str
) -> None:
    with pytest.raises(SpecError) as e:
        _plan(spec, gpus)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("spec", "gpus", "plan"),
    [
        (_spec(device="cpu"), ["0"], {}),
        (_spec(device="auto"), [], {}),
        (_spec(device="auto", gpus=0), ["0", "1"], {"worker-0": None, "worker-1": None}),
        (_spec(device="auto"), ["0"], {"worker-0": Slot((0,), 0.5), "worker-1": Slot((0,), 0.5)}),
        (_spec(device="cpu", topology={"aggregatorResources": {"gpus": 1}}), ["0"], {"root": Slot((0,))}),
        (_spec(device="cpu", topology={"aggregatorResources": {"gpus": 1}}), [], {}),
    ],
    ids=[
        "cpu-workers",
        "auto-without-gpu",
        "gpus-0-sees-all",
        "auto-with-gpu",
        "root-on-gpu",
        "root-auto-without-gpu",
    ],
)
def test_which_nodes_are_placed(spec: SwarmSpec, gpus: list[str], plan: dict[str, Slot | None]) -> None:
    assert _plan(spec, gpus) == plan


def test_aggregators_take_what_the_workers_left() -> None:
    spec = _spec(replicas=4, gpus=0.5, topology={"branchingFactor": 2, "aggregatorResources": {"gpus": 0.25}})
    plan = _plan(spec, ["0", "1", "2"])
    assert {k: v for k, v in plan.items() if k.startswith("worker-")} == {
        "worker-0": Slot((0,), 0.5),
        "worker-1": Slot((0,), 0.5),
        "worker-2": Slot((1,), 0.5),
        "worker-3": Slot((1,), 0.5),
    }
    assert {plan["agg-0"], plan["agg-1"], plan["root"]} == {Slot((2,), 0.25)}


@pytest.mark.parametrize(
    ("slot", "visible", "expected"),
    [
        (Slot((0,), 0.5), ["0"], {"CUDA_VISIBLE_DEVICES": "0", GPU_FRACTION_ENV: "0.5"}),
        (Slot((1,), 0.25), ["2", "3"], {"CUDA_VISIBLE_DEVICES": "3", GPU_FRACTION_ENV: "0.25"}),
        (Slot((0, 1)), ["GPU-a", "GPU-b"], {"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}),
        (None, ["0", "1"], {}),
    ],
    ids=["half", "launcher-numbering", "whole-by-uuid", "unplaced"],
)
def test_node_environ(slot: Slot | None, visible: list[str], expected: dict[str, str]) -> None:
    base = {"PATH": "/bin", GPU_FRACTION_ENV: "0.9"}  # an inherited share never leaks into a node
    assert node_environ(base, slot, visible) == {"PATH": "/bin", **expected}


def test_the_fraction_variable_is_the_one_node_device_reads() -> None:
    assert placement.GPU_FRACTION_ENV == GPU_FRACTION_ENV


def test_describe() -> None:
    plan = {"worker-0": Slot((0,), 0.5), "worker-1": Slot((0,), 0.5), "root": Slot((1, 2)), "worker-2": None}
    assert describe(plan, ["0", "1", "2"]) == (
        "GPU 0: worker-0 (0.5), worker-1 (0.5); GPU 1,2: root; all GPUs: worker-2"
    )
    assert describe({}, ["0"]) is None


@pytest.mark.parametrize(
    ("value", "gpus"),
    [("2,3", ["2", "3"]), ("", []), ("-1", []), ("0,,1", ["0"]), (" GPU-x , 1", ["GPU-x", "1"])],
    ids=["two", "empty", "negative", "stops-at-empty", "uuids"],
)
def test_local_gpus_follow_cuda_visible_devices(value: str, gpus: list[str]) -> None:
    assert local_gpus({"CUDA_VISIBLE_DEVICES": value}) == gpus


def test_local_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho '  MIG 1g.18gb Device 0: (UUID: MIG-b)'\n"
        "echo 'GPU 1: NVIDIA H200 (UUID: GPU-c)'\n"
    )
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert local_gpus({}) == ["0", "1"]


def test_local_gpus_from_proc_when_nvidia_smi_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 9\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    proc = tmp_path / "gpus"
    for bus in ("0000:17:00.0", "0000:65:00.0", "0000:ca:00.0"):
        (proc / bus).mkdir(parents=True)
    monkeypatch.setattr(placement, "PROC_GPUS", proc)
    assert local_gpus({}) == ["0", "1", "2"]
    monkeypatch.setattr(placement, "PROC_GPUS", tmp_path / "absent")
    assert local_gpus({}) == []


MANIFEST = {"apiVersion": "swarm.ncrsh.io/v1alpha1", "kind": "SwarmTraining", "metadata": {"name": "g"}}


def test_the_launcher_starts_each_node_with_its_placement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    monkeypatch.setenv(GPU_FRACTION_ENV, "0.9")
    spec = {"workers": {"replicas": 3, "device": "cuda", "resources": {"gpus": 0.5}}}
    swarm = launcher.LocalSwarm(parse_manifest({**MANIFEST, "spec": spec}), tmp_path / "out")
    started: dict[str, dict[str, str]] = {}
    real_popen = subprocess.Popen  # the launcher's subprocess module is this one

    def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        started[argv[argv.index("--node-id") + 1]] = kwargs["env"]
        return real_popen(["true"])

    monkeypatch.setattr(subprocess, "Popen", popen)
    swarm.start()
    swarm.stop()
    seen = {
        node: (env.get("CUDA_VISIBLE_DEVICES"), env.get(GPU_FRACTION_ENV)) for node, env in started.items()
    }
    assert seen == {
        "worker-0": ("4", "0.5"),
        "worker-1": ("4", "0.5"),
        "worker-2": ("5", "0.5"),
        "root": ("4,5", "0.9"),  # on CPU: its environment is left as it was
    }


def test_swarm_run_refuses_to_oversubscribe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    path = tmp_path / "m.yaml"
    path.write_text(
        "apiVersion: swarm.ncrsh.io/v1alpha1\nkind: SwarmTraining\nmetadata:\n  name: g\nspec:\n"
        "  workers:\n    replicas: 3\n    device: cuda\n    resources: {gpus: 0.5}\n"
    )
    assert cli.main(["run", str(path), "--output", str(tmp_path / "out")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (
        "swarm: error: 3 workers with workers.resources.gpus 0.5 need 2 GPUs, this machine has 1\n"
    )
    assert not (tmp_path / "out").exists()
