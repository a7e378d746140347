"""The registered OT-Classifier defenses and the CNN baselines of its comparisons (papers/ot-classifier.txt).

- `ot-cla`: Algorithm 1 (encoder Q, critic D pushing the codes toward N(0, I), classifier C); "OT-CLA".
- `e-cla`: the same Q and C trained without the critic (section 4.2, Figure 3); "E-CLA".
- `ot-cla-adv`: Algorithm 1 on Madry PGD examples (Supplement A's eps); "OT-CLA+Adv" (Tables 1, 2).
- `cnn-standard`: "No Defense" of Figures 2 and 3, and `cnn-pgd-at`: "Madry's Adv" / "Adv. Training" (Table 1,
  Figures 2 and 6). At preset `paper` both are the authors' "baseline model for MNIST" (ER-Classifier's
  BasicCNN) trained as Madry et al.'s MNIST challenge; at `quick`, OT-CLA's own convolutions with a wide (256)
  ReLU layer in place of the low-dimensional code (settings.py gives each value's source).

All are plain differentiable networks at test time (C(Q(x))), so every gradient attack applies directly.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from otbench.common.adversarial import check_adversarial_settings, pgd_perturbation
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.registry import register_defense

from .settings import (ADV_PAPER, ADV_QUICK, CNN_ADV_PAPER, CNN_ADV_QUICK, CNN_PAPER, CNN_QUICK, TRAIN_PAPER,
                       TRAIN_QUICK, check_train, resolve_adv)
from .train import load_or_train


class EncoderClassifierDefense(Defense):
    kind: ClassVar[str] = "ot-cla"  # train.KINDS
    adversarial: ClassVar[bool] = False
    differentiable = True
    surrogate_description = "itself"  # BPDA + PGD through it is plain PGD

    def __init__(self, data, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(data, config, device)
        if config.get("defense", {}).get("model") != self.name:
            raise OTBenchError(f"defense '{self.name}': defense.model names the registered defense and must stay "
                               f"'{self.name}'; choose another defense with --defense instead")
        cfg = config["train"]
        perturb = pgd_perturbation(resolve_adv(data.name, cfg), who=self.name) if self.adversarial else None
        self.net, self.train_record = load_or_train(data, cfg, device, self.kind, perturb)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        cfg = config["train"]
        check_train(cfg, cls.name)
        if cls.adversarial:  # a negative adv_eps stands for Supplement A's eps of the dataset (resolve_adv)
            check_adversarial_settings({**cfg, "adv_eps": max(cfg["adv_eps"], 0.0)}, cls.name)

    def surrogate(self) -> torch.nn.Module:
        return self.net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The codes Q(x) (Figure 5, the Gaussianity checks)."""
        return self.net.embed(x)


def _presets(name: str, adversarial: bool = False, cnn: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """The presets of one registered defense. Its defense section names it (`model`): a stored cell's identity is
    the defense config, and `Defense.identity`'s own name entry is replaced by the config's `defense` section, so
    without it defenses with the same train settings (ot-cla, e-cla and cnn-standard; ot-cla-adv and cnn-pgd-at)
    would share cells."""
    train = (CNN_PAPER, CNN_QUICK) if cnn else (TRAIN_PAPER, TRAIN_QUICK)
    adv = ((CNN_ADV_PAPER, CNN_ADV_QUICK) if cnn else (ADV_PAPER, ADV_QUICK)) if adversarial else ({}, {})
    return {"paper": {"train": {**train[0], **adv[0]}, "defense": {"model": name}},
            "quick": {"train": {**train[1], **adv[1]}, "defense": {"model": name}}}


@register_defense("ot-cla")
class OTClassifier(EncoderClassifierDefense):
    description = "OT-Classifier (Algorithm 1): encoder to n_z dims, WGAN critic toward N(0, I), classifier on the code"
    kind = "ot-cla"
    presets = _presets("ot-cla")


@register_defense("e-cla")
class EClassifier(EncoderClassifierDefense):
    description = "E-CLA (OT-Classifier section 4.2): OT-CLA's encoder and classifier without the critic"
    kind = "e-cla"
    presets = _presets("e-cla")


@register_defense("ot-cla-adv")
class OTClassifierAdv(EncoderClassifierDefense):
    description = "OT-CLA+Adv: Algorithm 1 on Madry PGD examples (eps 0.3 MNIST, 0.03 CIFAR-10/STL-10, 0.01 Tiny ImageNet)"
    kind = "ot-cla"
    adversarial = True
    presets = _presets("ot-cla-adv", adversarial=True)


@register_defense("cnn-standard")
class CNNStandard(EncoderClassifierDefense):
    description = ("the OT-Classifier paper's 'No Defense': the authors' BasicCNN (quick: OT-CLA's convolutions, "
                   "a wide layer)")
    kind = "cnn"
    presets = _presets("cnn-standard", cnn=True)


@register_defense("cnn-pgd-at")
class CNNPGDAT(EncoderClassifierDefense):
    description = ("the OT-Classifier paper's 'Madry's Adv': cnn-standard trained on Madry PGD examples "
                   "(eps 0.3 on MNIST)")
    kind = "cnn"
    adversarial = True
    presets = _presets("cnn-pgd-at", adversarial=True, cnn=True)
