"""`bpda-cw-l2`: Carlini-Wagner L2 (cw-l2) through BPDA: the forward pass is the real defense, the backward pass
its declared surrogate (Athalye et al. 2018). How the OT-Classifier paper's Table 2 attacks Defense-GAN:
"evaluated using the method proposed in [2]" (Athalye et al.), with C&W's hyper-parameters."""
from __future__ import annotations

from torch import nn

from ..registry import register_attack
from .bpda_pgd import BPDAModule
from .cw_l2 import CWL2


@register_attack("bpda-cw-l2")
class BPDACWL2(CWL2):
    description = ("Carlini-Wagner L2 with the backward pass through the defense's surrogate (BPDA), successful "
                   "only under the eps distortion threshold (papers/ot-classifier.txt Table 2)")
    needs = "surrogate-gradients"

    def model(self) -> nn.Module:
        return self.eot(BPDAModule(self.defense))
