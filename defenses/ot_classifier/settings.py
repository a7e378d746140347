"""Settings of the OT-Classifier family, each with its source.

The `paper` presets follow the authors' public code, github.com/liyao880/ER-Classifier at commit 5b6a418
(files cited as train_ot.py:LINE, setup_ot_mnist.py:LINE, setup_pgd.py:LINE, utils.py:LINE; the MNIST branch
of each), and papers/ot-classifier.txt where the code leaves a value to the command line: Table 3 (the
embedding sizes) and Supplement A (the Madry eps per dataset). Values neither gives are marked "ours" with the
reason. The authors scale MNIST to [-1, 1] (utils.py:11, Normalize(0.5, 0.5)) so their eps 0.6 and step 0.02
(train_ot.py:232-234) are 0.3 and 0.01 in otbench's [0, 1] domain; the networks see the same [-1, 1] inputs
(`input_range: "signed"`, a fixed 2x - 1 in front of the encoder).

`cnn-standard` ("No Defense") and `cnn-pgd-at` ("Madry's Adv") use the authors' "baseline model for MNIST",
BasicCNN (setup_ot_mnist.py:82-101). The repository does not train it; its training is Madry et al.'s MNIST
challenge (github.com/MadryLab/mnist_challenge, config.json and train.py, which the paper cites as [17]).
"""
from __future__ import annotations

from typing import Any

from otbench.errors import OTBenchError

# Table 3: the embedding dimension chosen per dataset (train_ot.py:235, n_z = 4 on MNIST, agrees).
EMBEDDING_DIM: dict[str, int] = {"mnist": 4, "cifar10": 16, "stl10": 16, "tiny-imagenet": 20}
# Supplement A: the eps of Madry's adversarial training, "the same eps when training OT-CLA+Adv".
ADV_EPS: dict[str, float] = {"mnist": 0.3, "cifar10": 0.03, "stl10": 0.03, "tiny-imagenet": 0.01}

INPUT_RANGES = ("unit", "signed")  # [0, 1] as stored; [-1, 1] as the authors' MNIST loader gives (utils.py:11)
CNN_ARCHS = ("basic-cnn", "encoder")  # setup_ot_mnist.py's BasicCNN; OT-CLA's convolutions with a wide layer

