"""Settings of the OT-Classifier family, each with its source.

papers/ot-classifier.txt gives the embedding sizes (Table 3), the Madry eps per dataset (Supplement A), Adam
(Algorithm 1) and WGAN weight clipping (section 3.3); nothing else. The rest follows the authors' public code
(ER-Classifier) as far as it is described to us: a DCGAN-style encoder, a 4 x 512 critic ending in a log-sigmoid,
clip 0.01. Its source was not available to read here (not in the code index), so the learning rates, Adam's
beta1 = 0.5 and lambda = 1 are those of WAE-GAN on MNIST (Tolstikhin et al. 2018, the paper's ref. [27], which
OT-Classifier's objective and Theorem 1 adapt). Epochs, batch size and widths are ours and say so.
"""
from __future__ import annotations

from typing import Any

from otbench.errors import OTBenchError

# Table 3: the embedding dimension chosen per dataset.
EMBEDDING_DIM: dict[str, int] = {"mnist": 4, "cifar10": 16, "stl10": 16, "tiny-imagenet": 20}
# Supplement A: the eps of Madry's adversarial training, "the same eps when training OT-CLA+Adv".
ADV_EPS: dict[str, float] = {"mnist": 0.3, "cifar10": 0.03, "stl10": 0.03, "tiny-imagenet": 0.01}

TRAIN_PAPER: dict[str, Any] = {
    "n_z": None,  # None: Table 3's embedding dimension for the dataset; an integer overrides it (Figure 4)
    # WAE's MNIST encoder widths (4 stride-2 convolutions, 128..1024 channels): ref. [27]'s DCGAN-style encoder
    "channels": [128, 256, 512, 1024],
    "hidden": 256,  # the classifier C's hidden layer (ours)
    "epochs": 20, "batch_size": 100, "train_size": None, "seed": 0,  # ours
    "lr": 1e-3, "lr_critic": 5e-4, "beta1": 0.5,  # Adam (Algorithm 1); rates and beta1 of WAE-GAN [27]
    "lam": 1.0,  # lambda of Algorithm 1 (WAE-GAN's MNIST value; the paper gives none)
    "clip": 0.01,  # WGAN weight clipping [1] (ER-Classifier: 0.01)
}
# Minutes on a shared 2-core CPU (one thread): 16-32-64 channels, the first 10,000 training points, 4 epochs.
TRAIN_QUICK: dict[str, Any] = {**TRAIN_PAPER, "channels": [16, 32, 64], "epochs": 4, "train_size": 10000}

# Madry et al. 2018 on MNIST: 40 PGD steps of 0.01 at eps 0.3 (step = step_ratio * eps / steps, ratio 4/3).
# adv_eps < 0 means Supplement A's eps for the dataset (ADV_EPS).
ADV_PAPER: dict[str, Any] = {"adv_norm": "Linf", "adv_eps": -1.0, "adv_steps": 40, "adv_step_ratio": 4 / 3,
                             "adv_random_start": True}
# quick: 7 steps of 2.5 eps / 7 (Madry et al.'s CIFAR-10 step count, the harness's step rule)
ADV_QUICK: dict[str, Any] = {**ADV_PAPER, "adv_steps": 7, "adv_step_ratio": 2.5}

# The plain CNN of `cnn-standard` / `cnn-pgd-at`: the encoder's convolutions with a wide ReLU layer in place of
# the n_z-dimensional code (the paper does not describe its "No Defense" / "Madry's Adv" networks).
CNN_WIDTH = 256


def resolve_n_z(dataset: str, n_z: int | None) -> int:
    if n_z is not None:
        if n_z < 1:
            raise OTBenchError(f"n_z must be >= 1, got {n_z}")
        return n_z
    if dataset not in EMBEDDING_DIM:
        raise OTBenchError(f"no Table 3 embedding dimension for dataset '{dataset}' (known: "
                           f"{', '.join(EMBEDDING_DIM)}); set one with --set train.n_z=INT")
    return EMBEDDING_DIM[dataset]


def resolve_adv(dataset: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The adversarial-training settings with a negative adv_eps replaced by Supplement A's value."""
    if cfg["adv_eps"] >= 0:
        return cfg
    if dataset not in ADV_EPS:
        raise OTBenchError(f"no Supplement A eps for dataset '{dataset}' (known: {', '.join(ADV_EPS)}); "
                           "set one with --set train.adv_eps=FLOAT")
    return {**cfg, "adv_eps": ADV_EPS[dataset]}
