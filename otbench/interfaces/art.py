"""Adversarial Robustness Toolbox (ART) estimators for otbench defenses.

ART picks its attacks by the estimator's declared capabilities, as otbench does by `differentiable`: a
differentiable defense becomes a PyTorchClassifier (gradients are real), a non-differentiable one a
black-box classifier that only answers queries, so ART's gradient-free attacks run on it and ART's
gradient attacks refuse it when they are built (EstimatorError: the estimator lacks LossGradientsMixin).
Gradients for a non-differentiable defense are then a choice the caller makes, not a silent default:
`surrogate=True` wraps BPDA (forward = the real defense, backward = its declared surrogate).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from art.estimators.classification import (
    BlackBoxClassifierNeuralNetwork,
    PyTorchClassifier,
)
from torch import nn

from ..defense import Defense
from ..errors import OTBenchError


def _no_gradients(defense: Defense) -> str:
    return (f"defense '{defense.name}' is not differentiable, so its ART estimator has no gradients. "
            "Choices: to_art(defense, surrogate=True) for BPDA through its surrogate "
            f"({defense.surrogate_description or 'none declared'}), or a gradient-free ART attack "
            "(SquareAttack, HopSkipJump, BoundaryAttack) on this estimator")


class DefenseBlackBox(BlackBoxClassifierNeuralNetwork):
    """ART's query-only classifier around a non-differentiable defense. It does not derive from
    LossGradientsMixin, so ART's gradient attacks refuse it at construction; code that asks it for a
    gradient directly gets an OTBenchError naming the choices instead of an AttributeError.

    `score_fn` replaces `defense.logits` as the function queried (a batch on the defense's device in, logits
    out), for callers that count or log queries (the label-only attacks); it must answer as the defense does."""

    def __init__(self, defense: Defense, probabilities: bool = False, batch_size: int = 500,
                 score_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.defense = defense
        logits = score_fn or defense.logits

        def scores(x: np.ndarray) -> np.ndarray:
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            with torch.no_grad():
                out = torch.cat([logits(xt[i:i + batch_size].to(defense.device)).float().cpu()
                                 for i in range(0, len(xt), batch_size)])
            return (out.softmax(1) if probabilities else out).numpy()

        super().__init__(scores, input_shape=defense.data.input_shape, nb_classes=defense.data.num_classes,
                         channels_first=True, clip_values=(0.0, 1.0))

    def loss_gradient(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise OTBenchError(_no_gradients(self.defense))

    def class_gradient(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise OTBenchError(_no_gradients(self.defense))


def to_art(defense: Defense, surrogate: bool = False, probabilities: bool = False, black_box: bool = False
           ) -> PyTorchClassifier | DefenseBlackBox:
    """An ART estimator for `defense` on inputs in [0, 1] (channels first).

    - differentiable: PyTorchClassifier on `defense.module()` (cross-entropy loss). ART sets the train
      flag of the model it holds (train() in fit, train(False) before gradients); DefenseModule.train only
      flips its own flag, so BatchNorm inside the defense always evaluates.
    - not differentiable: `DefenseBlackBox`, whose scores are the defense's logits, as PyTorchClassifier's
      are (`probabilities=True` for softmax; logits keep score-based attacks from stalling where softmax
      saturates in float32).
    - `surrogate=True`: PyTorchClassifier on otbench's BPDAModule, for ART's gradient attacks on a
      non-differentiable defense (the outputs are the real defense's, the gradients the surrogate's).
    - `black_box=True`: `DefenseBlackBox` whatever the defense, for query-only (decision-based) attacks,
      which must never be handed gradients even where the defense has them.
    """
    if defense.task != "classification":
        raise OTBenchError(f"defense '{defense.name}' is a {defense.task} model; to_art builds classifiers")
    if black_box and surrogate:
        raise OTBenchError("to_art: black_box=True answers queries only; it cannot also carry surrogate gradients")
    if black_box:
        return DefenseBlackBox(defense, probabilities)
    if surrogate:
        if defense.surrogate() is None:
            raise OTBenchError(f"defense '{defense.name}' declares no surrogate for BPDA; use a gradient-free "
                               "ART attack on to_art(defense)")
        from ..attacks.bpda_pgd import BPDAModule

        model: nn.Module = BPDAModule(defense).train(False)
    elif defense.differentiable:
        model = defense.module()
    else:
        return DefenseBlackBox(defense, probabilities)
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=defense.data.input_shape,
                             nb_classes=defense.data.num_classes, clip_values=(0.0, 1.0),
                             device_type="cpu" if defense.device.type == "cpu" else "gpu")
