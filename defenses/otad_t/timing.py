"""Table IX measured three ways in one run (papers/otad.txt V-F): seconds per test sample of OTAD-T's inference
with (1) a per-sample conic solver (cvxpy + Clarabel: one LP per relaxation step of Algorithm 2, then the QCP of
eq. 16, otbench/defenses/otad/reference.py, as the public code does with MOSEK), (2) the exact batched solver
(otbench/defenses/otad/cip.py) called one sample at a time, and amortised over a batch, (3) CIP-net (OTAD-T-NN).
Every timing covers the whole inference (embedding, neighbour search, CIP step, classifier) of one sample.
Also recorded per sample: how far CIP-net's and the conic solver's features are from the exact ones, and the
predictions, so the accuracy cost of CIP-net is measured on the same samples.
"""
from __future__ import annotations

import statistics
import time

import torch


from .cipnet import relative_error
from .defense import OTADTBase
from .nn_defense import OTADTNNBase


def conic_reference():
    """OTAD's per-sample conic reference (cvxpy + Clarabel), imported only when Table IX is measured."""
    from otbench.defenses.otad import reference

    return reference


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@torch.no_grad()
def measure_inference(exact: OTADTBase, nn_defense: OTADTNNBase, x: torch.Tensor, y: torch.Tensor,
                      n_conic: int, batched_repeats: int = 3) -> dict[str, list[float | None]]:
    """Per-sample values over the samples of x; `conic_*` are None after the first n_conic samples."""
    ref = conic_reference()
    cfg = exact.config["defense"]
    x = x.to(exact.device)
    out: dict[str, list[float]] = {k: [] for k in ("exact_s", "cipnet_s", "conic_s", "exact_batched_s", "cipnet_rel_error",
                                                   "conic_rel_error", "exact_correct", "cipnet_correct",
                                                   "conic_correct", "agree", "dim", "exact_step_s",
                                                   "cipnet_step_s")}
    exact.cip.reset()  # no memo carried over from earlier queries: every sample pays its search
    for i in range(len(x)):
        xi = x[i:i + 1]
        c0, n0 = exact.timings["cip"], nn_defense.timings["cip-net"]
        logit, t = _timed(lambda: exact.logits(xi))
        out["exact_s"].append(t)
        nn_logit, t = _timed(lambda: nn_defense.logits(xi))
        out["cipnet_s"].append(t)
        # the CIP step alone (relaxation search + QP, or the CIP-net forward), without embedding, search and head
        out["exact_step_s"].append(exact.timings["cip"] - c0)
        out["cipnet_step_s"].append(nn_defense.timings["cip-net"] - n0)
        res, xt, idx = exact.cip_features(xi)
        z_nn = nn_defense.cipnet(xt, nn_defense.bank_x[idx], nn_defense.bank_z[idx])
        out["cipnet_rel_error"].append(relative_error(z_nn, res.features.float()).item())
        out["exact_correct"].append(float(logit.argmax(1).item() == y[i].item()))
        out["cipnet_correct"].append(float(nn_logit.argmax(1).item() == y[i].item()))
        out["agree"].append(float(logit.argmax(1).item() == nn_logit.argmax(1).item()))
        out["dim"].append(float(xt.shape[1]))
        if i < n_conic:
            def conic():
                xt_c = exact.net.embed(xi)
                idx_c = exact.neighbours(xi, xt_c)
                X, Z = exact.bank_x[idx_c[0]].double().cpu().numpy(), exact.bank_z[idx_c[0]].double().cpu().numpy()
                # the LPs of Algorithm 2 run as they are; eq. 16 gets the exact solver's (least) potentials so that
                # the features can be compared (another LP optimum changes the feature, shared/design/cip.md)
                g, _, _ = ref.solve_reference(xt_c[0].double().cpu().numpy(), X, Z, L=cfg["L"], l=cfg["l"],
                                              delta1=cfg["delta1"], delta2=cfg["delta2"],
                                              formulation=cfg["formulation"], max_steps=2000,
                                              potentials=res.potentials[0].double().cpu().numpy(), polish=False)
                g = torch.as_tensor(g, device=exact.device)
                return exact.net.classify(g.float()[None]), g
            (c_logit, g), t = _timed(conic)
            out["conic_s"].append(t)
            out["conic_correct"].append(float(c_logit.argmax(1).item() == y[i].item()))
            out["conic_rel_error"].append(relative_error(g[None], res.features.double()).item())
    reps = []
    for _ in range(batched_repeats):
        exact.cip.reset()
        reps.append(_timed(lambda: exact.logits(x))[1] / len(x))
    # one value per sample (the batch's mean over the repeats) and the spread over the repeats
    out["exact_batched_s"] = [statistics.mean(reps)] * len(x)
    out["exact_batched_repeat_std"] = [statistics.pstdev(reps)] * len(x)
    for key in ("conic_s", "conic_rel_error", "conic_correct"):  # conic values: the first n_conic samples only
        out[key] += [None] * (len(x) - len(out[key]))
    return out

