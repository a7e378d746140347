"""What the OT defenses are compared with; each registers itself with otbench's defense registry."""
from . import standard, knn  # noqa: F401
from . import regression_at  # noqa: F401  (registers `regressor-at`, OTAD Table V)
from . import pgd_at  # noqa: F401  (registers `pgd-at`, OTAD Tables I-IV)
from . import rse, defense_gan  # noqa: F401  (register `rse`, `defense-gan`: OT-Classifier Figure 2, Table 2)
