"""OTAD-T's tables (papers/otad.txt V-E to V-G): VI, VII, IX, X, XI and the CIFAR-10 half of XII.

Each is registered for CIFAR-10, the paper's dataset, and again for Fashion-MNIST (name suffix
`-fashion-mnist`), where the data is: the same pipeline at the same settings (K = 10, L = 2, l = 0,
delta1 = delta2 = 1, eps = 0.5 in L2), with the paper's CIFAR-10 values beside the measured ones, marked as
another dataset. Table IX (inference time) is an analysis table: seconds per sample are stored per test
sample in the results database's `analyses` table (otbench/defenses/otad_t/timing.py).
"""
from __future__ import annotations

import math
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from otbench.defense import build_config
from otbench.registry import DEFENSES, register_table
from otbench.report.paper import paper_value
from otbench.report.spec import Column, Row, TableSpec
from otbench.report.table import ReportContext, Table
from otbench.store import AnalysisRecord, ResultStore

DATASETS = {"cifar10": "CIFAR-10", "fashion-mnist": "Fashion-MNIST"}
EPS = 0.5  # papers/otad.txt V-E: L2, eps = 0.5 on CIFAR-10 for every table here
_ATT = {"train": {"dml_arch": "attention"}}
_RES = {"train": {"dml_arch": "resnet3"}}


def _other_dataset_note(dataset: str) -> str:
    if dataset == "cifar10":
        return ""
    return (f"**Measured on {DATASETS[dataset]}, not CIFAR-10**: the paper's values (right of each slash) are its "
            f"CIFAR-10 results, another dataset; the same pipeline runs here at the same settings (28 x 28 inputs: "
            f"4 x 4 patches on a 7 x 7 grid, 49 tokens, where CIFAR-10's 32 x 32 gives the paper's 64). Compare "
            f"orderings and gaps, not values. ")


def _spec(name: str, dataset: str, **kw: Any) -> TableSpec:
    suffix = "" if dataset == "cifar10" else f" [measured on {DATASETS[dataset]}; paper values: CIFAR-10]"
    note = _other_dataset_note(dataset) + kw.pop("note", "")
    return TableSpec(name=name, dataset=dataset, paper="otad", paper_dataset="cifar10", note=note,
                     title=kw.pop("title") + suffix, **kw)


def _both(name: str, build: Callable[[str, str], TableSpec]) -> None:
    """Register `name` (CIFAR-10) and `name-fashion-mnist`."""
    register_table(name)(lambda: build(name, "cifar10"))
    register_table(f"{name}-fashion-mnist")(lambda: build(f"{name}-fashion-mnist", "fashion-mnist"))


def _acc_columns(attack: str, overrides: dict[str, Any] | None = None) -> tuple[Column, ...]:
    o = overrides or {}
    return (Column("Standard Acc", attack, EPS, "clean", "clean", o),
            Column(f"Robust Acc eps={EPS:g}", attack, EPS, "robust", f"eps={EPS:g}", o))


_BASELINES = (Row("PGD adversarial training", "pgd-at", "PGD adversarial training"),
              Row("Median filter", "median-filter", "Median filter"), Row("STL", "stl", "STL"),
              Row("APE-GAN", "ape-gan", "APE-GAN"), Row("DiffPure", "diffpure", "DiffPure"),
              Row("l-inf-dist net", "linf-dist-net", "l-inf-dist net"), Row("SOC+", "soc-plus", "SOC+"))
_VIT_ROW = Row("ViT, no defense (not in the paper)", "vit", None)
_SETUP = ("OTAD-T: K = 10, L = 2, l = 0, delta1 = delta2 = 1 (papers/otad.txt V-E); `with attention` / `with ResNet`: "
          "neighbours by l2 between the embeddings of a DML-net (one attention block / 3-block ResNet, triplet loss with "
          "semi-hard mining). OTAD-T-NN: CIP-net (a Transformer encoder over 2K + 1 tokens) in place of the CIP solver, "
          "trained on exact CIP solutions of the same neighbour search. Baselines other than the ViT are not "
          "implemented for these data (n/a) or need `--fill`. ")


