"""The FC ResNet's learning-rate schedules (train setting `schedule`, defenses/otad/model.py; issue 15)."""
import pytest
import torch
import torch.nn.functional as F
from support import TINY_TRAIN

from otbench.common import fc_training as model
from otbench.common.fc_resnet import FCResNet
from otbench.common.fc_training import TRAIN_PAPER, TRAIN_QUICK, train_fc_resnet
from otbench.defense import create_defense
from otbench.errors import OTBenchError
from otbench.training import minibatch_training, steps_per_epoch

CPU = torch.device("cpu")


def lr_and_momentum_per_step(data, cfg, monkeypatch) -> list[tuple[float, float]]:
    """(lr, momentum) that SGD used at each step of train_fc_resnet: read inside step(), so it is what moved the
    weights, not what a scheduler reports."""
    seen, step = [], torch.optim.SGD.step

    def recording(self, *args, **kwargs):
        seen.append((self.param_groups[0]["lr"], self.param_groups[0]["momentum"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    train_fc_resnet(data, cfg, CPU, progress=False)
    return seen


def test_one_cycle_rises_to_the_peak_lr_then_falls(mnist, monkeypatch):
    data = mnist.take_train(640)  # 10 steps of 64 per epoch, 30 steps
    cfg = {**TINY_TRAIN, "blocks": 1, "epochs": 3, "train_size": 640, "schedule": "one-cycle"}
    seen = lr_and_momentum_per_step(data, cfg, monkeypatch)
    lrs, lr = [s[0] for s in seen], cfg["lr"]
    assert len(lrs) == 30
    peak = lrs.index(max(lrs))
    assert peak == 8 and lrs[peak] == pytest.approx(lr)  # pct_start 0.3: the peak ends the first 30% of steps
    assert lrs[0] == pytest.approx(lr / 25) and lrs[-1] == pytest.approx(lr / 25 / 1e4)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # warm-up rises strictly...
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # ...and the annealing falls strictly
    assert {s[1] for s in seen} == {0.9}  # momentum stays the paper's 0.9 (cycle_momentum=False)


def test_cosine_starts_at_the_lr_and_falls(mnist, monkeypatch):
    data = mnist.take_train(640)
    cfg = {**TINY_TRAIN, "blocks": 1, "epochs": 2, "train_size": 640, "schedule": "cosine"}
    lrs = [s[0] for s in lr_and_momentum_per_step(data, cfg, monkeypatch)]
    assert len(lrs) == 20 and lrs[0] == cfg["lr"] and all(a > b for a, b in zip(lrs, lrs[1:]))


def test_presets_schedules():
    assert TRAIN_PAPER["schedule"] == "one-cycle" and TRAIN_PAPER["epochs"] == 8 and TRAIN_PAPER["lr"] == 0.05
    # the quick preset trains as it did before issue 15 (its cached models and stored results stay valid)
    assert TRAIN_QUICK == {"blocks": 5, "residual": True, "epochs": 2, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
                           "weight_decay": 5e-4, "alpha": 0.0, "train_size": 10000, "seed": 0, "schedule": "cosine"}


def test_unknown_schedule_is_a_one_line_error_before_any_training(mnist, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the schedule")

    monkeypatch.setattr(model, "minibatch_training", no_training)
    with pytest.raises(OTBenchError) as err:
        create_defense("standard", mnist, "quick", {"train": {**TINY_TRAIN, "schedule": "linear"}})
    assert str(err.value) == "unknown schedule 'linear'; valid: cosine, one-cycle"


def test_cosine_is_bitwise_the_training_before_the_schedule_setting(mnist):
    """`cosine` must give exactly the weights of the loop before issue 15 (copied below from commit 2ac7081), so
    the quick preset's checkpoints and results mean what they meant."""
    data = mnist.take_train(1000)
    cfg = {**TRAIN_QUICK, "blocks": 2, "epochs": 2, "batch_size": 64, "train_size": 1000, "alpha": 0.1}
    new = train_fc_resnet(data, cfg, CPU, progress=False)

    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    net = FCResNet(data.input_dim, data.num_classes, cfg["blocks"], cfg["residual"])
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    total = cfg["epochs"] * steps_per_epoch(len(data.x_train), cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    net.train()

    def loss_of(xb, yb):
        logits, energy = net.forward_with_energy(xb)
        return F.cross_entropy(logits, yb) + cfg["alpha"] * energy.mean()

    minibatch_training(data.x_train, data.y_train, cfg["batch_size"], cfg["epochs"], gen, opt, sched, loss_of, CPU,
                       "old", False)
    old, now = net.state_dict(), new.state_dict()
    assert old.keys() == now.keys()
    assert all(torch.equal(old[k], now[k]) for k in old)
