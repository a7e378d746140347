"""`stl`: the Sparse Transformation Layer (Sun et al. 2019, "Adversarial defense by stratified convolutional
sparse coding"; papers/otad.txt V-C [35]): the input is projected onto a quasi-natural image space by
convolutional sparse coding over a dictionary learnt on training images, then classified by the standard FC
ResNet + H; BPDA through the identity (papers/otad.txt V-C).

The projection follows the authors' pipeline (SPORCO's): a Tikhonov low-pass split x = x_low + x_high
(`lowpass` weight, 16 pixels of symmetric padding), the convolutional basis pursuit
    z = argmin_z 1/2 ||x_high - sum_m d_m * z_m||^2 + lambda ||z||_1
and the reconstruction x_low + sum_m d_m * z_m, clipped to [0, 1]. The codes are solved here by FISTA (Beck &
Teboulle 2009; the authors use SPORCO's ADMM: the same minimiser), in torch, for a batch at once. The
dictionary is learnt by alternating minimisation on training images: codes by FISTA, then a projected
gradient step on the filters (each filter kept in the unit ball), as in convolutional dictionary learning.

Preset `paper`: the authors' released reconstruction settings (GitBoSun/AdvDefense_CSC, recons_data.py:
64 filters of 8 x 8, lambda 0.2 from their recommended 0.1-0.3, Tikhonov weight 5 with 16 pixels of
padding, 200 iterations: their ADMM's MaxMainIter, here FISTA's). The paper's MNIST basis is not available,
so the dictionary is learnt on 2,000 MNIST training images (100 alternating steps on batches of 64, 50 FISTA
iterations each: our settings). Preset `quick`: 16 filters, 20 iterations, 30 learning steps on 1,000 images.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from otbench.common.fc_training import fc_resnet_presets
from otbench.errors import OTBenchError
from otbench.registry import register_defense
from otbench.training import cached_model

from .median_filter import _symmetric_index
from .purification import PurifiedDefense, purifier_path

STL_PAPER: dict[str, Any] = {"stl_atoms": 64, "stl_size": 8, "stl_lambda": 0.2, "stl_lowpass": 5.0,
                             "stl_learn_images": 2000, "stl_learn_steps": 100, "stl_learn_batch": 64,
                             "stl_learn_iterations": 50}
STL_QUICK: dict[str, Any] = {**STL_PAPER, "stl_atoms": 16, "stl_learn_images": 1000, "stl_learn_steps": 30,
                             "stl_learn_iterations": 20}
PAD = 16  # SPORCO's tikhonov_filter padding (npd) in the authors' script


def tikhonov_lowpass(x: torch.Tensor, weight: float) -> torch.Tensor:
    """argmin_s 1/2 ||s - x||^2 + weight/2 (||grad_h s||^2 + ||grad_v s||^2), solved in the Fourier domain on
    x padded symmetrically by PAD pixels (SPORCO's util.tikhonov_filter)."""
    if weight == 0:
        return torch.zeros_like(x)
    h, w = x.shape[-2:]
    rows = _symmetric_index(h, PAD, PAD, x.device)
    cols = _symmetric_index(w, PAD, PAD, x.device)
    padded = x[..., rows, :][..., cols]
    ph, pw = padded.shape[-2:]
    fy = torch.fft.fftfreq(ph, device=x.device).view(-1, 1)
    fx = torch.fft.fftfreq(pw, device=x.device).view(1, -1)
    # |FFT of the difference filter [1, -1]|^2 = 2 - 2 cos(2 pi f) along each axis
    gain = (2 - 2 * torch.cos(2 * torch.pi * fy)) + (2 - 2 * torch.cos(2 * torch.pi * fx))
    low = torch.fft.ifft2(torch.fft.fft2(padded) / (1 + weight * gain)).real
    return low[..., PAD:PAD + h, PAD:PAD + w]


class ConvDictionary(nn.Module):
    """Filters d_m (C, M, k, k); synthesis sum_m d_m * z_m = conv2d(z, D) (valid) on codes of size
    (H+k-1, W+k-1). Both it and its adjoint are computed with FFTs on the code grid, where the valid
    correlation is a circular one cropped without wrap-around (as SPORCO works in the Fourier domain)."""

    def __init__(self, channels: int, atoms: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, atoms, size, size), requires_grad=False)

    def _grid(self, h: int, w: int) -> tuple[int, int]:
        k = self.weight.shape[-1]
        return h + k - 1, w + k - 1

    def synthesize(self, z: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.weight if weight is None else weight
        gh, gw = z.shape[-2:]
        k = weight.shape[-1]
        wf = torch.fft.rfft2(weight, s=(gh, gw))  # (C, M, gh, gw//2+1)
        out = torch.einsum("bmhw,cmhw->bchw", torch.fft.rfft2(z), wf.conj())
        return torch.fft.irfft2(out, s=(gh, gw))[..., :gh - k + 1, :gw - k + 1]

    def analyze(self, r: torch.Tensor) -> torch.Tensor:
        """The adjoint of synthesize (= conv_transpose2d(r, weight))."""
        gh, gw = self._grid(*r.shape[-2:])
        wf = torch.fft.rfft2(self.weight, s=(gh, gw))
        out = torch.einsum("bchw,cmhw->bmhw", torch.fft.rfft2(r, s=(gh, gw)), wf)
        return torch.fft.irfft2(out, s=(gh, gw))

    def code_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (len(x), self.weight.shape[1], *self._grid(*x.shape[-2:]))

    def lipschitz(self, image_shape: tuple[int, ...]) -> float:
        """An upper bound of ||D||^2 (FISTA's step is its inverse): the largest eigenvalue over frequencies of
        the circular operator, sum_m |d_m(w)|^2 per channel summed over channels; cropping only lowers it."""
        wf = torch.fft.rfft2(self.weight, s=self._grid(*image_shape[-2:]))
        gram = torch.einsum("cmhw,cnhw->hwmn", wf, wf.conj())  # (M x M) per frequency
        return float(torch.linalg.eigvalsh(gram).amax()) if self.weight.shape[0] > 1 else float(
            wf.abs().pow(2).sum((0, 1)).amax())


def fista(dictionary: ConvDictionary, x: torch.Tensor, lam: float, iterations: int, lipschitz: float) -> torch.Tensor:
    """Codes z minimising 1/2 ||x - D z||^2 + lam ||z||_1 (FISTA from z = 0)."""
    z = y = x.new_zeros(dictionary.code_shape(x))
    t = 1.0
    for _ in range(iterations):
        grad = dictionary.analyze(dictionary.synthesize(y) - x)
        step = y - grad / lipschitz
        z_next = step.sign() * (step.abs() - lam / lipschitz).clamp_min(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y = z_next + ((t - 1) / t_next) * (z_next - z)
        z, t = z_next, t_next
    return z


def _filter_lipschitz(z: torch.Tensor) -> float:
    """An upper bound of ||W -> D_W z||^2: per frequency, the largest eigenvalue of sum_b z_b z_b^H (M x M)."""
    zf = torch.fft.rfft2(z)
    gram = torch.einsum("bmhw,bnhw->hwmn", zf, zf.conj())
    return float(torch.linalg.eigvalsh(gram).amax())


def learn_dictionary(x: torch.Tensor, cfg: dict[str, Any], device: torch.device) -> ConvDictionary:
    """Alternating minimisation: FISTA codes of a batch, then one projected gradient step on the filters."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    k, m = cfg["stl_size"], cfg["stl_atoms"]
    high = (x - tikhonov_lowpass(x, cfg["stl_lowpass"])).to(device)
    dictionary = ConvDictionary(x.shape[1], m, k).to(device)
    # initial filters: random k x k patches of the high-pass training images, unit norm
    pick = torch.randint(len(high), (m,), generator=gen)
    top = torch.randint(x.shape[-2] - k + 1, (m,), generator=gen)
    left = torch.randint(x.shape[-1] - k + 1, (m,), generator=gen)
    patches = torch.stack([high[i, :, r:r + k, c:c + k] for i, r, c in zip(pick, top, left)], dim=1)
    norms = patches.transpose(0, 1).flatten(1).norm(dim=1).clamp_min(1e-6)
    dictionary.weight.data = patches / norms.view(1, -1, 1, 1)
    image_shape = tuple(x.shape[1:])
    for _ in range(cfg["stl_learn_steps"]):
        batch = high[torch.randint(len(high), (cfg["stl_learn_batch"],), generator=gen).to(high.device)]
        z = fista(dictionary, batch, cfg["stl_lambda"], cfg["stl_learn_iterations"], dictionary.lipschitz(image_shape))
        w = dictionary.weight.detach().clone().requires_grad_(True)
        loss = 0.5 * (dictionary.synthesize(z, w) - batch).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, w)
        dictionary.weight.data = _unit_ball(w.detach() - grad / _filter_lipschitz(z))
    return dictionary


def _unit_ball(weight: torch.Tensor) -> torch.Tensor:
    """Each filter d_m (over all channels) projected onto the unit ball."""
    norms = weight.transpose(0, 1).flatten(1).norm(dim=1).clamp_min(1.0)
    return weight / norms.view(1, -1, 1, 1)


@register_defense("stl")
class SparseTransformationLayer(PurifiedDefense):
    description = "STL: convolutional sparse coding purification (Sun et al. 2019), then the standard FC ResNet + H"
    differentiable = False  # an iterative solve; the paper attacks it through BPDA
    surrogate_description = "identity for the sparse projection (BPDA), then the classifier"
    presets = fc_resnet_presets({"iterations": 200}, {"iterations": 20}, STL_PAPER, STL_QUICK)

    def __init__(self, data, config, device) -> None:
        cfg = config["train"]
        if cfg["stl_lambda"] <= 0 or config["defense"]["iterations"] < 1 or cfg["stl_atoms"] < 1:
            raise OTBenchError("stl: stl_lambda must be > 0, iterations and stl_atoms >= 1")
        super().__init__(data, config, device)
        settings = {k: v for k, v in cfg.items() if k.startswith("stl_")} | {"seed": cfg["seed"]}
        x = data.x_train[:cfg["stl_learn_images"]]
        self.dictionary, record = cached_model(
            purifier_path("stl-dictionary", data, settings),
            ConvDictionary(x.shape[1], cfg["stl_atoms"], cfg["stl_size"]), settings, device,
            train=lambda: learn_dictionary(x, cfg, device),
            evaluate=lambda d: {"clean_relative_error": round(self._relative_error(d, data.x_test[:200]), 4)})
        self.train_record["stl"] = record
        self.step = self.dictionary.lipschitz(tuple(x.shape[1:]))

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(low-pass part, sparse codes of the high-pass part) of x."""
        cfg = self.config["train"]
        low = tikhonov_lowpass(x, cfg["stl_lowpass"])
        z = fista(self.dictionary, x - low, cfg["stl_lambda"], self.config["defense"]["iterations"], self.step)
        return low, z

    @torch.no_grad()
    def purify(self, x: torch.Tensor) -> torch.Tensor:
        low, z = self.codes(x)
        return (low + self.dictionary.synthesize(z)).clamp(0, 1)

    def _relative_error(self, dictionary: ConvDictionary, x: torch.Tensor) -> float:
        self.dictionary, self.step = dictionary, dictionary.lipschitz(tuple(x.shape[1:]))
        x = x.to(self.device)
        return float((self.purify(x) - x).norm() / x.norm())
