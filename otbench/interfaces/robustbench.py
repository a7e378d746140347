"""RobustBench's own `benchmark()` (clean accuracy, then standard AutoAttack) on an otbench defense.

benchmark() takes no data: it loads the first n test images itself through `load_clean_dataset`, whose
CIFAR-10 loader calls torchvision's CIFAR10 with download=True. torchvision md5-checks the batches, so
- the official files under `<data_dir>/cifar-10-batches-py` are found intact and read as they are: the
  call is robustbench's, unchanged, and downloads nothing;
- any other copy (a subset, a re-export, a test folder) fails the check and would be downloaded over. For
  these, and for a data root without the files, robustbench's CIFAR-10 entry in `load_clean_dataset`'s
  loader table is pointed at otbench's cifar10 loader for the duration of the call: the same first n test
  images in file order, through the same preprocessing transform. Everything else is benchmark()'s code.
RobustBench knows only cifar10, cifar100 and imagenet (its BenchmarkDataset); otbench has cifar10.
benchmark() calls fra31/auto-attack's AutoAttack API, which pyautoattack 0.2.0 changed; the adapter lives
in otbench.compat.robustbench, and without it this fails at once with an OTBenchError saying so.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from ..compat.robustbench import load_robustbench
from ..data import load_dataset, resolve_data_root
from ..data.cifar import is_official
from ..defense import Defense
from ..errors import OTBenchError

_BENCHMARK_DATASETS = {"cifar10": "cifar10"}  # otbench dataset -> RobustBench BenchmarkDataset value


@dataclass(frozen=True)
class RobustBenchResult:
    clean_accuracy: float
    robust_accuracy: float
    n_examples: int
    threat_model: str
    eps: float
    data: str  # which loader gave robustbench its images


def _load_local_cifar10(n_examples: int | None, data_dir: str, prepr: Callable
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """robustbench.data.load_cifar10's contract, read by otbench's cifar10 loader: the first n test
    images in file order, each through `prepr` as a PIL image, as torchvision's dataset hands them."""
    from PIL import Image

    data = load_dataset("cifar10", data_dir)
    n = len(data.x_test) if n_examples is None else min(n_examples, len(data.x_test))
    hwc = (data.x_test[:n] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    x = torch.stack([prepr(Image.fromarray(np.ascontiguousarray(img))) for img in hwc])
    return x, data.y_test[:n].clone()


def _check_autoattack(rb_eval: Any) -> None:
    if "log_path" not in inspect.signature(rb_eval.AutoAttack).parameters:
        raise OTBenchError("robustbench 1.1.1's benchmark() calls fra31/auto-attack's API (AutoAttack(..., "
                           "log_path=), run_standard_evaluation(x, y, bs=) returning x_adv), which the installed "
                           "`autoattack` does not take (pyautoattack 0.2.0 changed it); "
                           "otbench.compat.robustbench must alias `autoattack` to an adapter")


def _check(defense: Defense, surrogate: bool) -> str:
    dataset = _BENCHMARK_DATASETS.get(defense.data.name)
    if dataset is None:
        raise OTBenchError(f"RobustBench benchmarks cifar10, cifar100 and imagenet only; defense "
                           f"'{defense.name}' is on {defense.data.name}. Use otbench's attacks (or AutoAttack "
                           "on torch_module(defense)) for other datasets")
    if defense.randomized:
        raise OTBenchError(f"defense '{defense.name}' is randomized; benchmark() runs AutoAttack's 'standard' "
                           "version, which assumes a deterministic model (AutoAttack's 'rand' version is for "
                           "randomized ones)")
    if not defense.differentiable and not surrogate:
        raise OTBenchError(f"defense '{defense.name}' is not differentiable and benchmark() runs AutoAttack's "
                           "gradient attacks. Choices: surrogate=True (BPDA through its surrogate: "
                           f"{defense.surrogate_description or 'none declared'}), or a gradient-free attack "
                           "(otbench's square, or ART's SquareAttack on to_art(defense))")
    return dataset


def robustbench_benchmark(defense: Defense, n_examples: int = 10000, threat_model: str = "Linf",
                          eps: float = 8 / 255, data_dir: str | os.PathLike | None = None,
                          batch_size: int = 32, surrogate: bool = False, log_path: str | None = None,
                          aa_state_path: Path | None = None) -> RobustBenchResult:
    """Run robustbench.eval.benchmark on the defense (its DefenseModule, or BPDA with `surrogate=True`)
    over the first `n_examples` CIFAR-10 test images of `data_dir` (default: otbench's data root)."""
    dataset = _check(defense, surrogate)
    load_robustbench()  # the one place that adapts to robustbench's packaging
    import robustbench.data as rb_data
    import robustbench.eval as rb_eval
    from robustbench.model_zoo.enums import BenchmarkDataset

    _check_autoattack(rb_eval)

    root = resolve_data_root(data_dir)
    key = BenchmarkDataset(dataset)
    if is_official(root):
        feed: contextlib.AbstractContextManager = contextlib.nullcontext()
        data = f"robustbench.data.load_cifar10 from {root} (official files)"
    else:
        table = getattr(rb_data, "_clean_dataset_loaders", None)
        if not isinstance(table, dict) or key not in table:
            raise OTBenchError("this robustbench version has no `robustbench.data._clean_dataset_loaders` table "
                               f"to feed local data through; put the official CIFAR-10 files under {root}")
        feed = mock.patch.dict(table, {key: _load_local_cifar10})
        data = f"otbench cifar10 loader from {root}"
    if surrogate:
        from ..attacks.bpda_pgd import BPDAModule

        model: nn.Module = BPDAModule(defense).train(False)  # benchmark() warns about train mode
    else:
        model = defense.module()
    with feed:
        clean, robust = rb_eval.benchmark(model, n_examples=n_examples, dataset=dataset,
                                          threat_model=threat_model, data_dir=str(root), device=defense.device,
                                          batch_size=batch_size, eps=eps, log_path=log_path,
                                          aa_state_path=aa_state_path)
    return RobustBenchResult(float(clean), float(robust), n_examples, threat_model, eps, data)
