"""RobustBench's packaging faults, handled lazily in one place."""
from __future__ import annotations

import subprocess
import sys

import pytest

from otbench.compat.robustbench import is_shadowed, load_robustbench


def test_real_robustbench_loads_through_the_adapter():
    rb = load_robustbench()
    assert not is_shadowed()
    assert callable(rb.eval.benchmark) and hasattr(rb, "load_model")


@pytest.mark.slow
def test_importing_otbench_does_not_import_robustbench():
    code = ("import sys, otbench, otbench.cli, otbench.attacks, otbench.defenses, otbench.baselines, otbench.papers.otad; "
            "print('robustbench' in sys.modules, 'autoattack' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # generous: shared CI cores
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_a_shadowing_robustbench_copy_is_detected_with_the_fix(tmp_path):
    """torchattacks 3.5.1 ships an old top-level `robustbench` folder (no helper_files/)."""
    (tmp_path / "robustbench").mkdir()
    (tmp_path / "robustbench" / "__init__.py").write_text("")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from otbench.compat.robustbench import is_shadowed, load_robustbench\n"
            "from otbench.errors import OTBenchError\n"
            "assert is_shadowed()\n"
            "try:\n    load_robustbench()\nexcept OTBenchError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=600)  # generous: shared CI cores
    assert out.returncode == 0, out.stderr
    assert "torchattacks" in out.stdout and "--force-reinstall --no-deps robustbench==1.1.1" in out.stdout
