"""The OT-Classifier paper's Table 2: C&W (L2, untargeted) against Defense-GAN and OT-CLA+Adv on MNIST."""
from __future__ import annotations

from otbench.registry import register_table
from otbench.report.spec import Column, Row, TableSpec

# The C&W budget both rows share, reduced from cw-l2's defaults (1000 steps x 9 binary-search steps from
# c = 1e-3): every step of the attack on Defense-GAN runs the whole latent projection (L x R generator
# passes). With 10x fewer steps, Adam's step is 10x larger (lr 0.1): pixels at exactly 0 or 1 start at
# w = atanh(+-0.999999) = +-7.3 and move lr per step, so at lr 0.01 100 steps never reach them (the
# undefended quick CNN kept 45% accuracy at RMS 0.5; at lr 0.1 it falls to 0%). The search starts at
# c = 0.1 so that 6 searches cover 0.1 to 1e4.
CW_TABLE_2 = {"steps": 100, "binary_search_steps": 6, "c": 0.1, "lr": 0.1}


@register_table("otc-table-2")
def ot_cla_table_2() -> TableSpec:
    return TableSpec(
        name="otc-table-2", title="C&W attack, L2 (RMS) distortion <= 0.005, MNIST",
        paper="ot-classifier", paper_table="2", dataset="mnist",
        rows=(Row("Defense-GAN", "defense-gan", "Defense-GAN", attack="bpda-cw-l2"),
              Row("OT-CLA+Adv", "ot-cla-adv", "OT-CLA+Adv")),
        columns=(Column("Clean accuracy", "cw-l2", 0.005, "clean", attack_overrides=CW_TABLE_2),
                 Column("Testing accuracy", "cw-l2", 0.005, "robust", "cw-l2<=0.005", attack_overrides=CW_TABLE_2)),
        note="Untargeted Carlini-Wagner L2 (otbench/attacks/cw_l2.py), successful only with an RMS distortion "
             "||delta||_2 / sqrt(d) <= 0.005, with 100 Adam steps (lr 0.1) x 6 binary-search steps on c from c = 0.1 "
             "for both rows (the paper: 'the same hyper-parameter values' for both). RMS 0.005 is an L2 norm of 0.14 "
             "on MNIST, below what C&W needs even on an undefended CNN; if the paper's 0.005 is a mean squared "
             "distortion (RMS 0.0707, L2 1.98), `--eps 0.0707` measures that reading. Defense-GAN is attacked as the "
             "paper did, after "
             "Athalye et al. (2018): BPDA with the projection as the identity in the backward pass (`bpda-cw-l2`); "
             "OT-CLA+Adv is differentiable and gets plain `cw-l2`. Defense-GAN is randomized (random restarts); "
             "cells filled by `report --fill` use no EOT.")
