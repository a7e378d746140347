"""`pgd-at`: PGD adversarial training (Madry et al. 2018) of the same FC ResNet + H that OTAD uses.

The training loop is OTAD's (otbench/common/fc_training.py, Algorithm 1 with alpha = 0) with each batch
replaced by its PGD adversarial examples (the shared hook, otbench/common/adversarial.py): min_theta E max_{||delta|| <= eps} CE(f(x + delta), y), inner maximisation
by `adv_steps` steps of size adv_step_ratio * eps / adv_steps from a random start in the ball, projected on
the ball and on [0, 1]. The examples are made with the network in eval mode (BatchNorm on running
statistics, which the attack's forward passes therefore do not disturb), then the network is trained on them
in train mode. Norm and eps are train settings, so they name the cached checkpoint (by config hash):

- preset `paper`: papers/otad.txt V-C: "l-inf adversarial training ... eps = 0.1 on MNIST"; the paper keeps
  "the hyperparameters of the original papers": Madry et al.'s 40 steps on MNIST. The network and optimiser
  are TRAIN_PAPER's (the paper gives nothing else for this baseline).
- preset `quick`: TRAIN_QUICK's network and schedule, 10 PGD steps.
- Table IV (MERFISH): `--set train.adv_norm=L2 --set train.adv_eps=1 --set train.blocks=4` (the paper uses
  l-inf training "except for industrial data" but gives no eps for MERFISH; L2 eps 1 matches the attack).

The two MNIST configurations the papers compare with:
- OTAD (Tables I-III): Linf eps 0.1, the presets' default.
- OT-Classifier ("Madry's Adv", papers/ot-classifier.txt Fig. 6: "we use eps = 0.3 ... on MNIST"): Madry et
  al.'s MNIST setting, Linf eps 0.3 with 40 steps of 0.01, i.e. `MADRY_MNIST` below. On the command line
  `--set train.adv_eps=0.3 --set train.adv_step_ratio=1.3333333333333335`; in a report table
  `Row("Madry's Adv", "pgd-at", "Adv. Training", MADRY_MNIST)`.
"""
from __future__ import annotations

from typing import Any

import torch

from otbench.common.adversarial import check_adversarial_settings, pgd_perturbation
from otbench.common.fc_training import check_schedule, fc_resnet_presets, load_or_train
from otbench.defense import Defense
from otbench.registry import register_defense

ADV_PAPER: dict[str, Any] = {"adv_norm": "Linf", "adv_eps": 0.1, "adv_steps": 40, "adv_step_ratio": 2.5,
                             "adv_random_start": True}
ADV_QUICK: dict[str, Any] = {**ADV_PAPER, "adv_steps": 10}
# Madry et al. 2018 on MNIST: eps 0.3, 40 steps of size 0.01 (step = adv_step_ratio * eps / adv_steps):
# overrides of either preset (the quick preset's 10 steps then take steps of 0.04)
MADRY_MNIST: dict[str, dict[str, Any]] = {"train": {"adv_eps": 0.3, "adv_step_ratio": 0.01 * 40 / 0.3}}


@register_defense("pgd-at")
class PGDAdversarialTraining(Defense):
    description = "PGD adversarial training (Madry et al. 2018) of OTAD's FC ResNet + H; norm/eps are train settings"
    differentiable = True
    surrogate_description = "itself"  # BPDA + PGD on it is plain PGD (papers/otad.txt V-C)
    presets = fc_resnet_presets({}, train=ADV_PAPER, train_quick=ADV_QUICK)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        check_schedule(config["train"])
        check_adversarial_settings(config["train"], "pgd-at")

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        cfg = config["train"]
        self.net, self.train_record = load_or_train(data, cfg, device, perturb=pgd_perturbation(cfg, who="pgd-at"))
        self.train_x = data.take_train(cfg["train_size"]).x_train

    def surrogate(self) -> torch.nn.Module:
        return self.net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))
