"""`geoda`: GeoDA, the geometric decision-based attack (Rahmati et al. 2020) through ART, label-only, L2/Linf.

A decision-based minimum-norm attack: from a boundary point it estimates the boundary's normal from the
labels of random perturbations drawn in a low-frequency DCT subspace (`sub_dim` x `sub_dim` per channel),
then jumps from the clean input along it and binary-searches back to the boundary; the queries per
iteration follow GeoDA's optimal schedule for the budget (`max_queries` is ART's `max_iter`, a query
budget). `bin_search_tol` and `sigma` default to values for inputs in [0, 1] (ART's 0.1 and 0.0002 are
ImageNet's: a binary search that stops 0.1 short of the boundary is coarse at MNIST's eps 2).
The shared machinery (query budget, best-so-far, eps, memo across eps) is in `_label_only.py`.

ART 1.20.1 builds GeoDA's DCT basis with `np.mat`, which NumPy 2 removed, and reads it back from
`2d_dct_basis_{sub_dim}_{size}.npy` in the working directory when that file exists. So otbench writes the
same basis (`dct_basis`, equal to ART's to 1e-16) into $OTBENCH_CACHE/art-geoda and runs GeoDA there.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from ..data.base import cache_dir
from ..errors import OTBenchError
from ..registry import register_attack
from ._label_only import ART_BATCH, LabelOnlyAttack, QueryLog, norm_order


def dct_basis(sub_dim: int, res: int) -> np.ndarray:
    """(res * res, sub_dim ** 2): ART's `GeoDA._generate_2d_dct_basis` without np.mat, vectorised."""
    n = max(res, sub_dim)
    k = np.arange(sub_dim)
    scale = np.where(k == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))
    c = scale[:, None] * np.cos((2 * np.arange(res)[None, :] + 1) * k[:, None] * math.pi / (2 * n))
    return np.einsum("ux,vy->uvyx", c, c).reshape(sub_dim * sub_dim, res * res).T


def basis_folder(sub_dim: int, res: int) -> Path:
    """The folder holding the basis file ART's GeoDA reads (written once)."""
    folder = cache_dir() / "art-geoda"
    folder.mkdir(exist_ok=True)
    path = folder / f"2d_dct_basis_{sub_dim}_{res}.npy"
    if not path.exists():
        tmp = folder / f"{path.stem}.{id(folder)}.tmp.npy"  # whole file or none, if two runs race
        np.save(tmp, dct_basis(sub_dim, res))
        tmp.replace(path)
    return folder


@register_attack("geoda")
class GeoDA(LabelOnlyAttack):
    description = "GeoDA through ART: label-only minimum-norm attack in a DCT subspace; adversarial if within eps"
    norms = ("L2", "Linf")
    defaults = {"norm": "L2", "max_queries": 5000, "sub_dim": 10, "bin_search_tol": 0.001, "lambda_param": 0.6,
                "sigma": 0.0002}
    min_queries = 500  # GeoDA splits the budget into round(max_queries / 500) iterations: at least one

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        super().check_settings(config, eps)
        c = config
        cls.require_int(c, "sub_dim")
        for key in ("bin_search_tol", "lambda_param", "sigma"):
            if c[key] <= 0:
                raise OTBenchError(f"geoda: {key} must be > 0, got {c[key]!r}")

    def check_against_defense(self) -> None:
        from art.attacks.evasion import GeoDA as ArtGeoDA  # here, not at import: ART takes a while to load

        from ..interfaces.art import DefenseBlackBox

        c = self.config
        shape = self.defense.data.input_shape
        if len(shape) != 3 or shape[1] != shape[2]:
            raise OTBenchError(f"geoda needs square images (C, H, H); dataset '{self.defense.data.name}' has "
                               f"inputs of shape {tuple(shape)}")
        try:  # ART splits the budget into iterations when built; a few budgets make that recurse forever
            ArtGeoDA(DefenseBlackBox(self.defense), max_iter=c["max_queries"], lambda_param=c["lambda_param"],
                     verbose=False)
        except (RecursionError, IndexError):
            raise OTBenchError(f"geoda: ART cannot split max_queries={c['max_queries']} into iterations; "
                               f"use another budget (>= 500; 1000, 2000, 5000 work)") from None

    def run_art(self, est, x: np.ndarray, y: int, log: QueryLog, rng: np.random.Generator) -> None:
        from art.attacks.evasion import GeoDA as ArtGeoDA

        c = self.config
        with contextlib.chdir(basis_folder(c["sub_dim"], x.shape[-1])):
            attack = ArtGeoDA(est, batch_size=ART_BATCH, norm=norm_order(self.norm), sub_dim=c["sub_dim"],
                              max_iter=c["max_queries"], bin_search_tol=c["bin_search_tol"],
                              lambda_param=c["lambda_param"], sigma=c["sigma"], verbose=False)
            attack.generate(x, np.array([y]))
