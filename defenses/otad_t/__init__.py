"""OTAD-T (papers/otad.txt IV-B to IV-D, V-E to V-G): ViT transport map, DML-net neighbours, CIP-net."""
from . import defense  # noqa: F401  (registers `otad-t`, `otad-t-dml`, `knn-t`, `vit`)
from . import nn_defense  # noqa: F401  (registers `otad-t-nn`, `otad-t-nn-dml`)
