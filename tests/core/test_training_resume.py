"""A killed training's saved epochs (training.py): resumed when they are this training's, ignored when damaged,
and a damaged file never leaves the fresh run changed (the kill itself: tests/core/test_kill.py)."""
from __future__ import annotations

import pickle

import torch
from support import needs_mnist
from torch import nn

from otbench.training import _RESUME, minibatch_training

EPOCHS = 3


def train(mnist, partial, epochs=EPOCHS) -> nn.Module:
    """A linear model on 512 real MNIST images with momentum, a one-cycle schedule and a seeded shuffle."""
    x, y = mnist.x_train[:512].flatten(1), mnist.y_train[:512]
    torch.manual_seed(0)
    net = nn.Linear(784, 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=epochs * 8)
    gen = torch.Generator().manual_seed(0)
    token = _RESUME.set(partial)
    try:
        minibatch_training(x, y, 64, epochs, gen, opt, sched, lambda xb, yb: nn.functional.cross_entropy(net(xb), yb),
                           torch.device("cpu"), "test-linear", progress=False, net=net)
    finally:
        _RESUME.reset(token)
    return net


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@needs_mnist
def test_saved_epochs_resume_to_the_unbroken_weights_and_damaged_ones_change_nothing(mnist, tmp_path, capsys):
    unbroken = train(mnist, tmp_path / "a.partial")
    saved = torch.load(tmp_path / "a.partial", weights_only=True)
    assert saved["epoch"] == EPOCHS - 1  # the last finished epoch before the final one

    # this training's own epochs (a run killed in its last epoch): the rerun starts from them and ends bitwise
    # where the unbroken run did
    assert same(train(mnist, tmp_path / "a.partial"), unbroken)
    assert "resuming test-linear at epoch 2" in capsys.readouterr().err

    # the network loads but the optimiser does not: the run must start again from its untouched fresh state,
    # not from the half-loaded epoch's weights
    half = tmp_path / "c.partial"
    torch.save({**saved, "opt": {"state": {}, "param_groups": []}}, half)
    assert same(train(mnist, half), unbroken)

    # not tensors, numbers and strings: never unpickled, the run starts again
    foreign = tmp_path / "d.partial"
    foreign.write_bytes(pickle.dumps({**saved, "epoch": Foreign()}))
    assert same(train(mnist, foreign), unbroken)
    assert "unpickled" not in capsys.readouterr().out

    # another training's file (another description): ignored
    other = tmp_path / "e.partial"
    torch.save({**saved, "desc": "another model"}, other)
    assert same(train(mnist, other), unbroken)


class Foreign:
    def __reduce__(self):
        return (print, ("unpickled",))

