"""The OT-Classifier paper's tables and figures (papers/ot-classifier.txt): Table 1 (one table per dataset), Table 3,
Figures 2, 3, 4, 6 (accuracy vs PGD eps curves) and Figure 5 (t-SNE of clean and adversarial codes).

Attack: l-inf PGD, untargeted (section 4.1). The paper gives no step count or step size, so every cell here is
the harness's `pgd` with Madry et al.'s MNIST evaluation budget of 40 steps (step 2.5 eps / 40, random start);
Table 1 and Figures 2, 3 share their cells (same attack, eps and defense config). Table 3 and Figure 5 are
analysis tables (otbench/report/analysis.py): the intrinsic dimension of the data, and codes of clean and PGD
images stored per sample. Datasets that are not on this machine are skipped by `--fill` with a message, and
their cells stay `not run`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from otbench.data import Dataset
from otbench.defense import Defense
from otbench.defenses.ot_classifier.analysis import gaussian_energy_distance
from otbench.defenses.ot_classifier.intrinsic import mle_intrinsic_dimension
from otbench.defenses.ot_classifier.settings import EMBEDDING_DIM
from otbench.registry import register_table
from otbench.report.analysis import Analysis, AnalysisTable, Metric, Section, Value
from otbench.report.spec import Column, Row, TableSpec
from otbench.runner import attacked_inputs

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


# -- Table 1 ---------------------------------------------------------------------------------------------------
def _table_1(dataset: str) -> TableSpec:
    return TableSpec(
        name=f"otc-table-1-{dataset}", title=f"Testing accuracy (%) under l-inf PGD on {DATA_NAMES[dataset]} "
                                             "(OT-Classifier Table 1)",
        paper="ot-classifier", paper_table="1", dataset=dataset,
        rows=(Row("Adv. Training", "cnn-pgd-at", "Adv. Training"), Row("OT-CLA+Adv", "ot-cla-adv", "OT-CLA+Adv")),
        columns=_pgd_columns(TABLE1_EPS[dataset]),
        note=PGD_NOTE + " Adv. Training: `cnn-pgd-at`, Madry PGD training (preset `paper`: the authors' BasicCNN "
             "trained as Madry et al.'s MNIST challenge; `quick`: OT-CLA's convolutions with a wide layer in place of "
             "the code); OT-CLA+Adv: `ot-cla-adv` (preset `paper`: the authors' train_ot.py settings); both at "
             "Supplement A's training eps (0.3 MNIST, 0.03 CIFAR-10 and STL-10, 0.01 Tiny ImageNet).")


for _ds in TABLE1_EPS:
    register_table(f"otc-table-1-{_ds}")(lambda _ds=_ds: _table_1(_ds))


# -- Figures 2, 3, 4, 6 (MNIST) ---------------------------------------------------------------------------------
@register_table("otc-figure-2")
def otc_figure_2() -> TableSpec:
    return TableSpec(
        name="otc-figure-2", title="Testing accuracy under l-inf PGD on MNIST (OT-Classifier Figure 2)",
        paper="ot-classifier", paper_table="1", dataset="mnist",
        rows=(Row("No Defense", "cnn-standard"), Row("Madry's Adv", "cnn-pgd-at", "Adv. Training"),
              Row("OT-CLA", "ot-cla"), Row("OT-CLA+Adv", "ot-cla-adv", "OT-CLA+Adv"), Row("RSE", "rse")),
        columns=_pgd_columns(MNIST_GRID),
        note=PGD_NOTE + " Series: No Defense `cnn-standard`, Madry's Adv `cnn-pgd-at` (eps 0.3), OT-CLA `ot-cla`, "
             "OT-CLA+Adv `ot-cla-adv` (eps 0.3), RSE `rse` (another branch; `n/a` while not registered). The paper "
             "gives Figure 2 only as a plot: the paper values shown are Table 1's points.",
        figure=True, figure_style="curve", figure_title="Figure 2: testing accuracy under l-inf PGD")


@register_table("otc-figure-3")
def otc_figure_3() -> TableSpec:
    return TableSpec(
        name="otc-figure-3", title="E-CLA vs OT-Classifier under l-inf PGD on MNIST (OT-Classifier Figure 3)",
        paper="ot-classifier", paper_table="3 (figure)", dataset="mnist",
        rows=(Row("No Defense", "cnn-standard"), Row("OT-CLA", "ot-cla"), Row("E-CLA", "e-cla")),
        columns=_pgd_columns(MNIST_GRID),
        note=PGD_NOTE + " E-CLA: OT-CLA's encoder and classifier trained without the critic (section 4.2). The paper "
             "gives Figure 3 only as a plot (no values).",
        figure=True, figure_style="curve", figure_title="Figure 3: E-CLA vs OT-Classifier")


FIG4_DIMS = (2, 4, 8, 13, 16)  # around Table 3's MNIST values: embedding 4, intrinsic 13


@register_table("otc-figure-4")
def otc_figure_4() -> TableSpec:
    rows = tuple(Row(f"OT-CLA n_z={k}", "ot-cla", None, {} if k == 4 else {"train": {"n_z": k}}) for k in FIG4_DIMS)
    return TableSpec(
        name="otc-figure-4", title="OT-CLA with different embedding dimensions under l-inf PGD on MNIST "
                                   "(OT-Classifier Figure 4)",
        paper="ot-classifier", paper_table="4 (figure)", dataset="mnist", rows=rows,
        columns=_pgd_columns(MNIST_COARSE),
        note=PGD_NOTE + " Rows: `ot-cla` with `--set train.n_z=K` (n_z = 4 is Table 3's choice, the preset's "
             "default; 13 is the paper's MLE intrinsic dimension of MNIST). Eps every 0.05. The paper gives Figure 4 "
             "only as a plot.",
        figure=True, figure_style="curve", figure_title="Figure 4: embedding dimensions (OT-CLA)")


FIG6_EPS = (0.25, 0.3, 0.35, 0.4)  # Supplement A, Figure 6 (MNIST)


@register_table("otc-figure-6")
def otc_figure_6() -> TableSpec:
    rows = tuple(Row(f"Madry:epsilon={e:.2f}", "cnn-pgd-at", None, {} if e == 0.3 else {"train": {"adv_eps": e}})
                 for e in FIG6_EPS)
    return TableSpec(
        name="otc-figure-6", title="Madry adversarial training with different training eps, under l-inf PGD on MNIST "
                                   "(OT-Classifier Figure 6)",
        paper="ot-classifier", paper_table="6 (figure)", dataset="mnist", rows=rows,
        columns=_pgd_columns(MNIST_COARSE),
        note=PGD_NOTE + " Rows: `cnn-pgd-at` trained at eps 0.25, 0.30 (Supplement A's choice, the default), 0.35, "
             "0.40. Eps every 0.05. The paper gives Figure 6 only as a plot.",
        figure=True, figure_style="curve", figure_title="Figure 6: tuning Madry's training epsilon")


# -- Table 3: intrinsic dimensions of the data ------------------------------------------------------------------
TABLE3_SHAPES = {"mnist": "1 x 28 x 28", "cifar10": "3 x 32 x 32", "stl10": "3 x 96 x 96",
                 "tiny-imagenet": "3 x 64 x 64"}
MLE = {"k1": 6, "k2": 12, "estimator": "levina", "seed": 0, "n": 1000, "split": "train"}


def intrinsic_dimension(data: Dataset, params: dict[str, Any]) -> tuple[list[int], dict[str, list[float]]]:
    """The Levina-Bickel MLE of the pixels' intrinsic dimension on `n` training images drawn by `seed`."""
    ids = np.random.default_rng(params["seed"]).permutation(len(data.x_train))[:params["n"]].tolist()
    dim = mle_intrinsic_dimension(data.x_train[ids].flatten(1).double(), params["k1"], params["k2"],
                                  params["estimator"])
    return ids, {"dimension": [dim]}