TRAIN_PAPER: dict[str, Any] = {
    "n_z": None,  # None: Table 3's embedding dimension for the dataset; an integer overrides it (Figure 4)
    # Encoder (setup_ot_mnist.py:26-54): 4x4 stride-2 convolutions of dim_h, 2, 4, 8 dim_h channels, dim_h = 128
    # (train_ot.py:215, -dim_h default; utils.py:61), BatchNorm after all but the first (setup_ot_mnist.py:36-45),
    # no bias, then fc to n_z (setup_ot_mnist.py:48).
    "channels": [128, 256, 512, 1024], "first_bn": False,
    # Classifier C = SmallCNN (setup_ot_mnist.py:4-24): n_z -> 500 -> 256 -> 10, BatchNorm1d + ReLU after each.
    "hidden": [500, 256], "hidden_bn": True,
    # Critic D (setup_ot_mnist.py:56-80): 4 ReLU layers of dim_h * 4 = 512 units, then 1, LogSigmoid.
    "critic_width": 512, "critic_depth": 4,
    # utils.py:11 (MNIST; STL-10 too, utils.py:41-46; CIFAR-10 stays in [0, 1], utils.py:22-35, and its encoder is
    # another network, setup_er_cifar10.py: this preset is the MNIST recipe, the other datasets' are not reproduced)
    "input_range": "signed",
    # 30 epochs (train_ot.py:205, -epochs default), batch 100 (train_ot.py:236), shuffled (utils.py:20,
    # train_ot.py:219), torch.manual_seed(123) (train_ot.py:188); the whole training set (utils.py:12, 20).
    "epochs": 30, "batch_size": 100, "train_size": None, "seed": 123,
    # Adam with torch's default betas (0.9, 0.999) for all three (train_ot.py:23-25): encoder lr, critic 0.5 lr,
    # classifier 0.05 lr, lr = 1e-4 on MNIST (train_ot.py:238). The StepLR(30, 0.5) schedulers of train_ot.py:27-29
    # are never stepped in the loop, so the rates stay constant: no schedule here.
    "lr": 1e-4, "lr_critic": 5e-5, "lr_classifier": 5e-6, "beta1": 0.9,
    # LAMBDA (critic) = 1, LAMBDA0 (cross-entropy) = 1 (train_ot.py:211-212), LAMBDA1 (encoder vs critic) =
    # 0.0005 on MNIST (train_ot.py:239); prior N(0, sigma^2 I), sigma = 1 (train_ot.py:214); clip 0.01 (utils.py:104).
    "lam": 1.0, "lam_class": 1.0, "lam_encoder": 0.0005, "sigma": 1.0, "clip": 0.01,
}
# Cost on the project's shared 2-core Xeon, one torch thread (issue 20, a few steps each): OT-CLA 0.43 steps/s
# (30 epochs = 18,000 steps: ~12 CPU-hours); OT-CLA+Adv 0.037 steps/s (~135 CPU-hours: a GPU job,
# reports/reproduce-gpu.sh STAGE=trainings); Madry's Adv (CNN_PAPER) 0.9 steps of 50 per second (~31 CPU-hours).
# E-CLA: the repository's ECLA (setup_ot_mnist.py:115-155) is this encoder and classifier as one network; no
# script of the repository trains it, so `e-cla` runs the loop and settings above without the critic (ours).
# Minutes on a shared 2-core CPU (one thread): narrow, the first 10,000 training points, 4 epochs; the old quick
# optimisation (every rate 1e-3, beta1 0.5, WAE-GAN's [27]) and an encoder-vs-critic weight of 5 (ours): the
# encoder's critic gradient is added to its cross-entropy gradient before one Adam step (the authors' loop), and
# so short a run needs it that strong to pull the codes toward the prior (measured on tests/support.py's tiny
# setting: weight 1 leaves the codes as far from N(0, I) as E-CLA's, energy distance 4.3 vs 4.5; weight 5 gives
# 0.16 at 84.6% test accuracy, E-CLA 85.7%).
TRAIN_QUICK: dict[str, Any] = {**TRAIN_PAPER, "channels": [16, 32, 64], "first_bn": True, "hidden": [256],
                               "hidden_bn": False, "input_range": "unit", "epochs": 4, "train_size": 10000,
                               "seed": 0, "lr": 1e-3, "lr_critic": 5e-4, "lr_classifier": 1e-3, "beta1": 0.5,
                               "lam_encoder": 5.0}

# OT-CLA+Adv (train_ot.py:57-60, 87-146; setup_pgd.py:44-79, 114-133): L-inf PGD of k = 40 steps of a = 0.01,
# eps 0.3 in [0, 1] units (train_ot.py:232-234 halved: the inputs span [-1, 1]), random start (setup_pgd.py:28, 52-53),
# against the network's own predicted labels (train_ot.py:58, pred_batch_ot), in eval mode (setup_pgd.py:121, 126);
# each step trains on the clean and the PGD batch: cross-entropy (clean + adv) / 2, a critic and an encoder
# step on each (train_ot.py:118, 87-104, 139-146). `adv_delay`: adversarial training from that epoch on
# (train_ot.py:57, `-delay`; its default 200 (train_ot.py:210) never starts it in 30 epochs and the paper gives
# no value, so 0, from the first epoch, is ours).
# adv_eps < 0 means Supplement A's eps for the dataset (ADV_EPS); step = adv_step_ratio * eps / adv_steps.
ADV_PAPER: dict[str, Any] = {"adv_norm": "Linf", "adv_eps": -1.0, "adv_steps": 40, "adv_step_ratio": 4 / 3,
                             "adv_random_start": True, "adv_delay": 0}
