"""The OT-Classifier paper's tables and figures (papers/ot-classifier.txt): Table 1 (one table per dataset), Table 3,
Figures 2, 3, 4, 6 (accuracy vs PGD eps curves) and Figure 5 (t-SNE of clean and adversarial codes).

Attack: l-inf PGD, untargeted (section 4.1). The paper gives no step count or step size, so every cell here is
the harness's `pgd` with Madry et al.'s MNIST evaluation budget of 40 steps (step 2.5 eps / 40, random start);
Table 1 and Figures 2, 3 share their cells (same attack, eps and defense config). The curve figures, Table 3 and
Figure 5 fill and render themselves (`fill`, `render`; `otbench report` dispatches to them); datasets that are not
on this machine are skipped by `--fill` with a message, and their cells stay `not run`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otbench.errors import OTBenchError
from otbench.registry import DEFENSES, register_table
from otbench.report.paper import paper_value
from otbench.report.spec import Column, Row, TableSpec

PGD_OVERRIDES: dict[str, Any] = {"steps": 40}  # Madry et al.'s MNIST evaluation budget (the paper gives none)
MNIST_GRID = tuple(round(0.025 * i, 3) for i in range(17))  # section 4.1: "from 0 to 0.4 by 0.025"
MNIST_COARSE = tuple(round(0.05 * i, 2) for i in range(9))  # Figures 4 and 6: every second point of the grid
TABLE1_EPS = {"mnist": (0.0, 0.1, 0.2, 0.3, 0.4), "cifar10": (0.0, 0.015, 0.03, 0.045, 0.06),
              "stl10": (0.0, 0.015, 0.03, 0.045, 0.06), "tiny-imagenet": (0.0, 0.004, 0.01, 0.016, 0.02)}
DATA_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR10", "stl10": "STL10", "tiny-imagenet": "Tiny Imagenet"}
PGD_NOTE = ("Attack: l-inf PGD, untargeted, 40 steps of 2.5 eps / 40 from a random start (the paper gives no step "
            "count; 40 is Madry et al.'s MNIST evaluation). Cell at eps = 0: clean accuracy.")


def _pgd_columns(eps: tuple[float, ...]) -> tuple[Column, ...]:
    return tuple(Column(f"eps={e:g}", "pgd", e, "robust", f"eps={e:g}", dict(PGD_OVERRIDES)) for e in eps)


@dataclass(frozen=True)
class OTCTable(TableSpec):
    """A plain attack-cell table whose `--fill` skips a dataset that is not on this machine."""

    def fill(self, store, args: argparse.Namespace) -> None:
        from otbench.report.fill import fill_table

        try:
            fill_table(self, store, args)
        except OTBenchError as exc:
            if not str(exc).startswith(self.dataset):
                raise
            print(f"{self.name}: skipped, {exc}", file=sys.stderr)

    def render(self, store, out_dir: Path, preset: str, fallback: str | None = None) -> list[Path]:
        from otbench.report.render import render_table

        return render_table(self, store, Path(out_dir), preset, fallback)


@dataclass(frozen=True)
class CurveFigure(OTCTable):
    """Accuracy vs PGD eps, one series per row, drawn as the paper draws its Figures 2-4 and 6 (series names of
    the paper; a series whose defense is not registered is listed in the legend as not available)."""

    figure_title: str = ""

    def render(self, store, out_dir: Path, preset: str, fallback: str | None = None) -> list[Path]:
        from otbench.report.render import collect, render_table

        paths = render_table(self, store, Path(out_dir), preset, fallback)
        cells = collect(self, store, preset, fallback)
        if any(c.measured is not None for c in cells):
            paths.append(curve_png(self, cells, preset, Path(out_dir) / f"{self.name}.png"))
        return paths


def curve_png(spec: CurveFigure, cells, preset: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from otbench.report.render import row_label

    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    ns = sorted({c.n for c in cells if c.status == "measured"})
    for i, row in enumerate(spec.rows):
        mine = [c for c in cells if c.row.label == row.label]
        color = f"C{i % 10}"
        pts = sorted((c.column.eps, c.measured) for c in mine if c.measured is not None)
        paper = sorted((c.column.eps, c.paper) for c in mine if c.paper is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=3, color=color, label=row_label(mine[0]))
        elif row.defense not in DEFENSES:
            ax.plot([], [], " ", label=f"{row.label}: not available (`{row.defense}` not registered)")
        else:
            ax.plot([], [], " ", label=f"{row.label}: not run")
        if paper:
            ax.plot([p[0] for p in paper], [p[1] for p in paper], "x", ms=8, mew=2, color=color,
                    label=f"{row.label} (paper, Table 1)")
    ax.set_xlabel("epsilon (strength of the attack, l-inf PGD)")
    ax.set_ylabel("testing accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    n_text = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}..{ns[-1]}" if ns else ""
    shown = sorted({c.preset for c in cells if c.status == "measured"}) or [preset]  # a fallback row's too
    ax.set_title(f"{spec.figure_title or spec.title}\n{DATA_NAMES.get(spec.dataset, spec.dataset)}, preset "
                 f"{' + '.join(f'`{p}`' for p in shown)}, {n_text}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


# -- Table 1 ---------------------------------------------------------------------------------------------------
def _table_1(dataset: str) -> OTCTable:
    return OTCTable(
        name=f"otc-table-1-{dataset}", title=f"Testing accuracy (%) under l-inf PGD on {DATA_NAMES[dataset]} "
                                             "(OT-Classifier Table 1)",
        paper="ot-classifier", paper_table="1", dataset=dataset,
        rows=(Row("Adv. Training", "cnn-pgd-at", "Adv. Training"), Row("OT-CLA+Adv", "ot-cla-adv", "OT-CLA+Adv")),
        columns=_pgd_columns(TABLE1_EPS[dataset]),
        note=PGD_NOTE + " Adv. Training: `cnn-pgd-at`, Madry PGD training of the CNN with OT-CLA's convolutions and a "
             "wide layer in place of the code; OT-CLA+Adv: `ot-cla-adv`; both at Supplement A's training eps "
             "(0.3 MNIST, 0.03 CIFAR-10 and STL-10, 0.01 Tiny ImageNet).")


for _ds in TABLE1_EPS:
    register_table(f"otc-table-1-{_ds}")(lambda _ds=_ds: _table_1(_ds))


# -- Figures 2, 3, 4, 6 (MNIST) ---------------------------------------------------------------------------------
@register_table("otc-figure-2")
def otc_figure_2() -> CurveFigure:
    return CurveFigure(
        name="otc-figure-2", title="Testing accuracy under l-inf PGD on MNIST (OT-Classifier Figure 2)",
        paper="ot-classifier", paper_table="1", dataset="mnist",
        rows=(Row("No Defense", "cnn-standard"), Row("Madry's Adv", "cnn-pgd-at", "Adv. Training"),
              Row("OT-CLA", "ot-cla"), Row("OT-CLA+Adv", "ot-cla-adv", "OT-CLA+Adv"), Row("RSE", "rse")),
        columns=_pgd_columns(MNIST_GRID),
        note=PGD_NOTE + " Series: No Defense `cnn-standard`, Madry's Adv `cnn-pgd-at` (eps 0.3), OT-CLA `ot-cla`, "
             "OT-CLA+Adv `ot-cla-adv` (eps 0.3), RSE `rse` (another branch; `n/a` while not registered). The paper "
             "gives Figure 2 only as a plot: the paper values shown are Table 1's points.",
        figure_title="Figure 2: testing accuracy under l-inf PGD")


@register_table("otc-figure-3")
def otc_figure_3() -> CurveFigure:
    return CurveFigure(
        name="otc-figure-3", title="E-CLA vs OT-Classifier under l-inf PGD on MNIST (OT-Classifier Figure 3)",
        paper="ot-classifier", paper_table="3 (figure)", dataset="mnist",
        rows=(Row("No Defense", "cnn-standard"), Row("OT-CLA", "ot-cla"), Row("E-CLA", "e-cla")),
        columns=_pgd_columns(MNIST_GRID),
        note=PGD_NOTE + " E-CLA: OT-CLA's encoder and classifier trained without the critic (section 4.2). The paper "
             "gives Figure 3 only as a plot (no values).",
        figure_title="Figure 3: E-CLA vs OT-Classifier")


FIG4_DIMS = (2, 4, 8, 13, 16)  # around Table 3's MNIST values: embedding 4, intrinsic 13


@register_table("otc-figure-4")
def otc_figure_4() -> CurveFigure:
    rows = tuple(Row(f"OT-CLA n_z={k}", "ot-cla", None, {} if k == 4 else {"train": {"n_z": k}}) for k in FIG4_DIMS)
    return CurveFigure(
        name="otc-figure-4", title="OT-CLA with different embedding dimensions under l-inf PGD on MNIST "
                                   "(OT-Classifier Figure 4)",
        paper="ot-classifier", paper_table="4 (figure)", dataset="mnist", rows=rows,
        columns=_pgd_columns(MNIST_COARSE),
        note=PGD_NOTE + " Rows: `ot-cla` with `--set train.n_z=K` (n_z = 4 is Table 3's choice, the preset's "
             "default; 13 is the paper's MLE intrinsic dimension of MNIST). Eps every 0.05. The paper gives Figure 4 "
             "only as a plot.",
        figure_title="Figure 4: embedding dimensions (OT-CLA)")


FIG6_EPS = (0.25, 0.3, 0.35, 0.4)  # Supplement A, Figure 6 (MNIST)


@register_table("otc-figure-6")
def otc_figure_6() -> CurveFigure:
    rows = tuple(Row(f"Madry:epsilon={e:.2f}", "cnn-pgd-at", None, {} if e == 0.3 else {"train": {"adv_eps": e}})
                 for e in FIG6_EPS)
    return CurveFigure(
        name="otc-figure-6", title="Madry adversarial training with different training eps, under l-inf PGD on MNIST "
                                   "(OT-Classifier Figure 6)",
        paper="ot-classifier", paper_table="6 (figure)", dataset="mnist", rows=rows,
        columns=_pgd_columns(MNIST_COARSE),
        note=PGD_NOTE + " Rows: `cnn-pgd-at` trained at eps 0.25, 0.30 (Supplement A's choice, the default), 0.35, "
             "0.40. Eps every 0.05. The paper gives Figure 6 only as a plot.",
        figure_title="Figure 6: tuning Madry's training epsilon")


# -- Table 3 and Figure 5: analyses stored in the results database ------------------------------------------------
TABLE3_SHAPES = {"mnist": "1 x 28 x 28", "cifar10": "3 x 32 x 32", "stl10": "3 x 96 x 96",
                 "tiny-imagenet": "3 x 64 x 64"}


@dataclass(frozen=True)
class IntrinsicTable(TableSpec):
    """Table 3: the MLE intrinsic dimension of each dataset's pixels (1,000 training samples) and the embedding
    dimension OT-CLA uses, beside the paper's."""

    n_samples: int = 1000
    mle: dict[str, Any] = field(default_factory=lambda: {"k1": 6, "k2": 12, "estimator": "levina", "seed": 0})

    def identity(self, dataset: str) -> dict[str, Any]:
        return {"analysis": "intrinsic-dimension", "defense": {"name": "pixels", "dataset": dataset},
                "params": {**self.mle, "n": self.n_samples, "split": "train"}, "subset_seed": self.mle["seed"]}

    def fill(self, store, args: argparse.Namespace) -> None:
        import numpy as np

        from otbench.defenses.ot_classifier.intrinsic import mle_intrinsic_dimension

        from otbench.data import load_dataset
        from otbench.papers.otad.analyses import save_analysis, stored_analysis

        for ds in TABLE3_SHAPES:
            ident = self.identity(ds)
            if stored_analysis(store, ident) is not None:
                continue
            try:
                data = load_dataset(ds, args.data_root)
            except OTBenchError as exc:
                print(f"{self.name}: {ds} skipped, {exc}", file=sys.stderr)
                continue
            ids = np.random.default_rng(self.mle["seed"]).permutation(len(data.x_train))[:self.n_samples].tolist()
            start = time.time()
            dim = mle_intrinsic_dimension(data.x_train[ids].flatten(1).double(), self.mle["k1"], self.mle["k2"],
                                          self.mle["estimator"])
            save_analysis(store, ident, ids, {"dimension": [dim]}, time.time() - start, "cpu")

    def render(self, store, out_dir: Path, preset: str, fallback: str | None = None) -> list[Path]:
        # `fallback` is unused: these results are analyses of one preset's models, not rows of cells
        import pandas as pd

        from otbench.defenses.ot_classifier.settings import EMBEDDING_DIM

        from otbench.papers.otad.analyses import stored_analysis

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        records, lines = [], []
        for ds, shape in TABLE3_SHAPES.items():
            rec = stored_analysis(store, self.identity(ds))
            mle = rec["vals"]["dimension"][0] if rec else None
            p_mle = paper_value("ot-classifier", "3", ds, "intrinsic", "mle", "dimension")
            p_emb = paper_value("ot-classifier", "3", ds, "embedding", "chosen", "dimension")
            records.append({"dataset": ds, "data_dim": shape, "mle": None if mle is None else round(mle, 2),
                            "paper_mle": p_mle, "embedding": EMBEDDING_DIM[ds], "paper_embedding": p_emb,
                            "n": len(rec["sample_ids"]) if rec else 0})
            mle_text = "not run" if mle is None else f"{mle:.1f}"
            gap = "" if mle is None or p_mle is None else f" ({mle - p_mle:+.1f})"
            lines.append(f"| {DATA_NAMES[ds]} | {shape} | {mle_text} / {p_mle:g}{gap} | {EMBEDDING_DIM[ds]} / "
                         f"{p_emb:g} | {records[-1]['n']} |")
            if rec:
                records[-1]["made"] = (f"- {DATA_NAMES[ds]}: {rec['wall_seconds']:.1f} s on {rec['machine']}, "
                                       f"{rec['device']}; `{rec['command']}`")
        csv_path, md_path = out_dir / f"{self.name}.csv", out_dir / f"{self.name}.md"
        pd.DataFrame.from_records([{k: v for k, v in r.items() if k != "made"} for r in records]).to_csv(
            csv_path, index=False)
        est = self.mle
        md = [f"# {self.title}", "", f"papers/{self.paper}.txt, Table {self.paper_table}; preset `{preset}` (the "
              "estimate does not depend on it). Each cell: **measured / paper (gap)**.", "",
              f"Intrinsic dim.: Levina-Bickel MLE ({est['estimator']}, k = {est['k1']}..{est['k2']}, hub-toolbox's "
              f"defaults; defenses/ot_classifier/intrinsic.py) on {self.n_samples} training images drawn with seed "
              f"{est['seed']}, pixels in [0, 1] flattened. Embedding dim.: what `ot-cla` uses "
              "(defenses/ot_classifier/settings.py, from Table 3) / the paper's choice. Datasets not on this machine "
              "stay `not run`.", "",
              "| Data | Data dim. | Intrinsic dim. (MLE) | Embedding dim. | n |", "|---|---|---|---|---|", *lines,
              "", "## How these numbers were made", ""]
        made = [r["made"] for r in records if "made" in r]
        md += made or ["No measured value yet."]
        md_path.write_text("\n".join(md) + "\n")
        return [csv_path, md_path]


