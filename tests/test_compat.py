import subprocess
import sys

from otbench.compat.robustbench import is_shadowed, load_robustbench


def test_real_robustbench_loads_through_the_adapter():
    rb = load_robustbench()
    assert not is_shadowed()
    assert callable(rb.eval.benchmark) and hasattr(rb, "load_model")


def test_importing_otbench_does_not_import_robustbench():
    code = ("import sys, otbench, otbench.cli, otbench.attacks, defenses, baselines; "
            "print('robustbench' in sys.modules, 'autoattack' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