@register_table("otc-table-3")
def otc_table_3() -> AnalysisTable:
    pixels = Row("pixels", "", None)
    sections = tuple(Section(f"{DATA_NAMES[ds]} ({shape})", ds, rows=(pixels,))
                     for ds, shape in TABLE3_SHAPES.items())
    return AnalysisTable(
        name="otc-table-3", title="Pixel space, intrinsic and embedding dimensions (OT-Classifier Table 3)",
        paper="ot-classifier", paper_table="3", dataset=",".join(TABLE3_SHAPES), sections=sections,
        analyses=(Analysis("intrinsic-dimension", intrinsic_dimension, MLE, subject="data"),),
        metrics=(Metric("Intrinsic dim. (MLE)", "analysis", "dimension", analysis="intrinsic-dimension",
                        value="dimension", paper_method="intrinsic", paper_setting="mle"),
                 Metric("Embedding dim.", "constant", "dimension", 0, paper_method="embedding", paper_setting="chosen",
                        constants={f"{DATA_NAMES[ds]} ({shape})": float(EMBEDDING_DIM[ds])
                                   for ds, shape in TABLE3_SHAPES.items()})),
        note=f"Intrinsic dim.: Levina-Bickel MLE ({MLE['estimator']}, k = {MLE['k1']}..{MLE['k2']}, hub-toolbox's "
             f"defaults; otbench/defenses/ot_classifier/intrinsic.py) on {MLE['n']} training images drawn with seed "
             f"{MLE['seed']}, pixels in [0, 1] flattened; it does not depend on the preset. Embedding dim.: what "
             "`ot-cla` uses (otbench/defenses/ot_classifier/settings.py, from Table 3) / the paper's choice. Datasets "
             "not on this machine stay `not run`.")


