"""The layering the README's architecture section promises, checked on the import graph: the core imports no
method and no paper; defenses and baselines meet only in the shared layer; the core has no import cycle; nothing
generic is installed. Source folders are mapped to package names the way pyproject.toml's package-dir maps them,
and every check says how many files it read, so a moved tree cannot drop out of it silently."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = CONFIG["tool"]["setuptools"]["package-dir"]  # {"otbench": "otbench", "otbench.defenses": "defenses", ...}
METHODS = ("otbench.defenses", "otbench.baselines", "otbench.common")
PAPERS = ("otbench.papers",)
# what each layer may not import
FORBIDDEN = {
    "core": METHODS + PAPERS,
    "otbench.common": ("otbench.defenses", "otbench.baselines") + PAPERS,
    "otbench.defenses": ("otbench.baselines",) + PAPERS,
    "otbench.baselines": ("otbench.defenses",) + PAPERS,
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def sources(root: Path = ROOT, package_dir: dict[str, str] = PACKAGE_DIR) -> dict[str, Path]:
    """Module name -> file, for every .py file of every mapped source folder (a folder mapped to a subpackage
    is skipped where it sits inside another mapped folder, so no file is read twice)."""
    out: dict[str, Path] = {}
    for prefix, folder in package_dir.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("").parts
            name = ".".join((prefix,) + (rel[:-1] if rel[-1] == "__init__" else rel))
            out.setdefault(name, path)
    return out


def layer(module: str) -> str | None:
    for name in ("otbench.common", "otbench.defenses", "otbench.baselines"):
        if _within(module, name):
            return name
    if _within(module, PAPERS[0]):
        return None  # a paper may import anything
    return "core"


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`: annotations only, never executed, so never a runtime cycle."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports(module: str, path: Path, runtime_only: bool = False) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved), function-level ones included;
    `runtime_only`: leaving out those under `if TYPE_CHECKING:`."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    skip = _type_only(tree) if runtime_only else set()
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out += [target] + [f"{target}.{a.name}" for a in node.names]
    return out


def violations(modules: dict[str, Path]) -> list[str]:
    found = []
    for name, path in modules.items():
        mine = layer(name)
        for target in imports(name, path) if mine else ():
            if any(_within(target, f) for f in FORBIDDEN[mine]):
                found.append(f"{name} ({mine}) imports {target}")
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Edges between the given modules: `from a.b import c` points at a.b.c where that is a module, else at a.b."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target in imports(name, path, runtime_only=True):
            if target in modules and target != name:
                graph[name].add(target)
    # `from a.b import c` also yields a.b; keep only the most specific module each statement names
    for name in graph:
        graph[name] = {t for t in graph[name] if not any(o != t and o.startswith(t + ".") for o in graph[name])}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


MODULES = sources()


def test_every_source_folder_is_read():
    """Each mapped folder yields as many modules as it holds .py files, and the big ones are really there."""
    for prefix, folder in PACKAGE_DIR.items():
        files = [p for p in (ROOT / folder).rglob("*.py")]
        read = [n for n in MODULES if _within(n, prefix) and not any(
            _within(n, other) for other in PACKAGE_DIR if other != prefix and _within(other, prefix))]
        assert len(read) == len(files) > 0, (prefix, folder)
    assert {"otbench.defenses.otad.cip", "otbench.baselines.knn", "otbench.runner", "otbench.common.neighbours",
            "otbench.papers.otad.mnist"} <= set(MODULES)
    assert len(MODULES) >= 120


def test_package_list_matches_the_tree():
    """pyproject.toml lists the packages (package-dir needs that): every folder with an __init__.py, no other."""
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    assert set(CONFIG["tool"]["setuptools"]["packages"]) == packages


def test_no_layer_imports_what_it_must_not():
    assert violations(MODULES) == []


def test_the_core_has_no_import_cycle():
    core = {n: p for n, p in MODULES.items() if layer(n) == "core"}
    assert len(core) >= 60
    assert cycles(import_graph(core)) == []


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return sources(tmp_path, {"otbench": "otbench", "otbench.defenses": "defenses"})


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The checker itself: a core module importing a defense, written in relative form, is found; a top-level
    defenses/ folder is read as otbench.defenses."""
    modules = _fake_tree(tmp_path, {"otbench/__init__.py": "", "otbench/report/__init__.py": "",
                                    "otbench/report/bad.py": "from ..defenses.otad import cip\nimport otbench.papers.otad\n",
                                    "defenses/__init__.py": "", "defenses/otad/__init__.py": "",
                                    "defenses/otad/cip.py": "from otbench.baselines import knn\n"})
    assert "otbench.defenses.otad.cip" in modules
    assert sorted(violations(modules)) == ["otbench.defenses.otad.cip (otbench.defenses) imports otbench.baselines",
                                           "otbench.defenses.otad.cip (otbench.defenses) imports otbench.baselines.knn",
                                           "otbench.report.bad (core) imports otbench.defenses.otad",
                                           "otbench.report.bad (core) imports otbench.defenses.otad.cip",
                                           "otbench.report.bad (core) imports otbench.papers.otad"]


