"""OTAD-T's transport network (papers/otad.txt IV-B): a ViT whose patch embedding gives x~ and whose encoder
output gives z~ (eq. 17), on timm's VisionTransformer.

x~ = the position-embedded patch tokens P(E(x_p)) (plus the CLS token where there is one), z~ = the tokens after
the last block (eq. 18), and the classifier H reads z~: timm's final norm, pooling and linear head. Both live in
R^(N D) once flattened, so OTAD's CIP step (otbench/defenses/otad/cip.py) runs on them unchanged.

Patch grid on 28 x 28 inputs (MNIST, Fashion-MNIST): patch size 4 gives a 7 x 7 grid, N = 49 tokens of
4 x 4 pixels; the paper's 64 patches on 32 x 32 CIFAR-10 are the same 4 x 4 patches on an 8 x 8 grid.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from otbench.data import Dataset
from otbench.errors import OTBenchError
from otbench.training import cached_model, checkpoint_path, minibatch_training, steps_per_epoch, test_accuracy

# papers/otad.txt V-A: 6 blocks, 8 heads, 64 patches, 256 dims, AdamW + cosine annealing (no CLS token is
# mentioned: the classifier pools the tokens). Epochs, learning rate, batch and weight decay are not given.
VIT_PAPER: dict[str, Any] = {"arch": "paper", "patch": 4, "dim": 256, "depth": 6, "heads": 8, "cls_token": False,
                             "epochs": 50, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.05,
                             "train_size": None, "seed": 0}
# The public OTAD code's ViT: 8 x 8 patch grid, 7 blocks, 12 heads, 384 dims, a CLS token and a
# LayerNorm + Linear classifier on it (timm's global_pool='token').
VIT_CODE: dict[str, Any] = {**VIT_PAPER, "arch": "reference-code", "dim": 384, "depth": 7, "heads": 12,
                            "cls_token": True}
# CPU minutes: the paper's layout (no CLS, pooled head) scaled down; x~ has 49 x 32 = 1568 dimensions.
VIT_QUICK: dict[str, Any] = {**VIT_PAPER, "dim": 32, "depth": 2, "heads": 4, "epochs": 4, "lr": 2e-3,
                             "train_size": 20000}
ARCHS = ("paper", "reference-code")


class TransportViT(nn.Module):
    """timm ViT split at x~ = embed(x) and z~ = encode(x~); logits = classify(z~)."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, cfg: dict[str, Any]) -> None:
        super().__init__()
        if cfg["arch"] not in ARCHS:
            raise OTBenchError(f"unknown ViT arch '{cfg['arch']}'; valid: {', '.join(ARCHS)}")
        from timm.models.vision_transformer import VisionTransformer  # lazy: timm warns on import

        c, h, w = shape
        if h % cfg["patch"] or w % cfg["patch"]:
            raise OTBenchError(f"patch size {cfg['patch']} must divide the {h} x {w} input")
        self.vit = VisionTransformer(img_size=(h, w), patch_size=cfg["patch"], in_chans=c, num_classes=num_classes,
                                     embed_dim=cfg["dim"], depth=cfg["depth"], num_heads=cfg["heads"],
                                     class_token=cfg["cls_token"],
                                     global_pool="token" if cfg["cls_token"] else "avg")
        self.tokens = (h // cfg["patch"]) * (w // cfg["patch"]) + int(cfg["cls_token"])
        self.dim = cfg["dim"]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x~ (B, N * D): P(E(x_p)) for every patch, flattened."""
        v = self.vit
        return v.norm_pre(v._pos_embed(v.patch_embed(x))).flatten(1)

    def encode(self, xt: torch.Tensor) -> torch.Tensor:
        """z~ (B, N * D): the transformer blocks applied to x~ (flattened in and out)."""
        return self.vit.blocks(xt.view(len(xt), self.tokens, self.dim)).flatten(1)

    def classify(self, zt: torch.Tensor) -> torch.Tensor:
        """H: final norm, pooling (CLS token or mean) and the linear head, on a flattened z~."""
        v = self.vit
        return v.forward_head(v.norm(zt.view(len(zt), self.tokens, self.dim)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def train_vit(data: Dataset, cfg: dict[str, Any], device: torch.device, progress: bool = True) -> TransportViT:
    """Cross-entropy, AdamW with a cosine learning-rate schedule (papers/otad.txt V-A)."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    net = TransportViT(data.input_shape, data.num_classes, cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    x, y = data.x_train, data.y_train
    total = cfg["epochs"] * steps_per_epoch(len(x), cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    net.train()
    minibatch_training(x, y, cfg["batch_size"], cfg["epochs"], gen, opt, sched,
                       lambda xb, yb: F.cross_entropy(net(xb), yb), device, f"train ViT on {data.name}", progress, net=net)
    return net.eval()


def vit_path(data: Dataset, cfg: dict[str, Any]):
    return checkpoint_path("vit", data.name, model="otad-t-vit", train=cfg)


def load_or_train_vit(data: Dataset, cfg: dict[str, Any], device: torch.device,
                      progress: bool = True) -> tuple[TransportViT, dict[str, Any]]:
    data = data.take_train(cfg["train_size"])
    return cached_model(vit_path(data, cfg), TransportViT(data.input_shape, data.num_classes, cfg), cfg, device,
                        train=lambda: train_vit(data, cfg, device, progress),
                        evaluate=lambda net: {"test_accuracy": test_accuracy(net, data, device)})


@torch.no_grad()
def token_banks(net: TransportViT, x: torch.Tensor, device: torch.device,
                batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(x~_i, z~_i) of the training points (Algorithm 1, line 4), float32."""
    xs, zs = [], []
    for i in range(0, len(x), batch):
        xt = net.embed(x[i:i + batch].to(device))
        xs.append(xt)
        zs.append(net.encode(xt))
    return torch.cat(xs), torch.cat(zs)


