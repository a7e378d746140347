"""Regression metrics of OTAD's Table V: MSE, E and SMAPE, "from Gupta et al. [62]" (papers/otad.txt V-B).

[62] K. Gupta, J.-C. Pesquet, B. Pesquet-Popescu, F. Kaakai and F. D. Malliaros, "An Adversarial Attacker
for Neural Networks in Regression Problems", IJCAI 2021 Workshop on AI Safety, CEUR-WS Vol-2916, paper 17.
All three are "the lower, the better" and measured on the same test points, clean (x) and perturbed (x~):

    MSE   = 1/N sum_n (f(x~_n) - y_n)^2                              error against the label
    E     = 1/N sum_n |f(x~_n) - f(x_n)|                             how far the perturbation moves the output
    SMAPE = 1/N sum_n 2 |r~_n - r_n| / (|r~_n| + |r_n|),              symmetric relative change of the residual,
            r_n = f(x_n) - y_n, r~_n = f(x~_n) - y_n                  as a fraction (not x 100); 0/0 counts 0

Where these formulas come from: the OTAD paper names the metrics and cites [62] without restating them,
and only [62]'s abstract was readable offline here, so E and SMAPE are written as [62] uses them as far as
Table V itself pins them down. Both grow with the noise norm in the "Random noise" row while its MSE stays
at 0.40, so both compare perturbed with clean outputs, not outputs with labels. E is an absolute output
change: Table V's rows obey MSE(eps) ~ MSE_clean + E + E^2 (e.g. Adversarial training: MSE 0.408, 0.440,
0.544 at E = 0.030, 0.060, 0.146), which is what an attack pushing each output |Delta| = E further from its
label gives when the mean |residual| is ~0.5; E relative to |f(x)| (~5.6) would need MSE near 1.1 at
eps = 0.1. SMAPE grows sublinearly with E with the same curve for the Random noise and Adversarial attack
rows; the symmetric relative change of the residual above reproduces those six values within 0.06 for
Gaussian residuals of MSE 0.4, while SMAPE of the outputs themselves (all near 5.6) would be ~8 E.
If [62]'s text says otherwise, only this module changes: stored rows keep target, clean and perturbed outputs.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _arrays(*arrays: ArrayLike) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    if len({a.shape for a in out}) != 1:
        raise ValueError(f"metric inputs differ in size: {[a.size for a in out]}")
    if out[0].size == 0:
        raise ValueError("metric of no samples")
    return out


def mse(outputs: ArrayLike, targets: ArrayLike) -> float:
    """Mean squared error of the outputs against the labels."""
    f, y = _arrays(outputs, targets)
    return float(np.mean((f - y) ** 2))


def e_metric(perturbed: ArrayLike, clean: ArrayLike) -> float:
    """E of [62] (module docstring): the mean absolute change of the output, in the target's units."""
    a, b = _arrays(perturbed, clean)
    return float(np.mean(np.abs(a - b)))


def smape(perturbed: ArrayLike, clean: ArrayLike, targets: ArrayLike) -> float:
    """SMAPE of [62] (module docstring): 2|r~ - r| / (|r~| + |r|) averaged, r the residual against the label."""
    a, b, y = _arrays(perturbed, clean, targets)
    ra, rb = a - y, b - y
    num, den = 2 * np.abs(ra - rb), np.abs(ra) + np.abs(rb)
    return float(np.mean(np.divide(num, den, out=np.zeros_like(num), where=den > 0)))


def regression_metrics(targets: ArrayLike, clean: ArrayLike, perturbed: ArrayLike) -> dict[str, float]:
    """Everything Table V reports for one cell, plus the clean MSE."""
    return {"clean_mse": mse(clean, targets), "mse": mse(perturbed, targets),
            "e": e_metric(perturbed, clean), "smape": smape(perturbed, clean, targets)}
