"""The OT-Classifier family (papers/ot-classifier.txt): `ot-cla`, `e-cla`, `ot-cla-adv` and the CNN baselines
`cnn-standard`, `cnn-pgd-at` it is compared with; the intrinsic-dimension estimator of Table 3."""
from . import defense  # noqa: F401  (registers the defenses)
