"""The minibatch loop every supervised training in otbench shares: shuffled epochs from a seeded generator,
one optimiser step (and scheduler step) per batch, a progress bar. What differs (the loss, an adversarial
perturbation of the batch) is the caller's `loss_of(xb, yb)`. Keeping one loop keeps one shuffling order,
so a model's cached checkpoint means the same thing whichever defense trained it. The checkpoint cache
(`checkpoint_path`, `cached_model`) and the test accuracy every checkpoint records live here too."""
from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .config import config_hash
from .data.base import cache_dir, check_cache_writable


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
                       loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, device: torch.device,
                       desc: str, progress: bool = True, on_loss: Callable[[float], None] | None = None,
                       net: torch.nn.Module | None = None,
                       train_step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None) -> None:
    """Run `epochs` shuffled passes over (x, y), minimising loss_of(xb, yb) (batches moved to `device`);
    `on_loss`, if given, receives every step's loss (training curves in tests and records).

    A training with several optimisers per batch (a critic and a network) passes `train_step(xb, yb, epoch)`
    instead of `loss_of`: it makes its own updates and returns the loss to show; `opt` (anything with
    state_dict / load_state_dict) is then only what is saved with each finished epoch.

    Given the `net`, a training run inside `cached_model` is resumable: every finished epoch is saved beside the
    checkpoint (network, optimiser, schedule and both random generators), so a killed training restarts at its
    last finished epoch and ends with the weights an unbroken one would have."""
    steps = steps_per_epoch(len(x), batch_size)
    resume = _RESUME.get() if net is not None else None
    start = _resume(resume, net, opt, sched, gen, desc, epochs * steps) if resume else 0
    bar = progress_bar(epochs * steps, desc, progress, unit="step", initial=start * steps)
    for epoch, i, idx in shuffled_batches(len(x), batch_size, epochs - start, gen):
        if train_step is not None:
            loss = train_step(x[idx].to(device), y[idx].to(device), start + epoch)
        else:
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
        if resume and i == steps - 1 and start + epoch + 1 < epochs:  # an epoch done, and more to come
            _save_epoch(resume, net, opt, sched, gen, desc, epochs * steps, start + epoch + 1)
    bar.close()


# Set by cached_model around a training: where its finished epochs are kept until the checkpoint is written
_RESUME: ContextVar[Path | None] = ContextVar("otbench_resume", default=None)


def _save_epoch(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator,
                desc: str, total: int, epoch: int) -> None:
    state = {"desc": desc, "total_steps": total, "epoch": epoch, "net": net.state_dict(), "opt": opt.state_dict(),
             "sched": sched.state_dict() if sched is not None else None, "gen": gen.get_state(),
             "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    tmp = path.with_suffix(".partial-tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError):  # an unsaved epoch only costs time if the run is killed
        tmp.unlink(missing_ok=True)


def _resume(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator,
            desc: str, total: int) -> int:
    """The epochs already done by a killed run of this very training (0 when there is none to trust)."""
    if not path.exists():
        return 0
    # a partial file that fails half-way must leave the fresh run exactly as it was
    before = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()),
              copy.deepcopy(sched.state_dict()) if sched is not None else None, gen.get_state(), torch.get_rng_state())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors, numbers and strings only
        if state["desc"] != desc or state["total_steps"] != total:
            return 0
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        if sched is not None:
            sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except Exception:  # a damaged partial file: start again from the untouched fresh state
        net.load_state_dict(before[0])
        opt.load_state_dict(before[1])
        if sched is not None:
            sched.load_state_dict(before[2])
        gen.set_state(before[3])
        torch.set_rng_state(before[4])
        return 0
    print(f"otbench: resuming {desc} at epoch {state['epoch']} (a killed run's finished epochs, {path.name})",
          file=sys.stderr)
    return state["epoch"]


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
    """`net` loaded from the checkpoint at `path`, else trained, evaluated and saved there; with its record.

    A checkpoint that cannot be read (truncated, corrupt, another architecture) is moved aside and the model
    trained again; a cache that cannot take the new checkpoint (read-only, full) is refused before training, and
    if saving still fails the model serves this run and no partial file is left."""
    _USED[Path(path)] = None
    if _SOURCE is not None:
        _SOURCE(Path(path))
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(saved["state_dict"])
            return net.to(device).eval(), saved["record"]
        except Exception as exc:  # any unreadable checkpoint: pickle, zip, key and shape errors alike
            aside = path.with_suffix(".corrupt")
            path.replace(aside)
            why = " ".join(str(exc).split())[:160]
            print(f"otbench: cached model {path} could not be read ({why}); moved to {aside.name}, training it again",
                  file=sys.stderr)
    check_cache_writable()
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    partial = path.with_suffix(".partial")
    token = _RESUME.set(partial)
    try:
        net = train()
    finally:
        _RESUME.reset(token)
    # CPU trainings depend on the intra-op thread count (the order of float reductions): recorded beside the device
    threads = {"threads": torch.get_num_threads()} if device.type == "cpu" else {}
    record = {"train_seconds": round(time.time() - start, 1), "device": str(device), **threads, **evaluate(net)}
    tmp = path.with_suffix(".tmp")  # write then rename: a killed run never leaves half a checkpoint
    try:
        torch.save({"state_dict": net.state_dict(), "record": record, "config": cfg}, tmp)
        tmp.replace(path)
        partial.unlink(missing_ok=True)
    except (OSError, RuntimeError) as exc:  # a full or vanished cache (torch raises either): keep the trained
        tmp.unlink(missing_ok=True)          # model for this run, leave no half file
        why = " ".join(str(exc).split())[:160]
        print(f"otbench: the trained model could not be cached at {path} ({why}); it serves this run only",
              file=sys.stderr)
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
