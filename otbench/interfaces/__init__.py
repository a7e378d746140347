"""otbench defenses as the objects other toolkits take: a torch module (torchattacks, foolbox, AutoAttack),
an ART estimator, and RobustBench's benchmark().

ART and RobustBench are imported only when their interface is first used (RobustBench through
otbench.compat.robustbench), so importing this package costs neither.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from ..defense import Defense

__all__ = ["RobustBenchResult", "robustbench_benchmark", "to_art", "torch_module"]

_LAZY = {"to_art": ".art", "DefenseBlackBox": ".art", "robustbench_benchmark": ".robustbench",
         "RobustBenchResult": ".robustbench"}


def torch_module(defense: Defense) -> nn.Module:
    """`defense.module()`: an eval-only nn.Module mapping inputs in [0, 1] to logits, which is what
    torchattacks, foolbox (PyTorchModel(module, bounds=(0, 1))) and AutoAttack take. Its train() flips only
    its own flag, so a library toggling train mode around an attack never reaches BatchNorm inside. For a
    non-differentiable defense the forward pass runs without gradients; attack it with gradient-free
    attacks, or use otbench.attacks.bpda_pgd.BPDAModule for BPDA."""
    return defense.module()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
