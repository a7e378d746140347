"""`rse`: Random Self-Ensemble (Liu et al. 2018, "Towards robust neural networks via random self-ensemble").

A noise layer (x + N(0, sigma^2)) before every convolution of the classifier (otbench/baselines/mnist_cnn.py),
sigma_init before the first and sigma_inner before the others; the network is trained with the noise on,
and at test time the noise stays on and the prediction is the ensemble of `ensemble` noisy forward passes
(the mean of their softmax outputs; logits() returns its log, so argmax and cross-entropy read it directly).

Settings from the paper (Liu et al. 2018, Sec. 4: sigma_init = 0.2, sigma_inner = 0.1, 10 forward passes at
inference, on CIFAR-10 / STL-10; the paper has no MNIST setting, and the OT-Classifier paper, which runs
RSE on MNIST in its Figure 2, gives none either, so these are used unchanged on MNIST's [0, 1] inputs).
Preset `quick` keeps the noise and uses 4 passes on the narrow quick CNN.

The defense is differentiable (gradients through the noisy passes are real) and randomized: `otbench run`
gives gradient attacks EOT (otbench/checks.py, `randomized`), as RSE must be attacked (Athalye et al. 2018).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.registry import register_defense

from .mnist_cnn import CNN_PAPER, CNN_QUICK, load_or_train_cnn

RSE_NOISE: dict[str, Any] = {"noise_init": 0.2, "noise_inner": 0.1}


@register_defense("rse")
class RandomSelfEnsemble(Defense):
    description = ("Random Self-Ensemble (Liu et al. 2018): Gaussian noise layers before each conv, in training and "
                   "testing; the mean softmax of several noisy passes")
    differentiable = True
    randomized = True
    surrogate_description = "the same network with its noise layers off (deterministic)"
    presets = {"paper": {"train": {**CNN_PAPER, **RSE_NOISE}, "defense": {"ensemble": 10}},
               "quick": {"train": {**CNN_QUICK, **RSE_NOISE}, "defense": {"ensemble": 4}}}

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        cfg = config["train"]
        if cfg["noise_init"] < 0 or cfg["noise_inner"] < 0 or config["defense"]["ensemble"] < 1:
            raise OTBenchError(f"rse: noise stds must be >= 0 and ensemble >= 1; got noise_init={cfg['noise_init']}, "
                               f"noise_inner={cfg['noise_inner']}, ensemble={config['defense']['ensemble']}")
        self.net, self.train_record = load_or_train_cnn(data, cfg, device, (cfg["noise_init"], cfg["noise_inner"]))
        self.net.requires_grad_(False)  # attacks differentiate inputs only

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        k = self.config["defense"]["ensemble"]
        # one batched pass of k copies: each copy draws its own noise in every noise layer
        probs = self.net(x.repeat(k, *([1] * (x.dim() - 1)))).softmax(1).view(k, len(x), -1).mean(0)
        return probs.clamp_min(1e-12).log()

    def surrogate(self) -> nn.Module:
        """The trained weights without noise: a deterministic BPDA surrogate and the undefended network that
        otbench's `undefended-not-broken` check attacks."""
        quiet = copy.deepcopy(self.net)
        for layer in quiet.noise_layers:
            layer.std = 0.0
        return quiet.eval()
