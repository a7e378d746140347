"""What the minimum-norm gradient attacks (fab, deepfool) share: holding a library's output to otbench's
minimum-norm contract (Attack.minimum_norm, otbench.curves).

A library's minimum-norm attack may hand back an input that is not adversarial (DeepFool out of steps), or one
whose norm, measured in float32, passed its own `<= eps` test but not the guard's float64 one. Per sample this
keeps the library's input only where the defense misclassifies it and its norm is within eps; elsewhere the
clean input comes back (pert_norm 0), so a stored pert_norm > 0 always is the distance of an adversarial input
found within the cell's budget."""
from __future__ import annotations

import torch

from ..guard import perturbation_norms


def keep_adversarial_within(model: torch.nn.Module, images: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor,
                            norm: str, eps: float, batch_size: int = 500) -> torch.Tensor:
    """`adv` where it is misclassified and within eps of `images`, else `images` (all on the CPU)."""
    adv = adv.detach().cpu().to(images.dtype)
    device = next(model.parameters()).device
    with torch.no_grad():
        pred = torch.cat([model(adv[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(adv), batch_size)])
    keep = (pred != labels.cpu()) & (perturbation_norms(images, adv, norm) <= eps)
    return torch.where(keep.view(-1, *([1] * (images.dim() - 1))), adv, images)