# -- Figure 5: t-SNE of clean and adversarial codes -------------------------------------------------------------
TSNE = {"eps": 0.1, "attack": "pgd", **PGD_OVERRIDES, "perplexity": 30.0, "seed": 0}


def tsne_codes(defense: Defense, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any],
               seed: int) -> dict[str, list[float]]:
    """Predictions, energy distances to N(0, I) and 2-D t-SNE coordinates of the codes of x and of its PGD images
    (made against the defense itself, through the runner's guard)."""
    from sklearn.manifold import TSNE as TSNEMap

    adv = attacked_inputs(defense, params["attack"], params["eps"], {"steps": params["steps"]}, x, y, seed)
    z, z_adv = defense.embed(x), defense.embed(adv)
    vals: dict[str, list[float]] = {"label": y.tolist(), "clean_pred": defense.predict(x).tolist(),
                                    "adv_pred": defense.predict(adv).tolist(),
                                    "energy_clean": [gaussian_energy_distance(z, params["seed"])],
                                    "energy_adv": [gaussian_energy_distance(z_adv, params["seed"])]}
    for key, codes in (("clean", z), ("adv", z_adv)):
        xy = TSNEMap(2, perplexity=min(params["perplexity"], (len(codes) - 1) / 3), random_state=params["seed"],
                     init="pca").fit_transform(codes.double().numpy())
        vals[f"{key}_x"], vals[f"{key}_y"] = xy[:, 0].tolist(), xy[:, 1].tolist()
    return vals


def _accuracy(v: dict[str, list[Any]], robust: bool) -> float:
    right = [p == t and (not robust or c == t) for p, c, t in
             zip(v["adv_pred"] if robust else v["clean_pred"], v["clean_pred"], v["label"])]
    return 100.0 * sum(right) / len(right)


def tsne_figure(table: AnalysisTable, values: list[Value], path: Path) -> Path:
    """Figure 5: per model, the t-SNE of the clean codes and of the adversarial ones, misclassified points marked."""
    recs = {v.row.label: v.record for v in values if v.record is not None}
    return _plot(table, recs, path)


