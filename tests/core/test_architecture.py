"""The layering the README's architecture section promises, checked on the import graph: the core imports no
method and no paper; defenses and baselines meet only in the shared layer; nothing generic is installed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "otbench"
METHODS = ("otbench.defenses", "otbench.baselines", "otbench.common")
PAPERS = ("otbench.papers",)
# what each layer may not import
FORBIDDEN = {
    "core": METHODS + PAPERS,
    "otbench.common": ("otbench.defenses", "otbench.baselines") + PAPERS,
    "otbench.defenses": ("otbench.baselines",) + PAPERS,
    "otbench.baselines": ("otbench.defenses",) + PAPERS,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    for name in ("otbench.common", "otbench.defenses", "otbench.baselines"):
        if module == name or module.startswith(name + "."):
            return name
    if module.startswith(PAPERS[0]):
        return None  # a paper may import anything
    return "core"


def imports(path: Path) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out += [target] + [f"{target}.{a.name}" for a in node.names]
    return out


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        mine = layer(module_name(path))
        for target in imports(path) if mine else ():
            if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[mine]):
                found.append(f"{module_name(path)} ({mine}) imports {target}")
    return found


def test_no_layer_imports_what_it_must_not():
    assert violations() == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The checker itself: a core module importing a defense, written in relative form, is found."""
    fake = tmp_path / "otbench"
    (fake / "report").mkdir(parents=True)
    (fake / "report" / "bad.py").write_text("from ..defenses.otad import cip\nimport otbench.papers.otad\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        found = violations(fake)
    finally:
        ROOT = old
    assert found == ["otbench.report.bad (core) imports otbench.defenses.otad",
                     "otbench.report.bad (core) imports otbench.defenses.otad.cip",
                     "otbench.report.bad (core) imports otbench.papers.otad"]


def test_only_the_otbench_namespace_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["otbench*"]
    assert not (ROOT / "defenses").exists() and not (ROOT / "baselines").exists()


@pytest.mark.parametrize("group,modules", [("otbench.defenses", {"otbench.defenses", "otbench.baselines"}),
                                           ("otbench.tables", {"otbench.papers.otad", "otbench.papers.ot_classifier"})])
def test_methods_and_papers_come_in_through_entry_points(group, modules):
    """The core names none of them: they are registered the way an outside package is."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(config["project"]["entry-points"][group].values()) == modules
    tree = ast.parse((PACKAGE / "registry.py").read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and id(n) not in docstrings]
    assert not [s for s in strings if any(m in s for m in modules)]
