"""The one place otbench imports RobustBench, lazily, working around its packaging faults.

- robustbench 1.1.1 does `from autoattack import ...`, but its dependency installs the module as
  `pyautoattack`: alias it before importing.
- it imports `pkg_resources`, gone from setuptools >= 81: the project pins setuptools<81; if it is
  still missing the error says so.
- the torchattacks 3.5.1 wheel ships an old top-level `robustbench` folder; if it was installed after
  robustbench it shadows the real package (no `helper_files`). Detected here, with the fix named.

`python -m otbench.compat.robustbench` exits 0 when the real package imports, 1 otherwise (the Makefile
uses it to reinstall robustbench after torchattacks).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType

from ..errors import OTBenchError

FIX = "pip install --force-reinstall --no-deps robustbench==1.1.1 'setuptools<81'"


def is_shadowed() -> bool:
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.origin:
        return False
    return not (Path(spec.origin).parent / "helper_files").is_dir()


def load_robustbench() -> ModuleType:
    """Import and return the real `robustbench` package, or raise an OTBenchError naming the fix."""
    if importlib.util.find_spec("robustbench") is None:
        raise OTBenchError(f"robustbench is not installed; {FIX}")
    if is_shadowed():
        raise OTBenchError("the `robustbench` found is the old copy shipped inside the torchattacks wheel, not "
                           f"robustbench 1.1.1; reinstall the real one: {FIX}")
    if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None:
        try:
            sys.modules["autoattack"] = importlib.import_module("pyautoattack")
        except ImportError:
            raise OTBenchError("robustbench needs AutoAttack (module `autoattack` or `pyautoattack`); "
                               "pip install pyautoattack") from None
    try:
        with warnings.catch_warnings():  # its own deprecation noise (pkg_resources, torch.jit) is not ours
            warnings.simplefilter("ignore")
            import robustbench
            import robustbench.eval  # noqa: F401  (benchmark(); pulls in autoattack and pkg_resources)
    except ModuleNotFoundError as exc:
        if exc.name == "pkg_resources":
            raise OTBenchError("robustbench imports pkg_resources, removed in setuptools 81; "
                               "pip install 'setuptools<81'") from None
        raise
    return robustbench


if __name__ == "__main__":
    try:
        rb = load_robustbench()
    except OTBenchError as exc:
        print(f"robustbench: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"robustbench OK: {Path(rb.__file__).parent}")