def test_the_check_sees_a_cycle_through_a_function_level_import(tmp_path):
    modules = _fake_tree(tmp_path, {"otbench/__init__.py": "", "otbench/report/__init__.py": "",
                                    "otbench/report/a.py": "from .b import f\n",
                                    "otbench/report/b.py": "def f():\n    from otbench.report.c import g\n",
                                    "otbench/report/c.py": "from otbench.report import a\n",
                                    "otbench/report/d.py": "from otbench.report import a\n",
                                    "otbench/report/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                           "    from .f import x\n",
                                    "otbench/report/f.py": "from . import e\n"})
    assert cycles(import_graph(modules)) == [["otbench.report.a", "otbench.report.b", "otbench.report.c"]]


def test_only_the_otbench_namespace_is_installed(tmp_path):
    """The top-level folders the design card names install under otbench, never as generic packages (asked from
    another folder: the repository root itself is on sys.path when Python starts there)."""
    assert (ROOT / "defenses").is_dir() and (ROOT / "baselines").is_dir()
    assert not (ROOT / "otbench" / "defenses").exists() and not (ROOT / "otbench" / "baselines").exists()
    assert PACKAGE_DIR == {"otbench": "otbench", "otbench.defenses": "defenses", "otbench.baselines": "baselines"}
    assert all(_within(p, "otbench") for p in CONFIG["tool"]["setuptools"]["packages"])
    probe = ("import importlib.util as u; print([u.find_spec(n) is not None for n in "
             "('otbench.defenses.otad', 'otbench.baselines.knn', 'defenses', 'baselines')])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[True, True, False, False]"


@pytest.mark.parametrize("group,modules", [("otbench.defenses", {"otbench.defenses", "otbench.baselines"}),
                                           ("otbench.tables", {"otbench.papers.otad", "otbench.papers.ot_classifier"})])
def test_methods_and_papers_come_in_through_entry_points(group, modules):
    """The core names none of them: they are registered the way an outside package is."""
    assert set(CONFIG["project"]["entry-points"][group].values()) == modules
    tree = ast.parse((ROOT / "otbench" / "registry.py").read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and id(n) not in docstrings]
    assert not [s for s in strings if any(m in s for m in modules)]


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["pip install .", "pip install -e ."])
def test_a_fresh_venv_imports_the_methods_under_otbench_only(tmp_path, editable):
    """The design card's layout installs both ways from a copy of the tracked tree: otbench.defenses and
    otbench.baselines import (from the copy), the generic names do not."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    tree = tmp_path / "otbench-src"
    for rel in files:
        if (ROOT / rel).is_file() and not rel.startswith("reports/"):
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes((ROOT / rel).read_bytes())
    venv = tmp_path / "venv"
    # the venv sees this interpreter's packages (torch...), and its own install of otbench comes first
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    *(["-e"] if editable else []), str(tree)], check=True, capture_output=True)
    probe = ("import importlib.util as u, otbench.defenses.otad as o, otbench.baselines.knn as k; "
             "print(o.__file__); print(k.__file__); print(u.find_spec('defenses'), u.find_spec('baselines'))")
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split("\n")
    where = tree if editable else venv
    assert Path(out[0]).is_relative_to(where) and Path(out[1]).is_relative_to(where), out
    assert out[2] == "None None"
