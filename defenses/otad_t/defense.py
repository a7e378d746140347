"""`otad-t`, `otad-t-dml` and `knn-t`: Transformer-based OTAD (papers/otad.txt IV-B, V-E, V-G).

Test time: x~ = the ViT's patch embedding of x; its K nearest training points, by l2 in x~ (`otad-t`) or by l2
between DML-net embeddings (`otad-t-dml`, IV-D); then OTAD's exact batched CIP solver (otbench/defenses/otad/cip.py) on
(x~, X~, Z~) gives z~, and the ViT's classifier reads it. `knn-t` takes the neighbours' mean z~ instead (Table XII).
"""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from otbench.defenses.otad.cip import CIPResult
from otbench.defenses.otad.defense import _ExactOTAD, check_cip_settings
from otbench.defenses.otad.step import CIPStep
from otbench.common.fc_defense import check_k
from otbench.common.neighbours import ExactKNN
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.registry import register_defense

from .dml import embed_all, load_or_train_dml
from .presets import KNN_T_DEFAULTS, OTAD_T_DEFAULTS, dml_config, presets, vit_config
from .vit import load_or_train_vit, token_banks


class ViTNeighbourDefense(Defense):
    """The trained ViT, the training points' (x~, z~) and the neighbour search (l2 in x~, or a DML-net)."""

    uses_dml: bool = False
    surrogate_description = "the ViT itself, x -> H(z~(x~(x))), without the neighbour and CIP steps"

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        check_k(config["defense"]["K"])

    def __init__(self, data, config, device) -> None:
        k = config["defense"]["K"]
        super().__init__(data, config, device)
        train = config["train"]
        self.net, self.train_record = load_or_train_vit(data, vit_config(train), device)
        self.train_x = data.take_train(train["train_size"]).x_train
        if k > len(self.train_x):
            raise OTBenchError(f"K must be at most the {len(self.train_x)} training points, got {k}")
        self.bank_x, self.bank_z = token_banks(self.net, self.train_x, device)  # x~_i, z~_i
        self.dml: nn.Module | None = None
        if self.uses_dml:
            self.dml, self.dml_record = load_or_train_dml(data, dml_config(train), device)
            self.knn = ExactKNN(embed_all(self.dml, self.train_x, device))
            # both trained networks decide the outputs: both records go with every result
            self.train_record = {"vit": self.train_record, "dml-net": self.dml_record}
        else:
            self.knn = ExactKNN(self.bank_x)
        self.timings: Counter[str] = Counter()

    @contextmanager
    def timer(self, stage: str):
        start = time.perf_counter()
        yield
        self.timings[stage] += time.perf_counter() - start

    def neighbours(self, x: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """(B, K) training indices: nearest in x~, or in the DML-net's embedding of x (piecewise constant)."""
        with torch.no_grad(), self.timer("neighbours"):
            keys = self.dml(x) if self.dml is not None else xt.detach()
            return self.knn.search(keys, self.config["defense"]["K"])

    def surrogate(self) -> nn.Module:
        return self.net

    def metric_network(self) -> nn.Module | None:
        return self.dml

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        bs = self.config["defense"]["batch_size"]
        return torch.cat([self._logits(x[i:i + bs].to(self.device)) for i in range(0, len(x), bs)])

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OTADTBase(ViTNeighbourDefense):
    differentiable = False  # the CIP step is solved...
    piecewise_differentiable = True  # ...exactly, so it is differentiable a.e. (otad-exact-grad)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        check_cip_settings(config["defense"])

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        self.cip = CIPStep(config["defense"])

    def cip_features(self, x: torch.Tensor) -> tuple[CIPResult, torch.Tensor, torch.Tensor]:
        """(CIP result, x~, neighbour indices) for a batch of images; differentiable a.e. when x needs grad."""
        xt = self.net.embed(x)
        idx = self.neighbours(x, xt)
        with self.timer("cip"):
            return self.cip(xt, self.bank_x[idx], self.bank_z[idx], idx), xt, idx

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.classify(self.cip_features(x)[0].features.float())

    def exact_module(self) -> nn.Module:
        return _ExactOTAD(self)  # calls logits() with autograd on: the exact a.e. gradient


@register_defense("otad-t")
class OTADT(OTADTBase):
    description = "OTAD-T: ViT + exact K-NN by l2 in the patch embedding x~ + CIP step (papers/otad.txt IV-B)"
    presets = presets(OTAD_T_DEFAULTS)


@register_defense("otad-t-dml")
class OTADTDML(OTADTBase):
    description = "OTAD-T with DML-net neighbours (triplet loss; train.dml_arch) + CIP step (papers/otad.txt V-E)"
    uses_dml = True
    has_metric_network = True
    presets = presets(OTAD_T_DEFAULTS, dml=True)


@register_defense("knn-t")
class KNNT(ViTNeighbourDefense):
    description = "mean z~ of the K nearest training points by l2 in x~, then the ViT's head (Table XII)"
    differentiable = False  # piecewise constant in x
    presets = presets(KNN_T_DEFAULTS)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        xt = self.net.embed(x)
        return self.net.classify(self.bank_z[self.neighbours(x, xt)].mean(1))


@register_defense("vit")
class ViT(Defense):
    description = "the undefended ViT that OTAD-T is built on (x -> H(z~(x~(x))))"
    differentiable = True
    surrogate_description = "itself"
    presets = presets({})

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        self.net, self.train_record = load_or_train_vit(data, vit_config(config["train"]), device)

    def surrogate(self) -> nn.Module:
        return self.net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))