def _table_6(name: str, dataset: str) -> TableSpec:
    rows = _BASELINES + (Row("OTAD-T with attention", "otad-t-dml", "OTAD-T with attention", _ATT),
                         Row("OTAD-T with ResNet", "otad-t-dml", "OTAD-T with ResNet", _RES),
                         Row("OTAD-T-NN with attention", "otad-t-nn-dml", "OTAD-T-NN with attention", _ATT),
                         Row("OTAD-T-NN with ResNet", "otad-t-nn-dml", "OTAD-T-NN with ResNet", _RES),
                         Row("OTAD-T, l2 neighbours in x~ (not in the paper)", "otad-t", None), _VIT_ROW)
    return _spec(name, dataset, title="Defense methods against BPDA + PGD (L2, eps = 0.5, 100 steps; BPDA through the ViT)",
                 paper_table="VI", rows=rows, columns=_acc_columns("bpda-pgd"), note=_SETUP)


def _table_7(name: str, dataset: str) -> TableSpec:
    rows = tuple(Row(label, "otad-t-dml", label, {"train": {"dml_arch": arch}})
                 for label, arch in (("3-block ResNet", "resnet3"), ("2-layer CNN", "cnn2"), ("1-block ViT", "vit1"),
                                     ("An attention block", "attention")))
    return _spec(name, dataset, title="OTAD-T with different DML-nets against the DML attack (L2, eps = 0.5)",
                 paper_table="VII", rows=rows, columns=_acc_columns("dml-attack"),
                 note="`dml-attack`: 100 steps of L2 PGD maximising ||psi(x + delta) - psi(x)|| on the DML-net psi "
                      "that picks OTAD-T's neighbours; the defense's output is then recomputed on the perturbed input.")


_PGD_L2 = {"norm": "L2"}


def _table_10(name: str, dataset: str) -> TableSpec:
    rows = (Row("PGD adversarial training", "pgd-at", "PGD adversarial training"), Row("APE-GAN", "ape-gan", "APE-GAN"),
            Row("DiffPure", "diffpure", "DiffPure"), Row("l-inf-dist net", "linf-dist-net", "l-inf-dist net"),
            Row("SOC+", "soc-plus", "SOC+"),
            Row("OTAD-T-NN with attention", "otad-t-nn-dml", "OTAD-T-NN with attention", _ATT),
            Row("OTAD-T-NN with ResNet", "otad-t-nn-dml", "OTAD-T-NN with ResNet", _RES), _VIT_ROW)
    return _spec(name, dataset, title="Defense methods against PGD (L2, eps = 0.5, 100 steps) through OTAD-T-NN's own gradient",
                 paper_table="X", rows=rows, columns=_acc_columns("pgd", _PGD_L2),
                 note="OTAD-T-NN is differentiable: PGD takes the gradient of the whole defense (the neighbour set is "
                      "piecewise constant). " + _SETUP)


def _table_11(name: str, dataset: str) -> TableSpec:
    rows = tuple(Row(f"OTAD-T-NN alpha={a:g}", "otad-t-nn-dml", f"OTAD-T-NN alpha={a:g}",
                     {"train": {"dml_arch": "attention", "cipnet_alpha": a}}) for a in (1.0, 0.5, 0.0))
    return _spec(name, dataset, title="Effect of alpha (eq. 24) on OTAD-T-NN with attention against PGD (L2, eps = 0.5)",
                 paper_table="XI", rows=rows, columns=_acc_columns("pgd", _PGD_L2),
                 note="alpha weights the CIP-net's loss between the exact CIP solutions (alpha = 1) and the ViT's own "
                      "features z~ (alpha = 0), eq. 24.")