def _plot(table: AnalysisTable, recs: dict[str, Any], path: Path) -> Path:
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        fig, axes = plt.subplots(len(recs), 2, figsize=(11.5, 4.6 * len(recs)), squeeze=False)
        for r, (label, rec) in enumerate(recs.items()):
            v = rec.vals
            for c, (key, pred, what) in enumerate((("clean", "clean_pred", "Original"),
                                                   ("adv", "adv_pred", "Adversarial"))):
                ax = axes[r][c]
                for marker, right in (("o", True), ("v", False)):
                    idx = [i for i, (p, t) in enumerate(zip(v[pred], v["label"])) if (p == t) == right]
                    ax.scatter([v[f"{key}_x"][i] for i in idx], [v[f"{key}_y"][i] for i in idx],
                               c=[v["label"][i] for i in idx], cmap="tab10", vmin=-0.5, vmax=9.5, marker=marker,
                               s=10 if right else 22, linewidths=0.3, edgecolors="k" if not right else "none")
                ax.set_title(f"{what} Embedding of {label} on {DATA_NAMES.get(table.sections[0].dataset, table.sections[0].dataset)}"
                             + (f" (PGD eps={TSNE['eps']:g})" if key == "adv" else ""), fontsize=9)
                ax.set_xlabel("t-SNE 1")
                ax.set_ylabel("t-SNE 2")
                handles = [Line2D([], [], marker="o", ls="", color="0.4", label="Classified Right"),
                           Line2D([], [], marker="v", ls="", color="0.4", markeredgecolor="k", label="Classified Wrong")]
                handles += [Line2D([], [], marker="s", ls="", color=plt.get_cmap("tab10")(k), label=str(k))
                            for k in range(10)]
                if c == 1:  # one legend per row, outside the axes
                    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                              title="marker / true class", title_fontsize=7)
        fig.suptitle(f"{table.title} (n = {len(next(iter(recs.values())).vals['label'])})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=150)
        plt.close(fig)
        return path


@register_table("otc-figure-5")
def otc_figure_5() -> AnalysisTable:
    rows = (Row("E-CLA", "e-cla"), Row("OT-classifier", "ot-cla"))
    return AnalysisTable(
        name="otc-figure-5", title="2D embeddings of E-CLA and OT-Classifier on MNIST (OT-Classifier Figure 5)",
        paper="ot-classifier", paper_table="5", dataset="mnist", is_figure=True, figure=tsne_figure,
        sections=(Section("MNIST", "mnist", rows=rows),),
        analyses=(Analysis("tsne-embedding", tsne_codes, TSNE, per_sample=False, max_n=500),),
        metrics=(Metric("clean acc. (%)", "analysis", analysis="tsne-embedding", value=lambda v: _accuracy(v, False)),
                 Metric("PGD acc. (%)", "analysis", analysis="tsne-embedding", value=lambda v: _accuracy(v, True)),
                 Metric("energy distance to N(0, I), clean codes", "analysis", digits=3, analysis="tsne-embedding",
                        value=lambda v: v["energy_clean"][0]),
                 Metric("adversarial codes", "analysis", digits=3, analysis="tsne-embedding",
                        value=lambda v: v["energy_adv"][0])),
        note=f"t-SNE (scikit-learn, perplexity {TSNE['perplexity']:g}, PCA start, seed {TSNE['seed']}) of the codes Q(x) "
             f"of clean test images and, separately, of their l-inf PGD images (eps = {TSNE['eps']:g}, "
             f"{TSNE['steps']} steps; the paper gives no eps for this figure) made against each model itself, through "
             "the harness's threat-model guard. In the figure, colour: true class; dot: the model classifies the image "
             "right; down triangle: wrong. Energy distance: between the codes and as many N(0, I) samples (0 when the "
             "codes are exactly Gaussian; the critic's target). At most 500 samples (t-SNE is quadratic).")
