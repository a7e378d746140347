"""The minibatch loop every supervised training in otbench shares: shuffled epochs from a seeded generator,
one optimiser step (and scheduler step) per batch, a progress bar. What differs (the loss, an adversarial
perturbation of the batch) is the caller's `loss_of(xb, yb)`. Keeping one loop keeps one shuffling order,
so a model's cached checkpoint means the same thing whichever defense trained it."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm


_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every training bar of this process (`--quiet`): trainings start deep inside defense
    constructors, so one switch here is simpler than threading a flag through every factory."""
    global _QUIET
    _QUIET = quiet


def progress_bar(total: int, desc: str, progress: bool = True, **kwargs) -> tqdm:
    """The bar of one training; hidden when `progress` is False or the process was made quiet."""
    return tqdm(total=total, desc=desc, disable=_QUIET or not progress, leave=False, **kwargs)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def minibatch_training(x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, gen: torch.Generator,
                       opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler | None,
                       loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device,
                       desc: str, progress: bool = True, on_loss: Callable[[float], None] | None = None) -> None:
    """Run `epochs` shuffled passes over (x, y), minimising loss_of(xb, yb) (batches moved to `device`);
    `on_loss`, if given, receives every step's loss (training curves in tests and records)."""
    steps = steps_per_epoch(len(x), batch_size)
    bar = progress_bar(epochs * steps, desc, progress, unit="step")
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = loss_of(x[idx].to(device), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if on_loss is not None:
                on_loss(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
