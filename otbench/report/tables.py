"""The report tables of both papers, registered by name (`otbench list tables`)."""
from __future__ import annotations

from ..registry import register_table
from .spec import Column, Row, TableSpec

# Rows of OTAD's MNIST tables I-III; baselines not yet registered show as "not available".
_OTAD_MNIST_ROWS = (
    Row("PGD adversarial training", "pgd-at", "PGD adversarial training"),
    Row("FGSM adversarial training", "fgsm-at", "FGSM adversarial training"),
    Row("Median filter", "median-filter", "Median filter"),
    Row("STL", "stl", "STL"),
    Row("APE-GAN", "ape-gan", "APE-GAN"),
    Row("l-inf-dist net", "linf-dist-net", "l-inf-dist net"),
    Row("SOC+", "soc-plus", "SOC+"),
    Row("OTAD", "otad", "OTAD"),
    Row("FC ResNet, no defense (not in the paper)", "standard", None),
)


@register_table("otad-table-3")
def otad_table_3() -> TableSpec:
    return TableSpec(
        name="otad-table-3", title="Performance of defense methods on MNIST against Square attack (2000 queries, L2)",
        paper="otad", paper_table="III", dataset="mnist", rows=_OTAD_MNIST_ROWS,
        columns=(Column("Standard Acc", "square", 2.0, "clean", "clean"),
                 Column("Robust Acc eps=2", "square", 2.0, "robust", "eps=2"),
                 Column("Robust Acc eps=3", "square", 3.0, "robust", "eps=3")),
        figure=True)


@register_table("otad-table-12")
def otad_table_12() -> TableSpec:
    rows = tuple(Row(f"{method} K={k}", defense, method, {"defense": {"K": k}})
                 for method, defense in (("OTAD", "otad"), ("KNN", "knn")) for k in (5, 10, 15))
    return TableSpec(
        name="otad-table-12", title="Standard accuracy of KNN and OTAD on MNIST (K = 5, 10, 15)",
        paper="otad", paper_table="XII", dataset="mnist", rows=rows,
        columns=(Column("Standard Acc", "none", 0.0, "clean", "K={K}"),),
        note="The paper's setting column is K; each row's K is substituted into the paper setting.")
