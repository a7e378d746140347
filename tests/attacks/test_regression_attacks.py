"""regression-l2 on small regressors: it raises the error more than noise, and refuses what it cannot attack."""
from __future__ import annotations

import csv

import pytest
import torch
from support import DATA
from torch import nn

from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.guard import check_threat_model
from otbench.registry import ATTACKS


def noise_like(delta, seed=0):
    """Gaussian directions with the same per-sample L2 norms as `delta`."""
    noise = torch.randn(delta.shape, generator=torch.Generator().manual_seed(seed))
    scale = delta.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
    return noise * scale.view(-1, *([1] * (delta.dim() - 1)))


class Bare(Defense):
    """A defense built around given modules instead of a preset and a training run."""

    name = "test-bare"

    def __init__(self) -> None:
        super().__init__(None, {}, torch.device("cpu"))


def red_wine():
    """UCI red wine quality: 11 features min-max scaled to [0, 1], target quality (3..8)."""
    path = DATA / "winequality" / "winequality-red.csv"
    if not path.exists():
        pytest.skip(f"wine quality data not found at {path}")
    with open(path) as f:
        rows = [[float(v) for v in row] for row in list(csv.reader(f, delimiter=";"))[1:]]
    data = torch.tensor(rows)
    x, y = data[:, :11], data[:, 11]
    x = (x - x.min(0).values) / (x.max(0).values - x.min(0).values)
    return x, y


class Regressor(Bare):
    task = "regression"
    surrogate_description = None

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RoundedRegressor(Regressor):
    """Predictions rounded to half points: piecewise constant, so only its surrogate has gradients."""

    differentiable = False
    surrogate_description = "the MLP before rounding"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self.net(x) * 2).round() / 2

    def surrogate(self) -> nn.Module:
        return self.net


@pytest.fixture(scope="module")
def wine():
    x, y = red_wine()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(11, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(300):  # full batch on the first 1200 rows: about a second
        opt.zero_grad()
        nn.functional.mse_loss(net(x[:1200]).squeeze(1), y[:1200]).backward()
        opt.step()
    return net.eval(), x[1200:1300], y[1200:1300]


def mse(defense, x, y):
    with torch.no_grad():
        return (defense.logits(x).reshape(len(x), -1) - y.reshape(len(x), -1)).pow(2).mean().item()


@pytest.mark.parametrize("cls,norm,eps,label_shape", [
    (Regressor, "L2", 0.3, (-1,)), (Regressor, "Linf", 0.1, (-1, 1)), (RoundedRegressor, "L2", 0.3, (-1,))])
def test_regression_l2_raises_the_error_more_than_noise(wine, cls, norm, eps, label_shape):
    net, x, y = wine
    defense = cls(net)
    assert mse(defense, x, y) < 0.85 * y.var().item()  # the MLP beats the mean (measured 0.57 vs 0.74)
    out = ATTACKS.get("regression-l2")(defense, eps, norm=norm, steps=20)(x, y.reshape(label_shape), seed=0)
    norms = check_threat_model(x, out.adv, norm, eps)
    assert norms.max() > 0.9 * eps
    noisy = (x + noise_like(out.adv - x)).clamp(0, 1)
    # measured: clean 0.57, noise 0.70, attack 2.4 to 3.0
    assert mse(defense, out.adv, y) > 2 * mse(defense, noisy, y)


def test_regression_l2_refuses_what_it_cannot_attack(standard):
    with pytest.raises(OTBenchError, match="applies to regression defenses, but 'standard' is a classification"):
        ATTACKS.get("regression-l2")(standard, 0.3)

    class Opaque(RoundedRegressor):
        surrogate_description = None

    with pytest.raises(OTBenchError, match="declares no surrogate"):
        ATTACKS.get("regression-l2").check_capabilities(Opaque)
