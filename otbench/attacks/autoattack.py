"""`autoattack`: AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks") through the authors' own code, packaged as `pyautoattack`
(the module RobustBench imports as `autoattack`; it downloads nothing).

version `standard`: APGD-CE, APGD-T (9 target classes), FAB-T (9 targets) and Square (5000 queries), each
run only on the points still robust. version `rand`, for randomized defenses: APGD-CE and APGD-DLR with
20 EOT iterations each. `plus` is the authors' heavier variant. The library reports no per-sample query
counts, so none are recorded.
"""
from __future__ import annotations

import torch

from ..errors import OTBenchError
from ..registry import register_attack
from .base import Attack, AttackOutput

VERSIONS = ("standard", "rand", "plus")


@register_attack("autoattack")
class AutoAttack(Attack):
    description = "AutoAttack, the standard ensemble of APGD-CE/APGD-T/FAB-T/Square (Croce & Hein 2020, pyautoattack)"
    needs = "gradients"
    norms = ("L2", "Linf")
    defaults = {"norm": "Linf", "version": "standard"}
    default_eps = (0.1, 0.2, 0.3)

    @classmethod
    def check_settings(cls, config: dict, eps: float) -> None:
        if config["version"] not in VERSIONS:
            raise OTBenchError(f"autoattack: unknown version '{config['version']}'; valid: {', '.join(VERSIONS)}")

    def run(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> AttackOutput:
        try:
            from pyautoattack import AutoAttack as _AutoAttack
        except ImportError:
            raise OTBenchError("attack 'autoattack' needs the AutoAttack package; pip install pyautoattack") from None
        device = self.defense.device
        adversary = _AutoAttack(self.model(), norm=self.norm, eps=self.eps, version=self.config["version"],
                                seed=seed, device=device)
        adv, _ = adversary.run_standard_evaluation(images.to(device), labels.to(device), batch_size=len(images))
        return AttackOutput(adv.detach().cpu(), None)
