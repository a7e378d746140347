"""The OT-Classifier's three networks (papers/ot-classifier.txt, section 3.2 and Figure 1) and the plain CNN.

- Encoder Q: x -> z~ in R^{n_z}. DCGAN-style: stride-2 4x4 convolutions with BatchNorm and ReLU, then a linear
  map to the code (the ER-Classifier's public code uses a DCGAN-style encoder on MNIST, after the WAE encoder of
  Tolstikhin et al. 2018, ref. [27]; the channel widths are train settings, see settings.py).
- Classifier C: code -> class scores, a one-hidden-layer MLP.
- Critic D: code -> score, an MLP of 4 hidden layers of 512 units ending in a log-sigmoid (ER-Classifier); its
  weights are clipped to [-clip, clip] after every update (WGAN weight clipping, Arjovsky et al. 2017 [1]).

`EncoderClassifier` is C(Q(x)), the network a user and every attack sees (the critic is used only in training,
section 3.2: "At inference time, only the encoder and the classifier are used"). With `code_relu=True` and a wide
code it is the ordinary CNN of the `cnn-*` baselines: the same convolutions without the low-dimensional code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_out(size: int, layers: int) -> int:
    for _ in range(layers):  # kernel 4, stride 2, padding 1: floor(size / 2)
        size = size // 2
    return size


class Encoder(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], n_z: int, channels: tuple[int, ...], code_relu: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_shape[0]
        for out in channels:
            layers += [nn.Conv2d(c, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        h, w = (_conv_out(s, len(channels)) for s in in_shape[1:])
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.code = nn.Linear(c * h * w, n_z)
        self.code_relu = code_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.code(self.trunk(x))
        return F.relu(z) if self.code_relu else z


class Classifier(nn.Module):
    def __init__(self, n_z: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_z, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Critic(nn.Module):
    """D: R^{n_z} -> (-inf, 0], 4 x 512 ReLU MLP + log-sigmoid (ER-Classifier's critic)."""

    def __init__(self, n_z: int, width: int = 512, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = n_z
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU(inplace=True)]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(self.net(z)).squeeze(1)

    @torch.no_grad()
    def clip_(self, c: float) -> None:
        for p in self.parameters():
            p.clamp_(-c, c)


class EncoderClassifier(nn.Module):
    """C(Q(x)); `critic` is kept beside them (for the record and the tests), never used by forward."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, n_z: int, channels: tuple[int, ...],
                 hidden: int, critic: bool, code_relu: bool = False, critic_width: int = 512,
                 critic_depth: int = 4) -> None:
        super().__init__()
        self.encoder = Encoder(in_shape, n_z, channels, code_relu)
        self.classifier = Classifier(n_z, num_classes, hidden)
        self.critic = Critic(n_z, critic_width, critic_depth) if critic else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        """The codes z~ = Q(x) (evaluation mode), batch by batch."""
        was = self.training
        self.eval()
        out = torch.cat([self.encoder(x[i:i + batch].to(self.classifier.net[0].weight.device)).cpu()
                         for i in range(0, len(x), batch)])
        self.train(was)
        return out
