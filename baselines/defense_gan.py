"""`defense-gan`: Defense-GAN (Samangouei et al. 2018): project the input on the range of a generator, classify
the projection.

A WGAN-GP (Gulrajani et al. 2017) is trained on the training images; at inference, for each input x,
gradient descent on the latent code minimises ||G(z) - x||^2 (the pixel mean) from R random starts
z ~ N(0, I) for L steps each, and the best G(z*) goes to a classifier trained on clean data (the small CNN of
baselines/mnist_cnn.py). Original settings (Samangouei et al. 2018, Sec. 4): L = 200, R = 10, step size 10
on the pixel-mean error; SGD momentum 0.7 is ours. GAN: the WGAN-GP MNIST model and recipe
(Gulrajani et al.'s gan_mnist.py, which Defense-GAN's MNIST GAN follows): latent 128, DIM 64, transposed-conv
generator with a sigmoid output, conv critic without normalisation, gradient penalty lambda 10, 5 critic
steps per generator step, Adam 1e-4 with betas (0.5, 0.9), batch 50, 200,000 generator steps (preset paper;
GPU hours). Preset `quick` (ours, CPU minutes): an MLP generator and critic (hidden 256/512, ~10x cheaper per
step than the conv pair on CPU), 1,000 generator steps on 10,000 images; L = 10, R = 2.

The projection (gradient descent inside the forward pass) is not differentiated: the defense is declared
non-differentiable, and its BPDA surrogate treats the projection as the identity in the backward pass
(Athalye et al. 2018, Sec. 4.1 and 5.4.2): forward G(z*(x)) -> classifier, backward the classifier's
gradient at G(z*(x)). Random restarts make it randomized.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from otbench.data import Dataset
from otbench.defense import Defense
from otbench.errors import OTBenchError
from otbench.registry import register_defense
from otbench.training import cached_model, checkpoint_path

from .mnist_cnn import CNN_PAPER, CNN_QUICK, load_or_train_cnn

GAN_ARCHS = ("conv", "mlp")
GAN_PAPER: dict[str, Any] = {"gan_arch": "conv", "latent_dim": 128, "gan_dim": 64, "gan_steps": 200000,
                             "gan_batch_size": 50,
                             "critic_steps": 5, "gp_lambda": 10.0, "gan_lr": 1e-4, "gan_train_size": None,
                             "gan_seed": 0}
GAN_QUICK: dict[str, Any] = {**GAN_PAPER, "gan_arch": "mlp", "gan_dim": 256, "gan_steps": 1000,
                             "gan_train_size": 10000}
GAN_KEYS = tuple(GAN_PAPER)
REC_PAPER: dict[str, Any] = {"rec_steps": 200, "restarts": 10, "rec_lr": 10.0, "rec_momentum": 0.7}
REC_QUICK: dict[str, Any] = {**REC_PAPER, "rec_steps": 10, "restarts": 2}


class Generator(nn.Module):
    """WGAN-GP's MNIST generator ("conv": fc -> 4x4 -> 8x8 cropped to 7x7 -> 14x14 -> 28x28) or a 3-layer
    MLP ("mlp", ours: ~10x cheaper on CPU); sigmoid output in [0, 1]."""

    def __init__(self, latent_dim: int, dim: int, arch: str = "conv") -> None:
        super().__init__()
        self.dim, self.arch = dim, arch
        if arch == "conv":
            self.fc = nn.Sequential(nn.Linear(latent_dim, 4 * 4 * 4 * dim), nn.ReLU())
            self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * dim, 2 * dim, 5, 2, 2, output_padding=1), nn.ReLU())
            self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * dim, dim, 5, 2, 2, output_padding=1), nn.ReLU())
            self.up3 = nn.ConvTranspose2d(dim, 1, 5, 2, 2, output_padding=1)
        else:
            self.mlp = nn.Sequential(nn.Linear(latent_dim, dim), nn.ReLU(), nn.Linear(dim, 2 * dim), nn.ReLU(),
                                     nn.Linear(2 * dim, 28 * 28))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.arch != "conv":
            return torch.sigmoid(self.mlp(z)).view(-1, 1, 28, 28)
        h = self.up1(self.fc(z).view(-1, 4 * self.dim, 4, 4))[:, :, :7, :7]
        return torch.sigmoid(self.up3(self.up2(h)))


class Critic(nn.Module):
    """WGAN-GP's MNIST critic ("conv": three stride-2 convs, leaky ReLU) or an MLP ("mlp"); no normalisation,
    as the gradient penalty is per input."""

    def __init__(self, dim: int, arch: str = "conv") -> None:
        super().__init__()
        if arch == "conv":
            self.net = nn.Sequential(
                nn.Conv2d(1, dim, 5, 2, 2), nn.LeakyReLU(0.2), nn.Conv2d(dim, 2 * dim, 5, 2, 2), nn.LeakyReLU(0.2),
                nn.Conv2d(2 * dim, 4 * dim, 5, 2, 2), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 4 * 4 * dim, 1))
        else:
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2 * dim), nn.LeakyReLU(0.2),
                                     nn.Linear(2 * dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def interpolates(real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random points on the segments between real and fake samples, where the penalty applies."""
    t = torch.rand(len(real), 1, 1, 1, generator=gen).to(real.device)
    return (t * real + (1 - t) * fake).detach()


