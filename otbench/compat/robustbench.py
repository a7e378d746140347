"""The one place otbench imports RobustBench, lazily, working around its packaging faults.

- robustbench 1.1.1 does `from autoattack import ...`, but its dependency installs the module as
  `pyautoattack`: alias it before importing. pyautoattack 0.2.0 also changed the API robustbench's
  benchmark() calls (fra31/auto-attack's: `AutoAttack(..., log_path=)`, `run_standard_evaluation(x, y,
  bs=)` returning x_adv; now `batch_size=`, no log_path, returning (x_adv, y_adv)), so the alias is a
  module whose AutoAttack takes the old call and runs pyautoattack's unchanged.
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
import logging
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


def _autoattack_alias() -> ModuleType:
    """pyautoattack under the name `autoattack`, its AutoAttack taking fra31/auto-attack's call."""
    pyaa = importlib.import_module("pyautoattack")

    class AutoAttack(pyaa.AutoAttack):
        def __init__(self, model, norm="Linf", eps=0.3, seed=None, verbose=True, attacks_to_run=(),
                     version="standard", is_tf_model=False, device=None, log_path=None):
            if is_tf_model:
                raise OTBenchError("pyautoattack runs PyTorch models only (is_tf_model=True)")
            super().__init__(model, attacks=list(attacks_to_run) or None, device=device or "cpu", eps=eps,
                             norm=norm, seed=seed, version=version)
            self.verbose = verbose
            if log_path is not None:  # the old log file: pyautoattack logs to the 'auto-attack' logger
                path = str(Path(log_path).resolve())
                if not any(getattr(h, "baseFilename", None) == path for h in self.logger.handlers):
                    self.logger.addHandler(logging.FileHandler(path))
                self.logger.setLevel(logging.DEBUG)

        def run_standard_evaluation(self, x_orig, y_orig, bs=250, return_labels=False, state_path=None,
                                    *, batch_size=None):
            if batch_size is not None:  # pyautoattack's own call (run_standard_evaluation_individual)
                return super().run_standard_evaluation(x_orig, y_orig, batch_size=batch_size,
                                                       state_path=state_path)
            x_adv, y_adv = super().run_standard_evaluation(x_orig, y_orig, batch_size=bs, state_path=state_path)
            return (x_adv, y_adv) if return_labels else x_adv

    alias = ModuleType("autoattack", pyaa.__doc__)
    alias.__dict__.update({k: v for k, v in vars(pyaa).items() if not k.startswith("__")})
    alias.__path__ = list(pyaa.__path__)  # autoattack.<sub> finds pyautoattack's files
    alias.AutoAttack = AutoAttack
    importlib.import_module("pyautoattack.state")
    for name in [n for n in sys.modules if n.startswith("pyautoattack.")]:  # one copy of what is loaded
        sys.modules["autoattack." + name.split(".", 1)[1]] = sys.modules[name]
    return alias


def load_robustbench() -> ModuleType:
    """Import and return the real `robustbench` package, or raise an OTBenchError naming the fix."""
    if importlib.util.find_spec("robustbench") is None:
        raise OTBenchError(f"robustbench is not installed; {FIX}")
    if is_shadowed():
        raise OTBenchError("the `robustbench` found is the old copy shipped inside the torchattacks wheel, not "
                           f"robustbench 1.1.1; reinstall the real one: {FIX}")
    if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None:
        try:
            sys.modules["autoattack"] = _autoattack_alias()
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
