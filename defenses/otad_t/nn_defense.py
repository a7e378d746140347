"""`otad-t-nn` and `otad-t-nn-dml`: OTAD-T with its CIP step replaced by CIP-net (papers/otad.txt IV-C, V-F).

CIP-net is trained on the exact CIP solutions (otbench/defenses/otad/cip.py) of training points whose K neighbours are
searched in the training set without the point itself (eq. 19's N_K(x~) "in S excluded x~"), mixed with the
ViT's own features by alpha (eq. 24). The defense is differentiable (the neighbour set is piecewise constant),
so gradient attacks (pgd, autoattack) run on it directly.

Deviation, stated: the paper trains one CIP-net on OTAD-T-with-attention's solutions and reuses it with ResNet
neighbours; here each variant's CIP-net learns from the solutions of the same neighbour search it serves.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from otbench.registry import register_defense
from otbench.training import cached_model, checkpoint_path

from .cipnet import CIPNet, relative_error, set_scales, train_cipnet
from .defense import OTADTBase
from .presets import OTAD_T_DEFAULTS, cipnet_config, dml_config, presets, vit_config

CIP_KEYS = ("K", "L", "l", "delta1", "delta2", "formulation", "potentials")
HELD_OUT = 200  # test points on which the CIP-net's error against the exact solver is recorded


class OTADTNNBase(OTADTBase):
    differentiable = True
    piecewise_differentiable = False
    surrogate_description = "the ViT itself (for BPDA as in papers/otad.txt Table VI; PGD needs none)"

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        self.cipnet, self.cipnet_record = self._load_or_train_cipnet()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        xt = self.net.embed(x)
        idx = self.neighbours(x, xt)
        with self.timer("cip-net"):
            z = self.cipnet(xt, self.bank_x[idx], self.bank_z[idx])
        return self.net.classify(z)

    def exact_module(self) -> nn.Module:
        return self.module()

    # -- CIP-net training data -------------------------------------------------------------------------
    def leave_one_out(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, K) neighbours of training points ids among the other training points."""
        K = self.config["defense"]["K"]
        idx = self.knn.search(self.knn.points[ids.to(self.knn.points.device)], K + 1).cpu()
        self_pos = torch.where(idx == ids[:, None], torch.arange(K + 1), K).amin(1)  # K: not found, drop last
        keep = torch.arange(K + 1)[None] != self_pos[:, None]
        return idx[keep].view(len(ids), K)

    def exact_features(self, xt: torch.Tensor, idx: torch.Tensor, chunk: int = 500) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.cip(xt[i:i + chunk], self.bank_x[idx[i:i + chunk]], self.bank_z[idx[i:i + chunk]],
                                       idx[i:i + chunk]).features.float() for i in range(0, len(xt), chunk)])

    def held_out(self, n: int = HELD_OUT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x~, neighbour indices, exact CIP features) of the first n test points."""
        x = self.data.x_test[:n].to(self.device)
        with torch.no_grad():
            xt = self.net.embed(x)
            idx = self.neighbours(x, xt)
        return xt, idx, self.exact_features(xt, idx)

    @torch.no_grad()
    def cipnet_error(self, net: CIPNet, xt: torch.Tensor, idx: torch.Tensor, exact: torch.Tensor) -> float:
        net.eval()
        return relative_error(net(xt, self.bank_x[idx], self.bank_z[idx]), exact).mean().item()

    def _load_or_train_cipnet(self) -> tuple[CIPNet, dict[str, Any]]:
        train = self.config["train"]
        cfg = cipnet_config(train)
        path = checkpoint_path("cipnet", self.data.name, model="cip-net", vit=vit_config(train), cipnet=cfg,
                               dml=dml_config(train) if self.uses_dml else None,
                               cip={k: self.config["defense"][k] for k in CIP_KEYS})
        K, d = self.config["defense"]["K"], self.bank_x.shape[1]
        net = CIPNet(d, K, cfg["width"], cfg["depth"], cfg["heads"]).to(self.device)
        extra: dict[str, Any] = {}

        def fit() -> CIPNet:
            n = min(cfg["n_train"], len(self.train_x))
            ids = torch.randperm(len(self.train_x), generator=torch.Generator().manual_seed(train["seed"]))[:n]
            nbr = self.leave_one_out(ids).to(self.device)
            ids_d = ids.to(self.device)
            targets = self.exact_features(self.bank_x[ids_d], nbr)
            set_scales(net, self.bank_x[ids_d], self.bank_x[nbr], self.bank_z[nbr])
            extra["held"] = held = self.held_out()
            extra["heldout_rel_error_untrained"] = self.cipnet_error(net, *held)
            train_cipnet(net, lambda b: (self.bank_x[ids_d[b]], self.bank_x[nbr[b]], self.bank_z[nbr[b]]), n,
                         targets, self.bank_z[ids_d], cfg, train["seed"])
            extra["train_points"] = n
            return net

        def evaluate(trained: CIPNet) -> dict[str, Any]:
            held = extra.pop("held")  # the same test points, solved once
            return {**extra, "heldout_rel_error": self.cipnet_error(trained, *held), "heldout_n": HELD_OUT}

        return cached_model(path, net, cfg, self.device, train=fit, evaluate=evaluate)


@register_defense("otad-t-nn")
class OTADTNN(OTADTNNBase):
    description = "OTAD-T-NN: OTAD-T (l2 neighbours in x~) with CIP-net for the CIP step, differentiable (IV-C)"
    presets = presets(OTAD_T_DEFAULTS, cipnet=True)


@register_defense("otad-t-nn-dml")
class OTADTNNDML(OTADTNNBase):
    description = "OTAD-T-NN with DML-net neighbours (train.dml_arch) and CIP-net (papers/otad.txt V-F)"
    uses_dml = True
    has_metric_network = True
    presets = presets(OTAD_T_DEFAULTS, dml=True, cipnet=True, dml_arch="attention")
