"""The toolkits' own interfaces: torchattacks, ART estimators and RobustBench's benchmark() on otbench defenses."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torchattacks
from art.attacks.evasion import ProjectedGradientDescent, SquareAttack
from art.exceptions import EstimatorError
from support import CIFAR_FILES, accuracy, write_cifar10
from torch import nn
from torchvision import datasets

from otbench.data import load_dataset
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.interfaces import robustbench_benchmark, to_art, torch_module
from otbench.interfaces.art import DefenseBlackBox


class TinyCNN(Defense):
    """Conv + BatchNorm + linear; the BatchNorm shows whether a toolkit flipped the net to train mode."""

    name = "tiny-cnn"

    def __init__(self, data, net):
        super().__init__(data, {}, torch.device("cpu"))
        self.net = net

    @classmethod
    def trained(cls, data):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                            nn.Linear(8 * 16 * 16, 10))
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(net(data.x_train), data.y_train).backward()
            opt.step()
        return cls(data, net.eval())

    def logits(self, x):
        return self.net(x.to(self.device))


class OpaqueCNN(TinyCNN):
    differentiable = False


@contextmanager
def single_thread():
    """Attacks make many tiny forward/backward passes; on the shared 2-core test machine two torch threads
    spin-wait against other jobs (AutoAttack here: 16 s on two threads, 0.3 s on one)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar-root")
    write_cifar10(root)
    return root


@pytest.fixture(scope="module")
def tiny_cnn(cifar_root):
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        data = load_dataset("cifar10", cifar_root)
    with single_thread():
        return TinyCNN.trained(data)


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt by torchvision to fetch CIFAR-10 fails the test instead of going to the network."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(datasets.cifar, "download_and_extract_archive", refuse)


# -- ART ---------------------------------------------------------------------------------------------
def test_art_pgd_through_to_art_lowers_accuracy_and_leaves_batchnorm_alone(standard, test_batch):
    x, y = test_batch
    est = to_art(standard)
    before = standard.logits(x[:8]).detach().clone()
    est.loss_gradient(x[:8].numpy(), np.eye(10)[y[:8]], training_mode=True)  # ART flips train mode here
    assert not standard.net.training and torch.equal(standard.logits(x[:8]).detach(), before)
    assert np.allclose(est.predict(x.numpy()), standard.logits(x).detach().numpy(), atol=1e-5)
    pgd = ProjectedGradientDescent(est, norm=np.inf, eps=0.3, eps_step=0.05, max_iter=10, verbose=False)
    adv = pgd.generate(x.numpy(), y=y.numpy())
    assert np.abs(adv - x.numpy()).max() <= 0.3 + 1e-6
    assert accuracy(standard, adv, y) < accuracy(standard, x, y) - 0.3


def test_art_square_attack_on_a_non_differentiable_defense(knn, test_batch):
    x, y = (t[:8] for t in test_batch)
    est = to_art(knn)
    assert isinstance(est, DefenseBlackBox)
    scores = est.predict(x.numpy())
    assert np.array_equal(scores.argmax(1), knn.predict(x).numpy()) and len(np.unique(scores)) > 20  # not labels
    np.random.seed(0)
    attack = SquareAttack(est, norm=np.inf, eps=0.3, max_iter=60, nb_restarts=1, verbose=False)
    adv = attack.generate(x.numpy(), y=np.eye(10)[y])
    assert np.abs(adv - x.numpy()).max() <= 0.3 + 1e-6
    assert accuracy(knn, adv, y) < accuracy(knn, x, y)


def test_art_gradient_attacks_refuse_a_non_differentiable_defense(knn, test_batch):
    est = to_art(knn)
    with pytest.raises(EstimatorError, match="LossGradientsMixin.*DefenseBlackBox"):
        ProjectedGradientDescent(est, eps=0.3)
    with pytest.raises(OTBenchError, match=r"not differentiable.*surrogate=True.*SquareAttack"):
        est.loss_gradient(test_batch[0][:2].numpy(), np.eye(10)[test_batch[1][:2]])


def test_art_pgd_on_the_bpda_surrogate_lowers_accuracy_of_a_non_differentiable_defense(knn, test_batch):
    x, y = test_batch
    est = to_art(knn, surrogate=True)
    assert np.allclose(est.predict(x.numpy()), knn.logits(x).detach().numpy(), atol=1e-5)  # forward: real
    adv = ProjectedGradientDescent(est, norm=2, eps=3.0, eps_step=0.5, max_iter=10, verbose=False).generate(
        x.numpy(), y=y.numpy())
    assert accuracy(knn, adv, y) < accuracy(knn, x, y)


# -- torchattacks ------------------------------------------------------------------------------------
def test_torchattacks_pgd_on_torch_module_lowers_accuracy(standard, test_batch):
    x, y = test_batch
    module = torch_module(standard)
    assert isinstance(module, nn.Module)
    adv = torchattacks.PGD(module, eps=0.3, alpha=0.05, steps=10, random_start=False)(x, y)
    assert (adv - x).abs().max() <= 0.3 + 1e-6
    assert accuracy(standard, adv, y) < accuracy(standard, x, y) - 0.3


# -- RobustBench -------------------------------------------------------------------------------------
def test_robustbench_benchmark_runs_on_local_cifar10(tiny_cnn, cifar_root, no_downloads):
    x, y = tiny_cnn.data.x_test[:8], tiny_cnn.data.y_test[:8]
    before = tiny_cnn.logits(x).detach().clone()
    res = robustbench_benchmark(tiny_cnn, n_examples=8, threat_model="Linf", eps=8 / 255, data_dir=cifar_root,
                                batch_size=8)
    assert "otbench cifar10 loader" in res.data
    assert accuracy(tiny_cnn, x, y) == 0.75  # right on the 6 correctly labelled images
    assert res.clean_accuracy == 0.75  # so robustbench saw these 8 images
    assert res.robust_accuracy < res.clean_accuracy  # AutoAttack flipped some
    assert not tiny_cnn.net.training and torch.equal(tiny_cnn.logits(x).detach(), before)


def test_local_cifar10_feed_gives_what_robustbenchs_own_loader_gives(cifar_root, monkeypatch, no_downloads):
    """With torchvision's md5 list pointed at the made files, robustbench's own load_cifar10 reads them
    (and the official-files path of robustbench_benchmark would be taken): the two feeds must agree."""
    from torchvision.datasets.utils import calculate_md5

    from otbench.compat.robustbench import load_robustbench
    from otbench.data.cifar import is_official
    from otbench.interfaces.robustbench import _load_local_cifar10

    load_robustbench()
    import robustbench.data as rb_data

    folder = cifar_root / "cifar-10-batches-py"
    md5 = {f: calculate_md5(str(folder / f)) for f in [*CIFAR_FILES, "batches.meta"]}
    cls = datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f, md5[f]] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    assert is_official(cifar_root)
    theirs = rb_data.load_cifar10(12, str(cifar_root), rb_data.PREPROCESSINGS[None])
    ours = _load_local_cifar10(12, str(cifar_root), rb_data.PREPROCESSINGS[None])
    assert torch.equal(theirs[0], ours[0]) and torch.equal(theirs[1], ours[1])


def test_robustbench_refuses_what_it_cannot_benchmark(standard, tiny_cnn):
    with pytest.raises(OTBenchError, match="cifar10, cifar100 and imagenet only.*mnist"):
        robustbench_benchmark(standard, n_examples=8)
    with pytest.raises(OTBenchError, match="not differentiable.*surrogate=True"):
        robustbench_benchmark(OpaqueCNN(tiny_cnn.data, tiny_cnn.net), n_examples=8)
