"""Table IX three ways in one run: OTAD-T's inference time per sample with the per-sample conic solver (cvxpy +
Clarabel, otbench/defenses/otad/reference.py), the exact batched solver (otbench/defenses/otad/cip.py) and CIP-net (OTAD-T-NN),
printing speed ratios against each other and CIP-net's accuracy cost against the exact solver.

    python bench/bench_otad_t.py [--dataset fashion-mnist] [--preset quick] [--n 50] [--conic-n 10]
                                 [--paper-dims] [--threads 1]

The trained quick-preset models come from the model cache (trained on first use). --paper-dims also times the
CIP step alone at the paper's token dimension (64 patches x 256 = 16384) on an untrained paper-size ViT over
random 32 x 32 RGB images (500 training points): solver costs, not accuracies.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from otbench.defenses.otad_t.timing import conic_reference, measure_inference
from otbench.data import eval_subset, load_dataset
from otbench.defense import create_defense


def _ms(values) -> str:
    v = [x for x in values if x is not None]
    return f"{1e3 * statistics.mean(v):9.3f} ms (std {1e3 * statistics.pstdev(v):.3f}, n={len(v)})"


def trained(args) -> None:
    data = load_dataset(args.dataset)
    ids = torch.tensor(eval_subset(len(data.x_test), args.n, 0).ids)
    res = {"train": {"dml_arch": "resnet3"}}
    exact = create_defense("otad-t-dml", data, args.preset, res)
    nn_def = create_defense("otad-t-nn-dml", data, args.preset, res)
    v = measure_inference(exact, nn_def, data.x_test[ids], data.y_test[ids], args.conic_n)
    mean = {k: statistics.mean([x for x in v[k] if x is not None]) for k in ("conic_s", "exact_s", "exact_batched_s",
                                                                            "cipnet_s")}
    print(f"{args.dataset}, preset {args.preset}, OTAD-T with ResNet DML-net, d = {int(v['dim'][0])}, "
          f"torch threads {torch.get_num_threads()}")
    for k, label in (("conic_s", "conic solver (cvxpy + Clarabel), 1/call"), ("exact_s", "exact solver, 1/call"),
                     ("exact_batched_s", f"exact solver, batch of {args.n}"), ("cipnet_s", "CIP-net, 1/call")):
        print(f"  {label:42s} {_ms(v[k])}")
    print(f"  CIP step alone: exact solver 1/call {_ms(v['exact_step_s'])}, CIP-net 1/call {_ms(v['cipnet_step_s'])}, "
          f"ratio {statistics.mean(v['exact_step_s']) / statistics.mean(v['cipnet_step_s']):.2f}x")
    print(f"  ratio conic / exact (1/call)          {mean['conic_s'] / mean['exact_s']:8.1f}x")
    print(f"  ratio conic / exact (batched)         {mean['conic_s'] / mean['exact_batched_s']:8.1f}x")
    print(f"  ratio exact (1/call) / CIP-net         {mean['exact_s'] / mean['cipnet_s']:8.2f}x")
    print(f"  ratio exact (batched) / CIP-net (1/call) {mean['exact_batched_s'] / mean['cipnet_s']:8.2f}x")
    acc = {k: 100 * statistics.mean(v[k]) for k in ("exact_correct", "cipnet_correct")}
    print(f"  accuracy exact {acc['exact_correct']:.1f}%, CIP-net {acc['cipnet_correct']:.1f}% "
          f"(cost {acc['exact_correct'] - acc['cipnet_correct']:+.1f} points), same prediction "
          f"{100 * statistics.mean(v['agree']):.1f}%, CIP-net feature error {statistics.mean(v['cipnet_rel_error']):.3e}, "
          f"conic feature error {statistics.mean([x for x in v['conic_rel_error'] if x is not None]):.1e}")


def paper_dims(args) -> None:
    from otbench.defenses.otad_t.cipnet import CIPNet
    from otbench.defenses.otad.step import CIPStep
    from otbench.defenses.otad_t.presets import CIPNET_PAPER, OTAD_T_DEFAULTS
    from otbench.defenses.otad_t.vit import VIT_PAPER, TransportViT, token_banks

    torch.manual_seed(0)
    net = TransportViT((3, 32, 32), 10, VIT_PAPER).eval()
    bank_x, bank_z = token_banks(net, torch.rand(500, 3, 32, 32), torch.device("cpu"), batch=250)
    with torch.no_grad():
        xt = net.embed(torch.rand(args.n, 3, 32, 32))
    idx = torch.cdist(xt, bank_x).topk(10, largest=False).indices
    cfg = OTAD_T_DEFAULTS
    step = CIPStep(cfg)
    cip = CIPNet(xt.shape[1], 10, CIPNET_PAPER["cipnet_width"], CIPNET_PAPER["cipnet_depth"],
                 CIPNET_PAPER["cipnet_heads"]).eval()
    ref = conic_reference()
    t_exact, t_net, t_conic = [], [], []
    with torch.no_grad():
        for i in range(args.n):
            X, Z, ii = bank_x[idx[i:i + 1]], bank_z[idx[i:i + 1]], idx[i:i + 1]
            step.reset()
            s = time.perf_counter()
            res = step(xt[i:i + 1], X, Z, ii)
            t_exact.append(time.perf_counter() - s)
            s = time.perf_counter()
            cip(xt[i:i + 1], X, Z)
            t_net.append(time.perf_counter() - s)
            if i < args.conic_n:
                s = time.perf_counter()
                ref.solve_reference(xt[i].double().numpy(), X[0].double().numpy(), Z[0].double().numpy(), L=cfg["L"],
                                    l=cfg["l"], delta1=cfg["delta1"], delta2=cfg["delta2"], max_steps=2000,
                                    potentials=res.potentials[0].numpy(), polish=False)
                t_conic.append(time.perf_counter() - s)
        step.reset()
        s = time.perf_counter()
        step(xt, bank_x[idx], bank_z[idx], idx)
        batched = (time.perf_counter() - s) / args.n
    print(f"paper dimensions: d = {xt.shape[1]} (64 patches x 256), CIP step only, untrained paper-size ViT and CIP-net")
    print(f"  conic solver, 1/call     {_ms(t_conic)}")
    print(f"  exact solver, 1/call     {_ms(t_exact)}")
    print(f"  exact solver, batch of {args.n} {1e3 * batched:9.3f} ms per sample")
    print(f"  CIP-net (6 blocks), 1/call {_ms(t_net)}")
    print(f"  ratio conic / exact (1/call) {statistics.mean(t_conic) / statistics.mean(t_exact):8.1f}x, "
          f"exact (1/call) / CIP-net {statistics.mean(t_exact) / statistics.mean(t_net):8.2f}x, "
          f"exact (batched) / CIP-net {batched / statistics.mean(t_net):8.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--preset", default="quick")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--conic-n", type=int, default=10)
    p.add_argument("--paper-dims", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    trained(args)
    if args.paper_dims:
        paper_dims(args)


if __name__ == "__main__":
    main()
