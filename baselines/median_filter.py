"""`median-filter`: a median filter on the input (image pre-processing purification, papers/otad.txt V-C [34]),
then the standard FC ResNet + H; BPDA through the identity.

The filter is ART's `SpatialSmoothing` (scipy's `median_filter`, mode "reflect") in torch, for batches on any
device: the window of size s covers offsets -(s // 2) .. s - 1 - s // 2 around each pixel, borders are
mirrored with the edge pixel repeated (d c b a | a b c d), and for an even window the upper of the two middle
values is taken. tests/test_baselines_a.py checks it against ART on real MNIST.

Window: Xu et al. 2018 (Feature Squeezing, the median-smoothing defense usually cited for MNIST) use a 2x2
median on MNIST; the OTAD paper gives no window, so preset `paper` follows Xu et al. ART's default is 3
(`--set defense.window=3`).
"""
from __future__ import annotations

from typing import Any

import torch

from otbench.common.fc_training import fc_resnet_presets
from otbench.errors import OTBenchError
from otbench.registry import register_defense

from .purification import PurifiedDefense

FILTER: dict[str, int] = {"window": 2}


def _symmetric_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis padded in scipy's "reflect" mode (edge repeated), any pad width."""
    idx = torch.arange(-before, n + after, device=device)
    period = 2 * n
    idx = idx % period
    return torch.where(idx >= n, period - 1 - idx, idx)


def median_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """scipy.ndimage.median_filter(x, size=(1, 1, window, window), mode="reflect") for x of shape (B, C, H, W)."""
    if window == 1:
        return x
    before, after = window // 2, window - 1 - window // 2
    h, w = x.shape[-2:]
    rows = _symmetric_index(h, before, after, x.device)
    cols = _symmetric_index(w, before, after, x.device)
    padded = x[..., rows, :][..., cols]
    patches = padded.unfold(-2, window, 1).unfold(-2, window, 1)  # (B, C, H, W, window, window)
    flat = patches.flatten(-2)
    # the element of rank n // 2 (scipy's rank filter): the upper median for an even window
    return flat.sort(dim=-1).values[..., flat.shape[-1] // 2]


@register_defense("median-filter")
class MedianFilter(PurifiedDefense):
    description = "median filter on the input (ART SpatialSmoothing), then the standard FC ResNet + H"
    differentiable = False  # a.e. a pixel permutation, but the paper treats it as non-differentiable
    surrogate_description = "identity for the filter (BPDA), then the classifier"
    presets = fc_resnet_presets(FILTER)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        window = config["defense"]["window"]
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise OTBenchError(f"median-filter: window must be a positive integer, got {window!r}")

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.config["defense"]["window"])
