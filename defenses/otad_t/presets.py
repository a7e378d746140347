"""OTAD-T's presets: one flat `train` section (ViT, then `dml_*` and `cipnet_*` keys) and the CIP settings.

Flat keys keep `--set train.dml_arch=attention` working; each model is cached under its own keys only
(`vit_config`, `dml_config`, `cipnet_config`), so changing the DML-net never retrains the ViT.
"""
from __future__ import annotations

from typing import Any

from .dml import DML_PAPER, DML_QUICK
from .vit import VIT_CODE, VIT_PAPER, VIT_QUICK

# papers/otad.txt V-E: K = 10, L = 2, l = 0, delta1 = delta2 = 1 for OTAD-T (V-G: L = 12 for Table XII).
OTAD_T_DEFAULTS: dict[str, Any] = {"K": 10, "L": 2.0, "l": 0.0, "delta1": 1.0, "delta2": 1.0,
                                   "formulation": "paper", "potentials": "least", "batch_size": 250}
KNN_T_DEFAULTS: dict[str, Any] = {"K": 10, "batch_size": 250}

# CIP-net (papers/otad.txt V-F): a 6-block Transformer encoder over 2K + 1 tokens, MSE on exact CIP solutions,
# alpha of eq. 24 (alpha = 1: solutions only). Width, heads, epochs and the training set size are ours.
CIPNET_PAPER: dict[str, Any] = {"cipnet_width": 256, "cipnet_depth": 6, "cipnet_heads": 8, "cipnet_epochs": 30,
                                "cipnet_lr": 1e-3, "cipnet_batch_size": 128, "cipnet_n_train": 20000,
                                "cipnet_alpha": 1.0}
CIPNET_QUICK: dict[str, Any] = {**CIPNET_PAPER, "cipnet_width": 64, "cipnet_depth": 2, "cipnet_heads": 4,
                                "cipnet_epochs": 5, "cipnet_n_train": 2000}

_VIT = {"paper": VIT_PAPER, "reference-code": VIT_CODE, "quick": VIT_QUICK}
_DML = {"paper": DML_PAPER, "reference-code": DML_PAPER, "quick": DML_QUICK}
_CIPNET = {"paper": CIPNET_PAPER, "reference-code": CIPNET_PAPER, "quick": CIPNET_QUICK}


def prefixed(cfg: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in cfg.items() if k not in ("train_size", "seed")}


def presets(defense: dict[str, Any], dml: bool = False, cipnet: bool = False,
            dml_arch: str = "resnet3") -> dict[str, dict[str, dict[str, Any]]]:
    """The `paper`, `reference-code` (the public code's ViT) and `quick` presets of one OTAD-T variant."""
    out = {}
    for name, vit in _VIT.items():
        train = dict(vit)
        if dml:
            train.update(prefixed({**_DML[name], "arch": dml_arch}, "dml_"))
        if cipnet:
            train.update(_CIPNET[name])
        out[name] = {"train": train, "defense": dict(defense)}
    return out


def vit_config(train: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train.items() if not k.startswith(("dml_", "cipnet_"))}


def dml_config(train: dict[str, Any]) -> dict[str, Any]:
    return {**{k[4:]: v for k, v in train.items() if k.startswith("dml_")},
            "train_size": train["train_size"], "seed": train["seed"]}


def cipnet_config(train: dict[str, Any]) -> dict[str, Any]:
    return {k[7:]: v for k, v in train.items() if k.startswith("cipnet_")}
