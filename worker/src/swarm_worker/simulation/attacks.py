"""Byzantine attacks for experiments and tests: what a malicious worker sends instead of its update.

Update attacks are pure functions of the attacker's own honest update `own` (d,), an (m, d)
matrix `honest_estimates` of honest updates the attacker computed itself (in the real-process
swarm an attacker recomputes other ranks' updates, since sharding is deterministic from a public
seed), and the swarm size n with f Byzantine workers:

    sign-flip  -s * own                                  s = scale, default 1
               (Allen-Zhu et al. 2021; byzfl `SignFlipping` flips the honest mean instead)
    gaussian   N(0, σ² I)                                σ = scale, default 10 * rms(own)
               (Blanchard et al. 2017; a default relative to the update so it bites at any scale)
    alie       μ - z σ  (coordinate-wise honest mean and std, ddof 1)
               "A Little Is Enough", Baruch et al., NeurIPS 2019: z = scale, or by default
               z_max = Φ⁻¹((n - s)/n), s = ⌊n/2 + 1⌋ - f, the largest shift that still keeps the
               Byzantine vectors inside the honest majority's spread (byzfl `ALittleIsEnough`
               computes μ + τσ: ours is τ = -z)
    ipm        -ε μ                                      ε = scale, default 0.1
               Inner-product manipulation, Xie et al., UAI 2020 ("Fall of Empires"); byzfl
               `InnerProductManipulation` with τ = ε
    mimic      honest_estimates[i]                       i = int(scale), default 0
               Karimireddy et al., ICLR 2022: all attackers copy one honest worker, to
               over-weight it under heterogeneity
    nan        a vector full of NaN (or of `scale`, e.g. inf): tests input validation

`label-flip` is a data attack (train on y' = C - 1 - y, `flip_labels`), and `crash` / `silent`
are behaviours of the process, not updates; the data plane handles those.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

UPDATE_ATTACKS: tuple[str, ...] = ("sign-flip", "gaussian", "alie", "ipm", "mimic", "nan")
DATA_ATTACKS: tuple[str, ...] = ("label-flip",)

#: Default σ of the gaussian attack, relative to the RMS coordinate of the attacker's own update.
GAUSSIAN_RELATIVE_SCALE = 10.0
#: Default ε of inner-product manipulation (Xie et al. 2020 use 0.1 against median-type rules).
IPM_EPSILON = 0.1


def alie_z(n: int, f: int) -> float:
    """z_max of Baruch et al. 2019: Φ⁻¹((n - s)/n) with s = ⌊n/2 + 1⌋ - f workers needed, besides
    the f attackers, to form a majority."""
    s = math.floor(n / 2 + 1) - f
    quantile = (n - s) / n
    if not 0 < quantile < 1:
        raise ValueError(f"ALIE's z is undefined for n={n}, f={f} (quantile {(n - s)}/{n}); pass scale")
    return NormalDist().inv_cdf(quantile)


def _needs_estimates(
    attack: str, honest_estimates: torch.Tensor | None, own: torch.Tensor, rows: int
) -> torch.Tensor:
    if honest_estimates is None or honest_estimates.ndim != 2 or honest_estimates.shape[0] < rows:
        raise ValueError(f"attack {attack!r} needs honest_estimates of shape (m >= {rows}, {own.shape[0]})")
    if honest_estimates.shape[1] != own.shape[0]:
        raise ValueError(
            f"honest_estimates have {honest_estimates.shape[1]} coordinates, own update has {own.shape[0]}"
        )
    return honest_estimates.to(own.dtype)


def craft_update(
    attack: str,
    own: torch.Tensor,
    honest_estimates: torch.Tensor | None,
    *,
    n: int,
    f: int,
    scale: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """The (d,) update a Byzantine worker sends under `attack` (see the module docstring).

    Same dtype and device as `own`. `generator` drives the gaussian attack's noise (it must be on
    `own`'s device). Raises ValueError for an unknown attack or missing/mismatched inputs.
    """
    if attack not in UPDATE_ATTACKS:
        hint = " (a data attack: use flip_labels)" if attack in DATA_ATTACKS else ""
        raise ValueError(
            f"unknown update attack {attack!r}{hint}; expected one of {', '.join(UPDATE_ATTACKS)}"
        )
    if own.ndim != 1 or not own.is_floating_point():
        raise ValueError(
            f"own must be a floating-point (d,) tensor, got shape {tuple(own.shape)} {own.dtype}"
        )
    if not 0 <= f <= n:
        raise ValueError(f"need 0 <= f <= n, got n={n}, f={f}")
    match attack:
        case "sign-flip":
            return own * -(1.0 if scale is None else scale)
        case "gaussian":
            if scale is None:
                rms = float(torch.linalg.vector_norm(own)) / math.sqrt(max(own.shape[0], 1))
                sigma = GAUSSIAN_RELATIVE_SCALE * rms if rms > 0 else 1.0
            else:
                sigma = scale
            noise = torch.randn(own.shape, generator=generator, dtype=own.dtype, device=own.device)
            return noise * sigma
        case "alie":
            estimates = _needs_estimates(attack, honest_estimates, own, 2)
            z = alie_z(n, f) if scale is None else scale
            return estimates.mean(0) - z * estimates.std(0, correction=1)
        case "ipm":
            estimates = _needs_estimates(attack, honest_estimates, own, 1)
            return estimates.mean(0) * -(IPM_EPSILON if scale is None else scale)
        case "mimic":
            index = 0 if scale is None else int(scale)
            estimates = _needs_estimates(attack, honest_estimates, own, index + 1)
            return estimates[index].clone()
        case _:
            return torch.full_like(own, math.nan if scale is None else scale)


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label flipping (Tolpegin et al., ESORICS 2020; byzfl's label-flipping client): y -> C - 1 - y.

    An involution on {0, ..., C-1}; raises ValueError for labels outside that range.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got [{int(y.min())}, {int(y.max())}]")
    return (num_classes - 1) - y
