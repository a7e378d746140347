"""What the OT defenses are compared with; each registers itself with otbench's defense registry."""
from . import standard, knn, regressor  # noqa: F401
from . import regression_at  # noqa: F401  (registers `regressor-at`, OTAD Table V)
from . import pgd_at  # noqa: F401  (registers `pgd-at`, OTAD Tables I-IV)
from . import fgsm_at, median_filter, stl  # noqa: F401  (OTAD Tables I-III baselines)
from . import ape_gan  # noqa: F401
from . import linf_dist  # noqa: F401  (registers `linf-dist-net`, OTAD Tables I-III)
from . import soc  # noqa: F401  (registers `soc-plus`, OTAD Tables I-III)
from . import diffpure  # noqa: F401  (registers `diffpure`, OTAD Tables VI-X)
from . import rse, defense_gan  # noqa: F401  (register `rse`, `defense-gan`: OT-Classifier Figure 2, Table 2)