# quick: 7 steps of 2.5 eps / 7 (Madry et al.'s CIFAR-10 step count, the harness's step rule)
ADV_QUICK: dict[str, Any] = {**ADV_PAPER, "adv_steps": 7, "adv_step_ratio": 2.5}

# "No Defense" / "Madry's Adv": BasicCNN (setup_ot_mnist.py:82-101: conv 5x5 20, max-pool 2, conv 5x5 50,
# max-pool 2, fc 500, fc 10) trained as Madry et al.'s MNIST challenge trains (mnist_challenge config.json:
# batch 50, 100,000 steps, seed ours; train.py: Adam 1e-4, the loss on the PGD batch alone; inputs in [0, 1]).
# 100,000 steps of 50 are 83.3 epochs of 60,000: 84 epochs (100,800 steps, the nearest whole number above).
CNN_PAPER: dict[str, Any] = {"arch": "basic-cnn", "channels": [20, 50], "hidden": [500], "input_range": "unit",
                             "epochs": 84, "batch_size": 50, "train_size": None, "seed": 0, "lr": 1e-4,
                             "beta1": 0.9}
# Madry: eps 0.3 (Supplement A), k = 40 steps of a = 0.01, random start (mnist_challenge config.json), labels.
CNN_ADV_PAPER: dict[str, Any] = {k: v for k, v in ADV_PAPER.items() if k != "adv_delay"}
# quick: OT-CLA's quick convolutions with a wide (256) ReLU layer in place of the code, Adam 1e-3, 4 epochs.
CNN_QUICK: dict[str, Any] = {**CNN_PAPER, "arch": "encoder", "channels": [16, 32, 64], "hidden": [256],
                             "epochs": 4, "batch_size": 100, "train_size": 10000, "lr": 1e-3, "beta1": 0.5}
CNN_ADV_QUICK: dict[str, Any] = {k: v for k, v in ADV_QUICK.items() if k != "adv_delay"}
CNN_WIDTH = 256  # the wide ReLU layer of arch "encoder" (ours)


def check_train(cfg: dict[str, Any], who: str) -> None:
    """One-line refusals of settings the OT-Classifier trainings cannot use, before any data or training."""
    def refuse(problem: str) -> None:
        raise OTBenchError(f"{who}: {problem}")

    if cfg["input_range"] not in INPUT_RANGES:
        refuse(f"unknown input_range '{cfg['input_range']}'; valid: {', '.join(INPUT_RANGES)}")
    if "arch" in cfg and cfg["arch"] not in CNN_ARCHS:
        refuse(f"unknown arch '{cfg['arch']}'; valid: {', '.join(CNN_ARCHS)}")
    for key in ("channels", "hidden"):
        v = cfg[key]
        if not (isinstance(v, list) and v and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                                   for c in v)):
            refuse(f"{key} must be a non-empty list of integers >= 1, got {v!r}")
    if cfg.get("arch") == "basic-cnn" and len(cfg["channels"]) != 2:
        refuse(f"arch 'basic-cnn' has two convolutions: channels must list 2 widths, got {cfg['channels']!r}")
    if not 0 <= cfg["beta1"] < 1:
        refuse(f"beta1 must be in [0, 1), got {cfg['beta1']!r}")
    for key in ("lam", "lam_class", "sigma", "clip"):
        if key in cfg and not cfg[key] > 0:  # `not >` also refuses NaN
            refuse(f"{key} must be > 0, got {cfg[key]!r}")
    if "lam_encoder" in cfg and not cfg["lam_encoder"] >= 0:
        refuse(f"lam_encoder must be >= 0 (0: the encoder ignores the critic), got {cfg['lam_encoder']!r}")
    if "adv_delay" in cfg and not (isinstance(cfg["adv_delay"], int) and 0 <= cfg["adv_delay"] < cfg["epochs"]):
        refuse(f"adv_delay must be an integer epoch in [0, epochs = {cfg['epochs']}) (from it on the training is "
               f"adversarial), got {cfg['adv_delay']!r}")


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
