"""The minibatch loop every supervised training in otbench shares: shuffled epochs from a seeded generator,
one optimiser step (and scheduler step) per batch, a progress bar. What differs (the loss, an adversarial
perturbation of the batch) is the caller's `loss_of(xb, yb)`. Keeping one loop keeps one shuffling order,
so a model's cached checkpoint means the same thing whichever defense trained it. The checkpoint cache
(`checkpoint_path`, `cached_model`) and the test accuracy every checkpoint records live here too."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .config import config_hash
from .data.base import cache_dir


_QUIET = False
# Every checkpoint this process loaded or wrote, in order: a distributed executor ships these files to workers
# that do not share the cache (otbench.executors.ray), so no worker trains a model the driver already has.
_USED: dict[Path, None] = {}
# Called with a checkpoint's path before `cached_model` looks at it (an executor's worker puts the driver's
# file there first); None: the cache alone.
_SOURCE: Callable[[Path], None] | None = None


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


def shuffled_batches(n: int, batch_size: int, epochs: int,
                     gen: torch.Generator) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(epoch, step, indices) of every minibatch: each epoch a fresh permutation of range(n) drawn from `gen`
    (drawn when the epoch starts, so other draws from `gen` inside the loop keep their place in its stream)."""
    steps = steps_per_epoch(n, batch_size)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(steps):
            yield epoch, i, order[i * batch_size:(i + 1) * batch_size]


def minibatch_training(x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, gen: torch.Generator,
                       opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler | None,
                       loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device,
                       desc: str, progress: bool = True, on_loss: Callable[[float], None] | None = None) -> None:
    """Run `epochs` shuffled passes over (x, y), minimising loss_of(xb, yb) (batches moved to `device`);
    `on_loss`, if given, receives every step's loss (training curves in tests and records)."""
    steps = steps_per_epoch(len(x), batch_size)
    bar = progress_bar(epochs * steps, desc, progress, unit="step")
    for _, _, idx in shuffled_batches(len(x), batch_size, epochs, gen):
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


@torch.no_grad()
def test_accuracy(net: torch.nn.Module, data, device: torch.device, n: int | None = None, batch: int = 1000) -> float:
    """Accuracy of `net` (put in eval mode) on the first n test points of `data` (all by default): the figure
    every trained classifier's checkpoint record carries."""
    net.eval()
    n = len(data.x_test) if n is None else min(n, len(data.x_test))
    correct = sum((net(data.x_test[i:min(i + batch, n)].to(device)).argmax(1).cpu() == data.y_test[i:min(i + batch, n)])
                  .sum().item() for i in range(0, n, batch))
    return correct / n


def checkpoint_path(stem: str, dataset: str, model: str | None = None, **identity: Any) -> Path:
    """Where a trained model is cached: `<cache>/models/<stem>-<dataset>-<hash>.pt`, the hash taken over
    {"model": model (default: stem), "dataset": dataset, **identity}, i.e. everything that determines it."""
    key = config_hash({"model": model or stem, "dataset": dataset, **identity})
    return cache_dir() / "models" / f"{stem}-{dataset}-{key}.pt"


def cached_model(path: Path, net: torch.nn.Module, cfg: dict[str, Any], device: torch.device,
                 train: Callable[[], torch.nn.Module],
                 evaluate: Callable[[torch.nn.Module], dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """`net` loaded from the checkpoint at `path`, else trained, evaluated and saved there; with its record."""
    _USED[Path(path)] = None
    if _SOURCE is not None:
        _SOURCE(Path(path))
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state_dict"])
        return net.to(device).eval(), saved["record"]
    start = time.time()
    net = train()
    record = {"train_seconds": round(time.time() - start, 1), "device": str(device), **evaluate(net)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # write then rename: a killed run never leaves half a checkpoint
    torch.save({"state_dict": net.state_dict(), "record": record, "config": cfg}, tmp)
    tmp.replace(path)
    return net.eval(), record


def used_checkpoints() -> list[Path]:
    """The checkpoint files this process has loaded or written (`cached_model`), oldest first."""
    return [p for p in _USED if p.exists()]


@contextmanager
def checkpoint_source(source: Callable[[Path], None]) -> Iterator[None]:
    """Within the block, `cached_model` calls `source(path)` before it reads the cache at `path`: a Ray worker
    writes the driver's checkpoint there when its node lacks it or holds another file under that name."""
    global _SOURCE
    old, _SOURCE = _SOURCE, source
    try:
        yield
    finally:
        _SOURCE = old
