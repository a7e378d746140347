"""What the OT defenses are compared with; each registers itself with otbench's defense registry."""
from otbench.defense import describe_preset

from . import standard, knn, regressor  # noqa: F401
from . import regression_at  # noqa: F401  (registers `regressor-at`, OTAD Table V)
from . import pgd_at  # noqa: F401  (registers `pgd-at`, OTAD Tables I-IV)
from . import fgsm_at, median_filter, stl  # noqa: F401  (OTAD Tables I-III baselines)
from . import ape_gan  # noqa: F401
from . import linf_dist  # noqa: F401  (registers `linf-dist-net`, OTAD Tables I-III)
from . import soc  # noqa: F401  (registers `soc-plus`, OTAD Tables I-III)
from . import diffpure  # noqa: F401  (registers `diffpure`, OTAD Tables VI-X)
from . import rse, defense_gan  # noqa: F401  (register `rse`, `defense-gan`: OT-Classifier Figure 2, Table 2)

# soc-plus and linf-dist-net (the only baselines whose paper setting a CPU cannot train) define preset `cpu`
describe_preset("cpu", "`cpu` a smaller model and schedule sized for a few CPU-hours where the paper's needs a GPU "
                       "(SOC+: LipConvNet-10 with 16 channels, 10 epochs; l-inf-dist net: width 256, 40 epochs, p = inf "
                       "from epoch 8; baselines/soc.py and linf_dist.py give the arithmetic), never the paper's")