def _table_12(name: str, dataset: str) -> TableSpec:
    rows = tuple(Row(f"{method} K={k}", defense, method, {"defense": {"K": k, **extra}})
                 for method, defense, extra in (("OTAD-T", "otad-t", {"L": 12.0}), ("KNN", "knn-t", {}))
                 for k in (5, 10, 15))
    return _spec(name, dataset, title="Standard accuracy of KNN and OTAD-T (K = 5, 10, 15; L = 12)",
                 paper_table="XII", rows=rows, columns=(Column("Standard Acc", "none", 0.0, "clean", "K={K}"),),
                 note="Both search neighbours by l2 in the ViT's patch embedding x~ (V-G); KNN takes the neighbours' "
                      "mean feature z~, OTAD-T the CIP solution (L = 12, l = 0, delta1 = delta2 = 1); the ViT's "
                      "classifier reads either.")


_both("otad-table-6", _table_6)
_both("otad-table-7", _table_7)
_both("otad-table-10", _table_10)
_both("otad-table-11", _table_11)
_both("otad-t-table-12", _table_12)


# -- Table IX: inference time, three ways -----------------------------------------------------------------------
_WAYS = (("conic_s", "OTAD-T, per-sample conic solver (cvxpy + Clarabel), one sample per call", "OTAD-T"),
         ("exact_s", "OTAD-T, exact batched solver (otbench/defenses/otad/cip.py), one sample per call", None),
         ("exact_batched_s", "OTAD-T, exact batched solver, amortised over the whole batch", None),
         ("cipnet_s", "OTAD-T-NN (CIP-net), one sample per call", "OTAD-T-NN"))
_ACCURACY = {"conic_s": "conic_correct", "exact_s": "exact_correct", "exact_batched_s": "exact_correct",
             "cipnet_s": "cipnet_correct"}
_ERROR = {"conic_s": "conic_rel_error", "cipnet_s": "cipnet_rel_error"}


@dataclass(frozen=True)
class TimingTable(Table):
    """Table IX: seconds per sample of OTAD-T with ResNet DML-net (V-F) under three CIP solvers and CIP-net, all
    measured in one run on the same samples (one stored analysis of both defenses), drawn as a bar chart beside
    the paper's times. The one table of its own kind: its analysis runs two defenses side by side."""

    conic_n: int = 20  # samples the conic solver runs on (seconds each)

    def rows_config(self) -> tuple[Row, Row]:
        return (Row("OTAD-T with ResNet", "otad-t-dml", "OTAD-T", _RES),
                Row("OTAD-T-NN with ResNet", "otad-t-nn-dml", "OTAD-T-NN", _RES))

    def identity(self, preset: str, subset_seed: int) -> dict[str, Any] | None:
        configs = {}
        for row in self.rows_config():
            if row.defense not in DEFENSES or preset not in DEFENSES.get(row.defense).presets:
                return None
            configs[row.defense] = build_config(DEFENSES.get(row.defense), preset, row.overrides)
        return {"analysis": "otad-t-inference-time", "defense": {"name": "otad-t-dml", "dataset": self.dataset,
                                                                  **configs},
                "params": {"conic_n": self.conic_n}, "subset_seed": subset_seed}

    def collect(self, store: ResultStore, ctx: ReportContext) -> list[dict[str, Any]]:
        ident = self.identity(ctx.preset, ctx.subset_seed)
        rec = None if ident is None else store.analysis(ident)
        return timing_records(rec)

    def fill(self, store: ResultStore, ctx: ReportContext) -> None:
        from otbench.data import eval_subset, load_dataset
        from otbench.defense import create_defense
        from otbench.defenses.otad_t.timing import measure_inference
        from otbench.provenance import command_line, device_name, machine, package_versions, resolve_device

        ident = self.identity(ctx.preset, ctx.subset_seed)
        if ident is None:
            return
        old = store.analysis(ident)
        done = set(old.sample_ids) if old else set()
        data = load_dataset(self.dataset, ctx.data_root)
        ids = [i for i in eval_subset(len(data.x_test), ctx.n, ctx.subset_seed).ids if i not in done]
        if not ids:
            return
        device = resolve_device(ctx.device)
        exact, nn_def = (create_defense(r.defense, data, ctx.preset, r.overrides, device) for r in self.rows_config())
        start = time.time()
        conic_n = max(0, self.conic_n - sum(v is not None for v in (old.vals["conic_s"] if old else [])))
        t = torch.tensor(ids)
        vals = measure_inference(exact, nn_def, data.x_test[t], data.y_test[t], conic_n)
        store.save_analysis(ident, ids, vals, time.time() - start, device_name(device), command_line(), machine(),
                            package_versions())
        if ctx.progress:
            print(f"{self.name}: inference times on {len(ids)} samples in {time.time() - start:.0f} s", file=sys.stderr)

    def render(self, store: ResultStore, out_dir: Path, ctx: ReportContext) -> list[Path]:
        ident = self.identity(ctx.preset, ctx.subset_seed)
        return render_timing(self, None if ident is None else store.analysis(ident), Path(out_dir), ctx.preset)


