"""The OT-Classifier's three networks (papers/ot-classifier.txt, section 3.2 and Figure 1) and the plain CNN.

- Encoder Q: x -> z~ in R^{n_z}. DCGAN-style: stride-2 4x4 convolutions without bias, BatchNorm (the authors'
  MNIST encoder has none after the first, `first_bn=False`) and ReLU, then a linear map to the code
  (ER-Classifier's setup_ot_mnist.py; the widths are train settings, see settings.py).
- Classifier C: code -> class scores, an MLP (the authors': 500, 256 with BatchNorm1d, `hidden_bn=True`).
- Critic D: code -> score, an MLP of 4 hidden layers of 512 units ending in a log-sigmoid (ER-Classifier); its
  weights are clipped to [-clip, clip] after every update (WGAN weight clipping, Arjovsky et al. 2017 [1]).
- BasicCNN: the authors' "baseline model for MNIST" (conv 5x5, max-pool, conv 5x5, max-pool, fc, fc), the
  network of `cnn-standard` / `cnn-pgd-at` at preset `paper`.

`signed=True` puts a fixed x -> 2x - 1 in front (the authors feed MNIST in [-1, 1]); attacks still see [0, 1].

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


class Signed(nn.Module):
    """x in [0, 1] -> 2x - 1 in [-1, 1]: torchvision's Normalize(0.5, 0.5), which the authors apply to MNIST."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x - 1


class Encoder(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], n_z: int, channels: tuple[int, ...], code_relu: bool = False,
                 first_bn: bool = True, signed: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [Signed()] if signed else []
        c = in_shape[0]
        for i, out in enumerate(channels):
            layers.append(nn.Conv2d(c, out, 4, 2, 1, bias=False))
            if i > 0 or first_bn:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            c = out
        h, w = (_conv_out(s, len(channels)) for s in in_shape[1:])
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.code = nn.Linear(c * h * w, n_z)
        self.code_relu = code_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.code(self.trunk(x))
        return F.relu(z) if self.code_relu else z


class Classifier(nn.Module):
    def __init__(self, n_z: int, num_classes: int, hidden: tuple[int, ...], bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = n_z
        for width in hidden:
            layers += [nn.Linear(d, width), *([nn.BatchNorm1d(width)] if bn else []), nn.ReLU(inplace=True)]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, num_classes))

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

    def __init__(self, encoder: Encoder, classifier: Classifier, critic: Critic | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.critic = critic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        """The codes z~ = Q(x) (evaluation mode), batch by batch."""
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        out = torch.cat([self.encoder(x[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)])
        self.train(was)
        return out


class BasicCNN(nn.Module):
    """conv 5x5 (c1) + ReLU + max-pool 2, conv 5x5 (c2) + ReLU + max-pool 2, fc hidden + ReLU, fc classes
    (ER-Classifier setup_ot_mnist.py's BasicCNN at c1, c2, hidden = 20, 50, 500; the flattened size follows the
    input, 4 x 4 x c2 on MNIST)."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int], hidden: int,
                 signed: bool = False) -> None:
        super().__init__()
        h, w = ((s - 4) // 2 for s in in_shape[1:])
        h, w = (h - 4) // 2, (w - 4) // 2
        self.net = nn.Sequential(
            *([Signed()] if signed else []),
            nn.Conv2d(in_shape[0], channels[0], 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(channels[0], channels[1], 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(channels[1] * h * w, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def embed(self, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        raise NotImplementedError("BasicCNN has no code to embed (a 'No Defense' baseline)")
