"""DML-nets for OTAD-T's neighbour search (papers/otad.txt IV-D, V-A, Table VII), trained with a triplet loss
and batch semi-hard mining (Schroff et al. 2015, FaceNet).

Architectures (`arch`): `resnet3` (3-block convolutional ResNet), `cnn2` (2-layer CNN), `vit1` (1-block ViT),
`attention` (one self-attention block, no MLP) and `resnet18` (torchvision, for Tiny ImageNet; ImageNet-1K
weights only from a file the user names, `weights`, since nothing is downloaded). Embeddings are
L2-normalised, so neighbours are searched by l2 distance on the unit sphere.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from otbench.data import Dataset
from otbench.errors import OTBenchError
from otbench.training import cached_model, checkpoint_path, minibatch_training, steps_per_epoch

DML_ARCHS = ("resnet3", "cnn2", "vit1", "attention", "resnet18")
# Not given in the paper: embedding size, margin, optimiser and epochs are ours.
# `width`: channels of the first convolution (resnet3: w, 2w, 4w; cnn2: w, 2w); the others ignore it.
DML_QUICK: dict[str, Any] = {"arch": "resnet3", "emb": 64, "width": 8, "margin": 0.2, "epochs": 1, "batch_size": 128,
                             "lr": 1e-3, "train_size": 20000, "seed": 0, "weights": ""}
DML_PAPER: dict[str, Any] = {**DML_QUICK, "width": 16, "epochs": 30, "train_size": None}


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class _Attention(nn.Module):
    """One multi-head self-attention block on 4 x 4 patch tokens (residual, pre-norm), mean-pooled."""

    def __init__(self, shape: tuple[int, ...], emb: int, dim: int = 64, heads: int = 4, patch: int = 4) -> None:
        super().__init__()
        c, h, w = shape
        self.patch = nn.Conv2d(c, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (h // patch) * (w // patch), dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).mT + self.pos
        n = self.norm(t)
        t = t + self.attn(n, n, n, need_weights=False)[0]
        return self.out(t.mean(1))


def _resnet18(shape: tuple[int, ...], emb: int, weights: str | None) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18()
    if weights:  # ImageNet-1K weights from a user-given file (papers/otad.txt V-A, Tiny ImageNet)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("state_dict", state))
    net.fc = nn.Linear(net.fc.in_features, emb)
    if shape[0] != 3:  # grey images: repeat the channel (keeps the pre-trained stem)
        return nn.Sequential(_Repeat(3), net)
    return net


class _Repeat(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.c, -1, -1)


class DMLNet(nn.Module):
    """psi(x): an L2-normalised embedding."""

    def __init__(self, shape: tuple[int, ...], cfg: dict[str, Any]) -> None:
        super().__init__()
        arch, emb, c = cfg["arch"], cfg["emb"], shape[0]
        if arch not in DML_ARCHS:
            raise OTBenchError(f"unknown DML-net '{arch}'; valid: {', '.join(DML_ARCHS)}")
        if arch == "resnet3":
            w = cfg["width"]
            self.body = nn.Sequential(nn.Conv2d(c, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                      _Basic(w, w, 1), _Basic(w, 2 * w, 2), _Basic(2 * w, 4 * w, 2),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, emb))
        elif arch == "cnn2":
            w = cfg["width"]
            self.body = nn.Sequential(nn.Conv2d(c, w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(w, 2 * w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Flatten(), nn.Linear(2 * w * (shape[1] // 4) * (shape[2] // 4), emb))
        elif arch == "vit1":
            from timm.models.vision_transformer import VisionTransformer  # lazy: timm warns on import

            self.body = VisionTransformer(img_size=shape[1:], patch_size=4, in_chans=c, num_classes=emb,
                                          embed_dim=64, depth=1, num_heads=4, global_pool="avg", class_token=False)
        elif arch == "attention":
            self.body = _Attention(shape, emb)
        else:
            self.body = _resnet18(shape, emb, cfg.get("weights"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.body(x), dim=1)


def semihard_negatives(d: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch semi-hard mining (FaceNet; TensorFlow Addons' triplet_semihard_loss): for every anchor-positive
    pair (a, p), the negative n with the smallest d(a, n) > d(a, p); semi-hard when also d(a, n) < d(a, p) +
    margin. Pairs with no negative farther than the positive take the farthest negative instead.

    d: (B, B) distances. Returns (a, p, n) index triples as (P, 3) and a (P,) mask of the semi-hard ones."""
    same = labels[:, None] == labels[None, :]
    a, p = (same & ~torch.eye(len(labels), dtype=torch.bool, device=d.device)).nonzero().unbind(1)
    dap = d[a, p]
    dan = d[a]  # (P, B)
    neg = ~same[a]
    outside = neg & (dan > dap[:, None])
    n_out = torch.where(outside, dan, torch.inf).argmin(1)
    n_in = torch.where(neg, dan, -torch.inf).argmax(1)
    has_out = outside.any(1)
    n = torch.where(has_out, n_out, n_in)
    semihard = has_out & (d[a, n] < dap + margin)
    return torch.stack([a, p, n], 1), semihard


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """mean over anchor-positive pairs of max(0, d(a, p) - d(a, n) + margin), n semi-hard mined."""
    d = torch.cdist(emb, emb)
    with torch.no_grad():
        t, _ = semihard_negatives(d.detach(), labels, margin)
    a, p, n = t.unbind(1)
    return F.relu(d[a, p] - d[a, n] + margin).mean()


def train_dml(data: Dataset, cfg: dict[str, Any], device: torch.device, progress: bool = True,
              history: list[float] | None = None) -> DMLNet:
    """Adam on the semi-hard triplet loss; `history`, if given, receives the loss of every step."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    net = DMLNet(data.input_shape, cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    x, y = data.x_train, data.y_train
    total = cfg["epochs"] * steps_per_epoch(len(x), cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    net.train()
    minibatch_training(x, y, cfg["batch_size"], cfg["epochs"], gen, opt, sched,
                       lambda xb, yb: triplet_loss(net(xb), yb, cfg["margin"]), device,
                       f"train DML-net {cfg['arch']}", progress, on_loss=None if history is None else history.append,
                       net=net)
    return net.eval()


@torch.no_grad()
def embed_all(net: nn.Module, x: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    return torch.cat([net(x[i:i + batch].to(device)) for i in range(0, len(x), batch)])


@torch.no_grad()
def knn_accuracy(net: DMLNet, data: Dataset, device: torch.device, k: int = 10, n_test: int = 2000) -> float:
    """Majority vote of the k nearest training embeddings: how good the neighbourhoods are."""
    bank = embed_all(net, data.x_train, device)
    q = embed_all(net, data.x_test[:n_test], device)
    idx = torch.cdist(q, bank).topk(k, largest=False).indices
    votes = F.one_hot(data.y_train.to(device)[idx], data.num_classes).sum(1)
    return (votes.argmax(1).cpu() == data.y_test[:n_test]).float().mean().item()


def load_or_train_dml(data: Dataset, cfg: dict[str, Any], device: torch.device, progress: bool = True,
                      history: list[float] | None = None) -> tuple[DMLNet, dict[str, Any]]:
    """The cached DML-net for cfg, else trained (`history` then receives its losses) and cached."""
    data = data.take_train(cfg["train_size"])
    return cached_model(checkpoint_path(f"dml-{cfg['arch']}", data.name, model="dml-net", train=cfg), DMLNet(data.input_shape, cfg),
                        cfg, device, train=lambda: train_dml(data, cfg, device, progress, history),
                        evaluate=lambda net: {"knn_accuracy": knn_accuracy(net, data, device)})