def _stats(values: list[float | None]) -> tuple[float | None, float | None, int]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    mean = sum(v) / len(v)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in v) / len(v)), len(v)


def timing_records(rec: AnalysisRecord | None) -> list[dict[str, Any]]:
    """One record per way of solving the CIP step: measured mean and std, paper mean and std, the speed-up over
    the exact solver called per sample, the accuracy and the feature error against the exact solver."""
    records = []
    exact_mean = _stats(rec.vals["exact_s"])[0] if rec else None
    for key, label, method in _WAYS:
        mean, std, n = _stats(rec.vals[key]) if rec else (None, None, 0)
        if key == "exact_batched_s" and rec:
            std = rec.vals["exact_batched_repeat_std"][0]
        acc = _stats(rec.vals[_ACCURACY[key]])[0] if rec else None
        err = _stats(rec.vals[_ERROR[key]])[0] if rec and key in _ERROR else None
        p_mean = paper_value("otad", "IX", "cifar10", method, "per-sample", "inference_seconds_mean") if method else None
        p_std = paper_value("otad", "IX", "cifar10", method, "per-sample", "inference_seconds_std") if method else None
        records.append({"method": label, "measured_mean_s": mean, "measured_std_s": std, "n": n,
                        "paper_mean_s": p_mean, "paper_std_s": p_std,
                        "speed_vs_exact_per_sample": None if mean is None or not exact_mean else exact_mean / mean,
                        "accuracy": None if acc is None else 100 * acc, "feature_rel_error_vs_exact": err})
    return records


