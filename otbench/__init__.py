"""otbench: a benchmarking harness for adversarial robustness.

Three layers, each imported only from above (README.md, "Architecture"):

- the core, which knows no method and no paper: registry (named factories for defenses, attacks, datasets, report
  tables), defense (the Defense interface and its declared capabilities), attacks/ (one attack per file), data/
  (dataset loaders), plan (validated run plans), runner (cells evaluated in resumable chunks through the guard),
  store (the SQLite results database), checks (soundness diagnostics), report/ (the Table protocol and its
  engine), interfaces/ (torchattacks, ART, foolbox, RobustBench), cli (`otbench list|train|run|report|merge`);
- the methods: common/ (what they share: the FC ResNet, its training, exact K-NN, adversarial training),
  defenses/ (the OT methods) and baselines/ (what they are compared with);
- papers/: one package per paper, its tables, figures and published values.

Methods and papers are registered through the entry-point groups `otbench.defenses` and `otbench.tables`, the way
an outside package adds its own.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otbench")
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    """`otbench.evaluate`, imported on first use (it loads torch and pandas; `import otbench` stays cheap)."""
    if name == "evaluate":
        from .api import evaluate

        return evaluate
    raise AttributeError(f"module 'otbench' has no attribute {name!r}")


__all__ = ["evaluate", "__version__"]