def critic_grad_norm(critic: Critic, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """||grad_x D(x)||_2 per sample."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=create_graph)
    return g.flatten(1).norm(dim=1)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     gen: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's two-sided penalty E (||grad D(x_hat)|| - 1)^2 on interpolates x_hat."""
    return (critic_grad_norm(critic, interpolates(real, fake, gen), create_graph=True) - 1).pow(2).mean()


def train_wgan_gp(data: Dataset, cfg: dict[str, Any], device: torch.device) -> tuple[Generator, Critic]:
    """Gulrajani et al.'s Algorithm 1: critic steps on -D(real) + D(fake) + lambda GP, then -D(G(z))."""
    gen = torch.Generator().manual_seed(cfg["gan_seed"])
    torch.manual_seed(cfg["gan_seed"])
    g = Generator(cfg["latent_dim"], cfg["gan_dim"], cfg["gan_arch"]).to(device)
    d = Critic(cfg["gan_dim"], cfg["gan_arch"]).to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg["gan_lr"], betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg["gan_lr"], betas=(0.5, 0.9))
    x, b = data.x_train, cfg["gan_batch_size"]

    def noise() -> torch.Tensor:
        return torch.randn(b, cfg["latent_dim"], generator=gen).to(device)

    for _ in range(cfg["gan_steps"]):
        for _ in range(cfg["critic_steps"]):
            real = x[torch.randint(len(x), (b,), generator=gen)].to(device)
            with torch.no_grad():
                fake = g(noise())
            loss_d = d(fake).mean() - d(real).mean() + cfg["gp_lambda"] * gradient_penalty(d, real, fake, gen)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        loss_g = -d(g(noise())).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return g.eval(), d.eval()