def render_timing(table: TimingTable, rec: AnalysisRecord | None, out_dir: Path, preset: str) -> list[Path]:
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{table.name}.csv", out_dir / f"{table.name}.md"
    records = timing_records(rec)
    pd.DataFrame.from_records(records).to_csv(csv_path, index=False)

    def f(v, fmt):
        return "not run" if v is None else format(v, fmt)

    lines = [f"# {table.title}", "", f"papers/otad.txt, Table IX; dataset `{table.dataset}`, preset `{preset}`.",
             "Seconds per sample: **measured mean (std) / paper mean (std)**. The paper's row OTAD-T used MOSEK per "
             "sample (its conic solver), so it stands beside the conic row; the exact solver is not in the paper.", ""]
    if table.note:
        lines += [table.note, ""]
    if rec:
        dim = int(rec.vals["dim"][0])
        lines += [f"Token dimension of x~ and z~ (where the CIP is solved): d = {dim}.", ""]
    lines += ["| Method | s / sample, measured (std) / paper (std) | exact per-sample time / this | accuracy (%) | "
              "feature error vs exact | n |", "|---|---|---|---|---|---|"]
    for r in records:
        meas = f"{f(r['measured_mean_s'], '.4g')} ({f(r['measured_std_s'], '.2g')})"
        pap = "–" if r["paper_mean_s"] is None else f"{r['paper_mean_s']:.4g} ({r['paper_std_s']:.3g})"
        err = "0 (reference)" if r["method"].startswith("OTAD-T, exact") else f(r["feature_rel_error_vs_exact"], ".2e")
        lines.append(f"| {r['method']} | {meas} / {pap} | {f(r['speed_vs_exact_per_sample'], '.3g')} | "
                     f"{f(r['accuracy'], '.1f')} | {err} | {r['n']} |")
    lines += ["", "## How these numbers were made", ""]
    if rec and "exact_step_s" in rec.vals:
        (em, es, _), (cm, cs, _) = _stats(rec.vals["exact_step_s"]), _stats(rec.vals["cipnet_step_s"])
        lines += [f"- The CIP step alone, one sample per call (no embedding, DML-net, search or head): exact solver "
                  f"{em:.4g} s ({es:.2g}), CIP-net {cm:.4g} s ({cs:.2g}), ratio {em / cm:.3g}."]
    if rec:
        agree = _stats(rec.vals["agree"])[0]
        lines += [f"- CIP-net and the exact solver predict the same class on {100 * agree:.1f}% of the {len(rec.sample_ids)} "
                  f"samples; feature error = mean ||g - g_exact|| / ||g_exact|| (the conic solver is given the exact "
                  f"solver's least Brenier potentials for this comparison; its timed run solves every LP of Algorithm 2). "
                  f"Accuracies are over each row's own samples (the conic rows: the first {table.conic_n}).",
                  f"- {len(rec.sample_ids)} test samples (subset seed {rec.identity['subset_seed']}), "
                  f"{rec.wall_seconds:.0f} s on {rec.machine}, {rec.device}; `{rec.command}`",
                  "- Every time covers the whole inference of one sample: patch embedding, DML-net, exact K-NN, CIP step "
                  "(or CIP-net), classifier. Defenses: `otad-t-dml` and `otad-t-nn-dml` with `--set train.dml_arch=resnet3`."]
    else:
        lines.append("No measured value yet (`otbench report --fill --tables " + table.name + "`).")
    md_path.write_text("\n".join(lines) + "\n")
    paths = [csv_path, md_path]
    if rec:
        paths.append(_timing_figure(table, records, out_dir / f"{table.name}.png"))
    return paths


def _timing_figure(table: TimingTable, records: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    short = ["OTAD-T\nconic (cvxpy)", "OTAD-T\nexact, 1/call", "OTAD-T\nexact, batched", "OTAD-T-NN\n(CIP-net)"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(records))
    ax.bar([x - 0.2 for x in xs], [r["measured_mean_s"] or 0 for r in records], 0.4,
           yerr=[r["measured_std_s"] or 0 for r in records], capsize=3,
           label=f"measured ({DATASETS.get(table.dataset, table.dataset)}, 2-core CPU)")
    ax.bar([x + 0.2 for x in xs], [r["paper_mean_s"] or 0 for r in records], 0.4, hatch="//", alpha=0.6,
           label="paper (CIFAR-10, MOSEK / GPU)")
    ax.set_xticks(list(xs), short, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("inference time per sample (s, log scale)")
    ax.set_title(textwrap.fill(f"Table IX: {table.title}", 90), fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _table_9(name: str, dataset: str) -> TimingTable:
    suffix = "" if dataset == "cifar10" else f" [measured on {DATASETS[dataset]}; paper values: CIFAR-10]"
    return TimingTable(name=name, title="Average inference time (standard deviation) per sample, seconds" + suffix,
                       paper="otad", paper_table="IX", dataset=dataset, paper_dataset="cifar10",
                       note=_other_dataset_note(dataset) + "OTAD-T with a 3-block ResNet DML-net (V-F); K = 10, L = 2, "
                            "l = 0, delta1 = delta2 = 1.")


_both("otad-table-9", _table_9)
