"""Update and data attacks, against byzfl 0.0.11 where it has the same attack."""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist, mean, stdev

import pytest
import torch
from byzfl.attacks import attacks as byz

from swarm_worker.simulation.attacks import DATA_ATTACKS, UPDATE_ATTACKS, alie_z, craft_update, flip_labels

torch.set_num_threads(1)

D = 300
RTOL = ATOL = 1e-5


def honest(m: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(m, D, generator=generator) * 0.1 + 0.05


def craft(
    attack: str, own: torch.Tensor, estimates: torch.Tensor | None, scale: float | None = None
) -> torch.Tensor:
    return craft_update(
        attack, own, estimates, n=10, f=3, scale=scale, generator=torch.Generator().manual_seed(1)
    )


def test_attack_names() -> None:
    assert UPDATE_ATTACKS == ("sign-flip", "gaussian", "alie", "ipm", "mimic", "nan")
    assert DATA_ATTACKS == ("label-flip",)


@pytest.mark.parametrize("scale", [None, 1.0, 4.0], ids=["default", "1", "4"])
def test_sign_flip_of_the_honest_mean_matches_byzfl(scale: float | None) -> None:
    estimates = honest()
    flipped = craft("sign-flip", estimates.mean(0), estimates, scale)
    expected = byz.SignFlipping()(estimates.clone()) * (1.0 if scale is None else scale)
    torch.testing.assert_close(flipped, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("epsilon", [None, 0.5, 2.0], ids=["default", "0.5", "2"])
def test_ipm_matches_byzfl(epsilon: float | None) -> None:
    estimates = honest(seed=1)
    expected = byz.InnerProductManipulation(tau=0.1 if epsilon is None else epsilon)(estimates.clone())
    torch.testing.assert_close(craft("ipm", estimates[0], estimates, epsilon), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("z", [None, 1.5, -0.7], ids=["from-n-f", "1.5", "-0.7"])
def test_alie_matches_byzfl_with_opposite_sign(z: float | None) -> None:
    estimates = honest(seed=2)
    expected_z = alie_z(10, 3) if z is None else z
    expected = byz.ALittleIsEnough(tau=-expected_z)(estimates.clone())
    torch.testing.assert_close(craft("alie", estimates[0], estimates, z), expected, rtol=RTOL, atol=ATOL)


def per_coordinate_mean_minus_z_std(estimates: torch.Tensor, z: float) -> torch.Tensor:
    """μ_j - z σ_j for every coordinate j, with the sample (n - 1) standard deviation, in float64."""
    columns = estimates.double().T.tolist()
    return torch.tensor([mean(c) - z * stdev(c) for c in columns], dtype=torch.float64)


@pytest.mark.parametrize(
    ("scale", "z"),
    [(None, NormalDist().inv_cdf(0.7)), (1.5, 1.5), (-0.7, -0.7), (3.0, 3.0)],
    ids=["from-n-f", "1.5", "-0.7", "3"],
)
def test_alie_is_the_honest_mean_minus_z_standard_deviations(scale: float | None, z: float) -> None:
    # With n = 10, f = 3: s = ⌊10/2 + 1⌋ - 3 = 3 and z = Φ⁻¹(7/10) ≈ 0.52. z is far from 0 in every
    # case, so the z σ term is far above the tolerance on every coordinate: the plain mean, or a
    # wrong σ (population instead of sample), cannot pass.
    estimates = honest(seed=4)
    expected = per_coordinate_mean_minus_z_std(estimates, z)
    assert float((expected - estimates.double().mean(0)).abs().min()) > 100 * ATOL
    crafted = craft("alie", estimates[0], estimates, scale)
    assert crafted.dtype == torch.float32
    torch.testing.assert_close(crafted.double(), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("n", "f"), [(10, 3), (50, 24), (20, 5), (7, 2)])
def test_alie_z_is_baruchs_z_max(n: int, f: int) -> None:
    s = math.floor(n / 2 + 1) - f
    assert NormalDist().cdf(alie_z(n, f)) == pytest.approx((n - s) / n)


def test_alie_z_for_fifty_workers_and_twenty_four_attackers() -> None:
    assert alie_z(50, 24) == pytest.approx(1.7507, abs=1e-4)  # Φ⁻¹(0.96)


def test_gaussian_default_is_ten_times_the_update_rms_and_reproducible() -> None:
    own = honest(1)[0]
    first = craft("gaussian", own, None)
    assert torch.equal(first, craft("gaussian", own, None))
    rms = torch.linalg.vector_norm(own) / math.sqrt(D)
    assert float(first.std()) == pytest.approx(float(10 * rms), rel=0.15)
    assert abs(float(first.mean())) < 3 * float(10 * rms) / math.sqrt(D)


def test_gaussian_with_scale_has_that_standard_deviation() -> None:
    noise = craft_update(
        "gaussian", torch.zeros(20_000), None, n=4, f=1, scale=3.0, generator=torch.Generator().manual_seed(0)
    )
    assert float(noise.std()) == pytest.approx(3.0, rel=0.03)


@pytest.mark.parametrize("index", [None, 2.0], ids=["default", "2"])
def test_mimic_copies_one_honest_update(index: float | None) -> None:
    estimates = honest(seed=3)
    copied = craft("mimic", estimates[5], estimates, index)
    assert torch.equal(copied, estimates[0 if index is None else 2])
    copied.add_(1)
    assert not torch.equal(copied, estimates[0 if index is None else 2])  # a copy, not a view


@pytest.mark.parametrize(("scale", "check"), [(None, math.isnan), (math.inf, math.isinf)], ids=["nan", "inf"])
def test_nan_attack_fills_the_vector(scale: float | None, check: Callable[[float], bool]) -> None:
    vector = craft("nan", honest(1)[0], None, scale)
    assert vector.shape == (D,)
    assert all(check(value) for value in vector.tolist())


@pytest.mark.parametrize("attack", UPDATE_ATTACKS)
def test_result_keeps_shape_and_dtype(attack: str) -> None:
    estimates = honest().double()
    vector = craft_update(attack, estimates[0], estimates, n=10, f=3, scale=None, generator=torch.Generator())
    assert vector.shape == (D,)
    assert vector.dtype == torch.float64


def test_flip_labels_maps_y_to_c_minus_one_minus_y_and_is_an_involution() -> None:
    y = torch.tensor([0, 1, 2, 9, 5])
    assert flip_labels(y, 10).tolist() == [9, 8, 7, 0, 4]
    assert torch.equal(flip_labels(flip_labels(y, 10), 10), y)
    assert flip_labels(torch.tensor([], dtype=torch.int64), 3).tolist() == []


BAD_CALLS = [
    ("unknown", {"attack": "backdoor"}, "unknown update attack 'backdoor'"),
    ("data attack", {"attack": "label-flip"}, "a data attack: use flip_labels"),
    ("alie without estimates", {"attack": "alie", "honest_estimates": None}, "needs honest_estimates"),
    ("alie one estimate", {"attack": "alie", "honest_estimates": torch.zeros(1, D)}, "m >= 2"),
    ("ipm width", {"attack": "ipm", "honest_estimates": torch.zeros(3, 5)}, "have 5 coordinates"),
    ("mimic index", {"attack": "mimic", "scale": 7.0}, "m >= 8"),
    ("own 2-D", {"own": torch.zeros(2, D)}, "\\(d,\\) tensor"),
    ("f > n", {"f": 11}, "0 <= f <= n"),
    ("alie z undefined", {"attack": "alie", "n": 1, "f": 0}, "ALIE's z is undefined"),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_value_error(changes: dict[str, object], message: str) -> None:
    call: dict[str, object] = {
        "attack": "sign-flip",
        "own": torch.zeros(D),
        "honest_estimates": honest(),
        "n": 10,
        "f": 3,
        "scale": None,
        "generator": torch.Generator(),
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        craft_update(call.pop("attack"), call.pop("own"), call.pop("honest_estimates"), **call)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "classes"), [([0, 3], 3), ([-1], 3), ([0], 0)], ids=["high", "negative", "no-classes"]
)
def test_flip_labels_rejects_out_of_range(labels: list[int], classes: int) -> None:
    with pytest.raises(ValueError, match=r"num_classes|labels must lie"):
        flip_labels(torch.tensor(labels), classes)
