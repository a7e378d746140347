"""OTAD (papers/otad.txt): the FC ResNet, exact K-NN and the exact batched CIP solver."""
from . import defense  # noqa: F401  (registers `otad`)
from . import regression  # noqa: F401  (registers `otad-regression`, Table V)
