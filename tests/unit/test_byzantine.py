"""Attack plans from the spec, the label-flip shard, and honest estimates simulated from public data."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from swarm_contract.manifest import load_manifest, parse_spec
from swarm_contract.spec import SpecError, SwarmSpec
from swarm_worker.simulation.byzantine import (
    ESTIMATED_RANKS,
    Attacker,
    HonestEstimator,
    make_trainer,
    plan_for,
    shard_batches,
)
from swarm_worker.training.steps import flat_parameters
from swarm_worker.training.tasks import TaskBundle, build_task, initial_model

torch.set_num_threads(1)


def spec_with(byzantine: list[dict[str, Any]], replicas: int = 8) -> SwarmSpec:
    return parse_spec(
        {
            "workers": {"replicas": replicas},
            "training": {"syncEvery": 3, "batchSize": 16, "seed": 5},
            "simulation": {"byzantine": byzantine},
        }
    )


@pytest.fixture(scope="module")
def bundle() -> TaskBundle:
    return build_task("digits", {}, 5)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"worker": 2, "attack": "sign-flip", "scale": 10.0}, ("sign-flip", 10.0, ())),
        ({"worker": 2, "attack": "alie"}, ("alie", None, (0, 1, 3))),
        ({"worker": 2, "attack": "ipm", "scale": 0.5}, ("ipm", 0.5, (0, 1, 3))),
        ({"worker": 2, "attack": "mimic", "scale": 4}, ("mimic", 4.0, (0, 1, 3, 4, 5))),
        ({"worker": 2, "attack": "label-flip"}, ("label-flip", None, ())),
        ({"worker": 2, "attack": "nan"}, ("nan", None, ())),
        ({"worker": 2, "attack": "crash"}, ("crash", None, ())),
    ],
    ids=["sign-flip", "alie-lowest-honest", "ipm", "mimic-late-index", "label-flip", "nan", "crash"],
)
def test_plan_of_an_attacker(
    entry: dict[str, Any], expected: tuple[str, float | None, tuple[int, ...]]
) -> None:
    spec = spec_with([entry, {"worker": 6, "attack": "silent"}])
    plan = plan_for(spec, 2)
    assert plan is not None
    assert (plan.attack, plan.scale, plan.estimated_ranks) == expected
    assert (plan.rank, plan.world, plan.byzantine) == (2, 8, 2)


def test_honest_rank_has_no_plan() -> None:
    spec = spec_with([{"worker": 2, "attack": "alie"}])
    assert [r for r in range(8) if plan_for(spec, r) is None] == [0, 1, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    ("attack", "flags"),
    [
        ("label-flip", (True, False, False, False, False)),
        ("sign-flip", (False, True, False, False, False)),
        ("nan", (False, True, False, False, True)),
        ("crash", (False, False, True, False, False)),
        ("silent", (False, False, False, True, False)),
    ],
    ids=["label-flip", "sign-flip", "nan", "crash", "silent"],
)
def test_plan_says_what_the_worker_does(attack: str, flags: tuple[bool, ...]) -> None:
    plan = plan_for(spec_with([{"worker": 0, "attack": attack}]), 0)
    assert plan is not None
    assert (plan.flips_labels, plan.crafts_update, plan.crashes, plan.silent, plan.sends_dense) == flags


@pytest.mark.parametrize(
    ("byzantine", "replicas", "message"),
    [
        (
            [{"worker": 0, "attack": "mimic", "scale": 3}],
            3,
            "spec.simulation.byzantine[0]: attack 'mimic' needs 4 honest workers to estimate from, "
            "the swarm has 2",
        ),
        (
            [{"worker": 0, "attack": "mimic", "scale": -1}],
            8,
            "spec.simulation.byzantine[0].scale: mimic copies honest estimate int(scale), which must be >= 0",
        ),
        (
            [
                {"worker": 0, "attack": "alie"},
                {"worker": 1, "attack": "silent"},
                {"worker": 2, "attack": "crash"},
            ],
            5,
            "spec.simulation.byzantine[0].scale: "
            "ALIE's z is undefined for n=5, f=3 (quantile 5/5); pass scale",
        ),
        (
            [{"worker": 0, "attack": "alie"}, {"worker": 1, "attack": "silent"}],
            3,
            "spec.simulation.byzantine[0]: attack 'alie' needs 2 honest workers to estimate from, "
            "the swarm has 1",
        ),
    ],
    ids=["mimic-index-beyond-honest", "mimic-negative", "alie-z-undefined", "alie-one-honest"],
)
def test_attack_that_cannot_run_is_a_spec_error(
    byzantine: list[dict[str, Any]], replicas: int, message: str
) -> None:
    with pytest.raises(SpecError) as e:
        plan_for(spec_with(byzantine, replicas), 0)
    assert str(e.value) == message


def test_label_flip_trains_on_the_same_examples_with_flipped_labels(bundle: TaskBundle) -> None:
    spec = spec_with([{"worker": 3, "attack": "label-flip"}])
    honest, flipped = shard_batches(spec, bundle, 3), shard_batches(spec, bundle, 3, flip=True)
    for _ in range(5):
        (x, y), (fx, fy) = next(honest), next(flipped)
        torch.testing.assert_close(fx, x, rtol=0, atol=0)
        torch.testing.assert_close(fy, 9 - y, rtol=0, atol=0)


def test_estimate_equals_the_honest_ranks_update(bundle: TaskBundle) -> None:
    spec = spec_with([{"worker": 2, "attack": "alie"}])
    model = initial_model(bundle, spec.training.seed)
    theta = flat_parameters(model)
    honest = [make_trainer(spec, bundle, copy.deepcopy(model), r) for r in (0, 1, 3)]
    estimator = HonestEstimator(spec, bundle, model, (0, 1, 3))
    for _ in range(2):  # the simulated batch streams and optimizers advance like the real ones
        expected = torch.stack([t.run_round(theta).delta for t in honest])
        got = estimator.estimate(theta)
        assert got.shape == (3, theta.numel())
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        theta = theta - expected.mean(0)
    torch.testing.assert_close(
        flat_parameters(model), flat_parameters(initial_model(bundle, 5)), rtol=0, atol=0
    )


def test_estimates_are_deterministic_across_processes(bundle: TaskBundle) -> None:
    # Two attackers built independently (two processes) estimate the same rows.
    spec = spec_with([{"worker": 2, "attack": "mimic"}, {"worker": 6, "attack": "mimic"}])
    theta = flat_parameters(initial_model(bundle, spec.training.seed))
    rows = []
    for rank in (2, 6):
        plan = plan_for(spec, rank)
        assert plan is not None
        assert len(plan.estimated_ranks) == ESTIMATED_RANKS
        rows.append(
            HonestEstimator(spec, bundle, initial_model(bundle, 5), plan.estimated_ranks).estimate(theta)
        )
    torch.testing.assert_close(rows[0], rows[1], rtol=0, atol=0)


@pytest.mark.parametrize("attack", ["sign-flip", "alie", "ipm", "mimic", "nan", "gaussian"])
def test_attacker_crafts_from_its_own_update_and_the_estimates(bundle: TaskBundle, attack: str) -> None:
    scale = {"sign-flip": 4.0, "alie": 1.5}.get(attack)  # ALIE: z = 1.5 (its default here would be 0)
    spec = spec_with([{"worker": 2, "attack": attack, "scale": scale}])
    plan = plan_for(spec, 2)
    assert plan is not None
    model = initial_model(bundle, spec.training.seed)
    theta = flat_parameters(model)
    own = make_trainer(spec, bundle, copy.deepcopy(model), 2).run_round(theta).delta
    estimates = HonestEstimator(spec, bundle, model, (0, 1, 3)).estimate(theta)
    crafted = Attacker(plan, spec, bundle, model).craft(own, theta)
    assert crafted.shape == own.shape
    match attack:
        case "sign-flip":
            torch.testing.assert_close(crafted, -4.0 * own)
        case "mimic":
            torch.testing.assert_close(crafted, estimates[0], rtol=0, atol=0)
        case "ipm":
            torch.testing.assert_close(crafted, -0.1 * estimates.mean(0))
        case "nan":
            assert all(math.isnan(v) for v in crafted.tolist())
        case "alie":  # z = scale = 1.5: mean - z·σ of the estimates, coordinate-wise
            torch.testing.assert_close(crafted, estimates.mean(0) - 1.5 * estimates.std(0))
            assert float((crafted - estimates.mean(0)).abs().max()) > 1e-3  # z·σ is not negligible
        case _:
            assert bool(torch.isfinite(crafted).all())
            assert not torch.allclose(crafted, own)


def test_byzantine_example_plans_two_alie_attackers_under_different_aggregators() -> None:
    spec = load_manifest(Path(__file__).resolve().parents[2] / "examples" / "byzantine.yaml").spec
    plans = {r: plan_for(spec, r) for r in range(spec.workers.replicas)}
    attackers = {r: p.attack for r, p in plans.items() if p is not None}
    assert attackers == {1: "alie", 6: "alie"}
    assert spec.robustness.rule != "mean"
    assert spec.robustness.f >= 1