class _GAN(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.generator = Generator(cfg["latent_dim"], cfg["gan_dim"], cfg["gan_arch"])
        self.critic = Critic(cfg["gan_dim"], cfg["gan_arch"])


def load_or_train_gan(data: Dataset, cfg: dict[str, Any], device: torch.device) -> tuple[_GAN, dict[str, Any]]:
    """Generator and critic for the GAN settings of `cfg`, cached by their hash."""
    cfg = {k: cfg[k] for k in GAN_KEYS}
    if cfg["gan_arch"] not in GAN_ARCHS:
        raise OTBenchError(f"defense-gan: unknown gan_arch '{cfg['gan_arch']}'; valid: {', '.join(GAN_ARCHS)}")
    data = data.take_train(cfg["gan_train_size"])
    path = checkpoint_path("wgan-gp", data.name, train=cfg)

    def train() -> _GAN:
        pair = _GAN(cfg)
        pair.generator, pair.critic = train_wgan_gp(data, cfg, device)
        return pair

    def evaluate(pair: _GAN) -> dict[str, Any]:
        with torch.no_grad():
            fake = pair.generator(torch.randn(500, cfg["latent_dim"], generator=torch.Generator().manual_seed(1)
                                              ).to(device))
            real = data.x_test[:500].to(device)
            # how near the generated images come to real ones: the critic's Wasserstein estimate
            return {"critic_gap": float(pair.critic(real).mean() - pair.critic(fake).mean())}

    return cached_model(path, _GAN(cfg), cfg, device, train, evaluate)


def reconstruct(generator: Generator, x: torch.Tensor, steps: int, restarts: int, lr: float, momentum: float,
                latent_dim: int) -> torch.Tensor:
    """G(z*) with z* the best of `restarts` gradient-descent runs on the pixel-mean ||G(z) - x||^2; no graph."""
    n = len(x)
    target = x.detach().repeat(restarts, *([1] * (x.dim() - 1)))
    with torch.enable_grad():
        z = torch.randn(restarts * n, latent_dim, device=x.device).requires_grad_(True)
        opt = torch.optim.SGD([z], lr=lr, momentum=momentum)
        for _ in range(steps):
            loss = (generator(z) - target).pow(2).flatten(1).mean(1).sum()
            (z.grad,) = torch.autograd.grad(loss, z)
            opt.step()
    with torch.no_grad():
        rec = generator(z)
        err = (rec - target).pow(2).flatten(1).mean(1).view(restarts, n)
        best = err.argmin(0)
        return rec.view(restarts, n, *x.shape[1:])[best, torch.arange(n, device=x.device)]


class IdentityBPDA(nn.Module):
    """Forward: the real defense (projection, then classifier). Backward: the projection as the identity,
    i.e. the classifier's gradient at the projection (Athalye et al. 2018's BPDA for Defense-GAN). Its forward
    already is the defense's output, which DefenseGAN declares (`surrogate_outputs_defense`)."""

    def __init__(self, defense: "DefenseGAN") -> None:
        super().__init__()
        self.defense = defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.defense.device)
        rec = self.defense.project(x)
        return self.defense.classifier(x + (rec - x).detach())


@register_defense("defense-gan")
class DefenseGAN(Defense):
    description = ("Defense-GAN (Samangouei et al. 2018): project on a WGAN-GP generator's range by latent gradient "
                   "descent with random restarts, classify the projection")
    differentiable = False  # the projection is an inner optimisation: differentiated only through BPDA
    randomized = True  # random restarts
    surrogate_description = "the projection as the identity: the classifier's gradient at G(z*) (Athalye et al.)"
    surrogate_outputs_defense = True
    presets = {"paper": {"train": {**CNN_PAPER, **GAN_PAPER}, "defense": REC_PAPER},
               "quick": {"train": {**CNN_QUICK, **GAN_QUICK}, "defense": REC_QUICK}}

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        rec = config["defense"]
        if rec["rec_steps"] < 0 or rec["restarts"] < 1:
            raise OTBenchError(f"defense-gan: rec_steps must be >= 0 and restarts >= 1, got {rec['rec_steps']!r} "
                               f"and {rec['restarts']!r}")

    def __init__(self, data, config, device) -> None:
        super().__init__(data, config, device)
        if data.input_shape != (1, 28, 28):
            raise OTBenchError(f"defense-gan: the WGAN-GP MNIST generator makes 1x28x28 images; dataset "
                               f"'{data.name}' has {data.input_shape}; valid: mnist, fashion-mnist")
        cfg = config["train"]
        self.classifier, cnn_record = load_or_train_cnn(data, cfg, device)
        gan, gan_record = load_or_train_gan(data, cfg, device)
        self.generator, self.critic = gan.generator, gan.critic
        for net in (self.classifier, self.generator, self.critic):
            net.requires_grad_(False)  # only inputs and latent codes are ever differentiated
        # one flat record, as the report reads it: the classifier's clean test accuracy, both training times
        self.train_record = {"test_accuracy": cnn_record["test_accuracy"], "device": cnn_record["device"],
                             "train_seconds": round(cnn_record["train_seconds"] + gan_record["train_seconds"], 1),
                             "gan_critic_gap": gan_record["critic_gap"]}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.config["defense"]
        return reconstruct(self.generator, x.to(self.device), rec["rec_steps"], rec["restarts"], rec["rec_lr"],
                           rec["rec_momentum"], self.config["train"]["latent_dim"])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classifier(self.project(x))

    def surrogate(self) -> nn.Module:
        return IdentityBPDA(self)

    def undefended(self) -> nn.Module:
        """The classifier alone, without the projection: what otbench's `undefended-not-broken` check attacks."""
        return self.classifier
