"""`ape-gan`: Adversarial Perturbation Elimination with GAN (Shen et al. 2017; papers/otad.txt V-C [40]): a
generator G, trained adversarially against a discriminator D and with an L2 reconstruction loss to map FGSM
examples back to their clean images, placed before the standard FC ResNet + H. Everything is a network, so
the defense is differentiable end to end: gradient attacks (and BPDA, whose surrogate is the defense itself)
go through G.

Networks for MNIST as in the public re-implementation owruby/APE-GAN: G = Conv(64, 4x4, /2)-BN-LReLU,
Conv(128, 4x4, /2)-BN-LReLU, ConvT(64, 4x4, x2)-BN-LReLU, ConvT(1, 4x4, x2)-tanh;
D = Conv(64, 3x3, /2)-LReLU, Conv(128, 3x3, /2)-BN-LReLU, Conv(256, 3x3, /2)-BN-LReLU,
Linear-sigmoid (`ape_width` = 64 scales every layer, for tests). Loss of G (Shen et al.):
xi1 * MSE(G(x_adv), x) + xi2 * BCE(D(G(x_adv)), 1) with xi1 = 0.7, xi2 = 0.3; training examples are FGSM
examples, eps = 0.3 on MNIST, of the classifier being defended (here the standard FC ResNet). The schedule
(Adam, lr 2e-4, betas 0.5/0.999, batch 128, two G steps per D step, 2 epochs) is owruby/APE-GAN's too.
Preset `paper`: these settings on the full training set; `quick`: the same on TRAIN_QUICK's 10,000 points.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from otbench.common.adversarial import pgd_examples
from otbench.common.fc_training import fc_resnet_presets
from otbench.errors import OTBenchError
from otbench.registry import register_defense
from otbench.training import cached_model, progress_bar, shuffled_batches, steps_per_epoch

from .purification import PurifiedDefense, classifier_config, purifier_path

APE_PAPER: dict[str, Any] = {"ape_width": 64, "ape_fgsm_eps": 0.3, "ape_epochs": 2, "ape_batch_size": 128,
                             "ape_lr": 2e-4, "ape_xi1": 0.7, "ape_xi2": 0.3, "ape_g_steps": 2,
                             "ape_train_images": None}  # None: all of the classifier's training points


class Generator(nn.Module):
    def __init__(self, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Discriminator(nn.Module):
    def __init__(self, channels: int = 1, size: int = 28, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, 2), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, 2), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2), nn.Flatten())
        with torch.no_grad():
            n = self.body(torch.zeros(2, channels, size, size)).shape[1]
        self.head = nn.Linear(n, 1)  # logits: BCE-with-logits is the sigmoid + BCE of the paper, stabler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)


def train_ape_gan(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any],
                  device: torch.device, progress: bool = True) -> Generator:
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    classifier.eval()
    # the training pairs: FGSM examples of the defended classifier (one step of eps, no random start)
    adv = torch.cat([pgd_examples(classifier, x[i:i + 1000].to(device), y[i:i + 1000].to(device), "Linf",
                                  cfg["ape_fgsm_eps"], 1, 1.0, False).cpu() for i in range(0, len(x), 1000)])
    g = Generator(x.shape[1], cfg["ape_width"]).to(device)
    d = Discriminator(x.shape[1], x.shape[-1], cfg["ape_width"]).to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg["ape_lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg["ape_lr"], betas=(0.5, 0.999))
    bs = cfg["ape_batch_size"]
    steps = steps_per_epoch(len(x), bs)
    bar = progress_bar(cfg["ape_epochs"] * steps, "train ape-gan", progress, unit="step")
    g.train(), d.train()
    for _, _, idx in shuffled_batches(len(x), bs, cfg["ape_epochs"], gen):
        clean, noisy = x[idx].to(device), adv[idx].to(device)
        ones, zeros = torch.ones(len(idx), device=device), torch.zeros(len(idx), device=device)
        loss_d = (F.binary_cross_entropy_with_logits(d(clean), ones)
                  + F.binary_cross_entropy_with_logits(d(g(noisy).detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        for _ in range(cfg["ape_g_steps"]):
            fake = g(noisy)
            loss_g = (cfg["ape_xi1"] * F.mse_loss(fake, clean)
                      + cfg["ape_xi2"] * F.binary_cross_entropy_with_logits(d(fake), ones))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        bar.update()
    bar.close()
    return g.eval()


@register_defense("ape-gan")
class APEGAN(PurifiedDefense):
    description = "APE-GAN (Shen et al. 2017): a GAN-trained generator removing FGSM noise, then the standard net"
    differentiable = True  # G and the classifier are networks: exact gradients end to end
    surrogate_description = "itself (differentiable end to end)"
    presets = fc_resnet_presets({}, train=APE_PAPER)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        cfg = config["train"]
        if not 0 <= cfg["ape_fgsm_eps"] <= 1 or cfg["ape_epochs"] < 1:
            raise OTBenchError(f"ape-gan: ape_fgsm_eps must be in [0, 1] and ape_epochs >= 1, got "
                               f"{cfg['ape_fgsm_eps']!r} and {cfg['ape_epochs']!r}")

    def __init__(self, data, config, device) -> None:
        cfg = config["train"]
        super().__init__(data, config, device)
        part = data.take_train(cfg["train_size"]).take_train(cfg["ape_train_images"])
        settings = {"classifier": classifier_config(cfg), **{k: v for k, v in cfg.items() if k.startswith("ape_")}}
        self.generator, record = cached_model(
            purifier_path("ape-gan", data, settings), Generator(data.x_train.shape[1], cfg["ape_width"]), settings,
            device, train=lambda: train_ape_gan(self.net, part.x_train, part.y_train, {**settings, "seed": cfg["seed"]},
                                                device),
            evaluate=lambda g: self._evaluate(g, data))
        self.train_record["ape-gan"] = record
        for p in self.generator.parameters():
            p.requires_grad_(False)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def surrogate(self) -> nn.Module:
        return self.module()

    def _evaluate(self, g: Generator, data) -> dict[str, Any]:
        """Mean L2 distance to the clean test images of 500 FGSM examples, before and after G."""
        x, y = data.x_test[:500].to(self.device), data.y_test[:500].to(self.device)
        adv = pgd_examples(self.net, x, y, "Linf", self.config["train"]["ape_fgsm_eps"], 1, 1.0, False)
        with torch.no_grad():
            after = (g.eval()(adv) - x).flatten(1).norm(dim=1).mean()
        return {"fgsm_l2_before": round(float((adv - x).flatten(1).norm(dim=1).mean()), 4),
                "fgsm_l2_after": round(float(after), 4)}
