"""otbench: a benchmarking harness for adversarial robustness.

The core is small and each part is one module or package:
registry (named factories for defenses, attacks, datasets, report tables), defense (the Defense base class
and its declared capabilities), attacks/ (one attack per file), data/ (dataset loaders), runner (defense x
attack x eps cells, evaluated in resumable chunks), store (the SQLite results database), checks (soundness
diagnostics), report/ (paper tables and figures), interfaces/ (torchattacks, ART, foolbox, RobustBench),
cli (`otbench list|train|run|report|merge`). The defenses themselves live in the top-level `defenses/` (the
OT methods) and `baselines/` (what they are compared with) packages.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otbench")
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"