@register_table("otc-table-3")
def otc_table_3() -> IntrinsicTable:
    return IntrinsicTable(name="otc-table-3", title="Pixel space, intrinsic and embedding dimensions (OT-Classifier "
                                                    "Table 3)", paper="ot-classifier", paper_table="3",
                          dataset="mnist,cifar10,stl10,tiny-imagenet", rows=(), columns=())


@dataclass(frozen=True)
class EmbeddingFigure(TableSpec):
    """Figure 5: t-SNE of the codes of clean and of PGD images for E-CLA and OT-CLA, misclassified points marked."""

    eps: float = 0.1
    max_n: int = 500
    perplexity: float = 30.0
    seed: int = 0
    models: tuple[tuple[str, str], ...] = (("E-CLA", "e-cla"), ("OT-classifier", "ot-cla"))

    def identity(self, defense: str, preset: str, n: int, subset_seed: int) -> dict[str, Any] | None:
        from otbench.defense import build_config

        if defense not in DEFENSES or preset not in DEFENSES.get(defense).presets:
            return None
        return {"analysis": "tsne-embedding", "defense": {**build_config(DEFENSES.get(defense), preset, None),
                                                          "name": defense, "dataset": self.dataset},
                "params": {"eps": self.eps, "attack": "pgd", **PGD_OVERRIDES, "n": n, "perplexity": self.perplexity,
                           "seed": self.seed}, "subset_seed": subset_seed}

    def fill(self, store, args: argparse.Namespace) -> None:
        import torch
        from sklearn.manifold import TSNE

        from otbench.defenses.ot_classifier.analysis import gaussian_energy_distance

        from otbench.data import eval_subset, load_dataset
        from otbench.defense import create_defense
        from otbench.provenance import device_name, resolve_device
        from otbench.registry import ATTACKS
        from otbench.papers.otad.analyses import save_analysis, stored_analysis

        n = min(args.n, self.max_n)
        data = load_dataset(self.dataset, args.data_root)
        device = resolve_device(args.device)
        subset = eval_subset(len(data.x_test), n, args.subset_seed)
        for _, name in self.models:
            ident = self.identity(name, args.preset, n, args.subset_seed)
            if ident is None or stored_analysis(store, ident) is not None:
                continue
            start = time.time()
            defense = create_defense(name, data, args.preset, None, device)
            ids = torch.tensor(subset.ids)
            x, y = data.x_test[ids], data.y_test[ids]
            adv = ATTACKS.get("pgd")(defense, self.eps, **PGD_OVERRIDES)(x, y, seed=args.seed).adv
            z, z_adv = defense.embed(x), defense.embed(adv)
            vals: dict[str, list[float]] = {"label": y.tolist(), "clean_pred": defense.predict(x).tolist(),
                                            "adv_pred": defense.predict(adv).tolist(),
                                            "energy_clean": [gaussian_energy_distance(z, self.seed)],
                                            "energy_adv": [gaussian_energy_distance(z_adv, self.seed)]}
            for key, codes in (("clean", z), ("adv", z_adv)):
                xy = TSNE(2, perplexity=min(self.perplexity, (len(codes) - 1) / 3), random_state=self.seed,
                          init="pca").fit_transform(codes.double().numpy())
                vals[f"{key}_x"], vals[f"{key}_y"] = xy[:, 0].tolist(), xy[:, 1].tolist()
            save_analysis(store, ident, list(subset.ids), vals, time.time() - start, device_name(device))

    def _stored(self, store, preset: str) -> dict[str, dict[str, Any]]:
        """The stored record of each model with the most samples."""
        out = {}
        for label, name in self.models:
            cur = store.db.execute("SELECT key FROM analyses WHERE kind = ? AND defense = ? AND dataset = ?",
                                   ("tsne-embedding", name, self.dataset))
            best = None
            for (key,) in cur.fetchall():
                rec = _by_key(store, key)
                ident = json.loads(rec["identity"])
                if ident["defense"].get("preset") != preset or ident["params"]["eps"] != self.eps:
                    continue
                if best is None or len(rec["sample_ids"]) > len(best["sample_ids"]):
                    best = rec
            if best is not None:
                out[label] = best
        return out

    def render(self, store, out_dir: Path, preset: str, fallback: str | None = None) -> list[Path]:
        # `fallback` is unused: these results are analyses of one preset's models, not rows of cells
        import matplotlib

        matplotlib.use("Agg")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        recs = self._stored(store, preset)
        md_path = out_dir / f"{self.name}.md"
        lines = [f"# {self.title}", "", f"papers/{self.paper}.txt, Figure 5; dataset `{self.dataset}`, preset "
                 f"`{preset}`. t-SNE (scikit-learn, perplexity {self.perplexity:g}, PCA start, seed {self.seed}) of "
                 f"the codes Q(x) of clean test images and, separately, of their l-inf PGD images (eps = "
                 f"{self.eps:g}, 40 steps; the paper gives no eps for this figure) made against each model itself. "
                 "Colour: true class; dot: the model classifies the image right; down triangle: wrong. Energy "
                 "distance: between the codes and as many N(0, I) samples (0 when the codes are exactly Gaussian; "
                 "the critic's target).", "",
                 "| Model | n | clean acc. (%) | PGD acc. (%) | energy distance to N(0, I), clean codes | "
                 "adversarial codes |", "|---|---|---|---|---|---|"]
        made = []
        for label, rec in recs.items():
            v = rec["vals"]
            n = len(v["label"])
            clean = 100 * sum(p == t for p, t in zip(v["clean_pred"], v["label"])) / n
            rob = 100 * sum(p == t and c == t for p, c, t in zip(v["adv_pred"], v["clean_pred"], v["label"])) / n
            lines.append(f"| {label} | {n} | {clean:.1f} | {rob:.1f} | {v['energy_clean'][0]:.3f} | "
                         f"{v['energy_adv'][0]:.3f} |")
            made.append(f"- {label}: {rec['wall_seconds']:.0f} s on {rec['machine']}, {rec['device']}; "
                        f"`{rec['command']}`")
        if not recs:
            lines.append("| not run | | | | | |")
        lines += ["", "## How these numbers were made", "", *(made or ["No measured value yet."])]
        md_path.write_text("\n".join(lines) + "\n")
        paths = [md_path]
        if recs:
            paths.append(self._plot(recs, out_dir / f"{self.name}.png"))
        return paths

    def _plot(self, recs: dict[str, dict[str, Any]], path: Path) -> Path:
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        fig, axes = plt.subplots(len(recs), 2, figsize=(11.5, 4.6 * len(recs)), squeeze=False)
        for r, (label, rec) in enumerate(recs.items()):
            v = rec["vals"]
            for c, (key, pred, what) in enumerate((("clean", "clean_pred", "Original"),
                                                   ("adv", "adv_pred", "Adversarial"))):
                ax = axes[r][c]
                for marker, right in (("o", True), ("v", False)):
                    idx = [i for i, (p, t) in enumerate(zip(v[pred], v["label"])) if (p == t) == right]
                    ax.scatter([v[f"{key}_x"][i] for i in idx], [v[f"{key}_y"][i] for i in idx],
                               c=[v["label"][i] for i in idx], cmap="tab10", vmin=-0.5, vmax=9.5, marker=marker,
                               s=10 if right else 22, linewidths=0.3, edgecolors="k" if not right else "none")
                ax.set_title(f"{what} Embedding of {label} on {DATA_NAMES.get(self.dataset, self.dataset)}"
                             + (f" (PGD eps={self.eps:g})" if key == "adv" else ""), fontsize=9)
                ax.set_xlabel("t-SNE 1")
                ax.set_ylabel("t-SNE 2")
                handles = [Line2D([], [], marker="o", ls="", color="0.4", label="Classified Right"),
                           Line2D([], [], marker="v", ls="", color="0.4", markeredgecolor="k", label="Classified Wrong")]
                handles += [Line2D([], [], marker="s", ls="", color=plt.get_cmap("tab10")(k), label=str(k))
                            for k in range(10)]
                if c == 1:  # one legend per row, outside the axes
                    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                              title="marker / true class", title_fontsize=7)
        fig.suptitle(f"{self.title} (n = {len(next(iter(recs.values()))['vals']['label'])})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=150)
        plt.close(fig)
        return path


def _by_key(store, key: str) -> dict[str, Any]:
    cur = store.db.execute("SELECT * FROM analyses WHERE key = ?", (key,))
    names = [c[0] for c in cur.description]
    rec = dict(zip(names, cur.fetchone()))
    rec["sample_ids"], rec["vals"] = json.loads(rec["sample_ids"]), json.loads(rec["vals"])
    return rec


@register_table("otc-figure-5")
def otc_figure_5() -> EmbeddingFigure:
    return EmbeddingFigure(name="otc-figure-5", title="2D embeddings of E-CLA and OT-Classifier on MNIST "
                                                      "(OT-Classifier Figure 5)",
                           paper="ot-classifier", paper_table="5 (figure)", dataset="mnist", rows=(), columns=())
