"""Defenses nobody packaged: a plain `torch.nn.Module` handed to `otbench.evaluate`, or a file named on the
command line as `--defense ./my_defense.py:NAME`, where NAME is a `Defense` subclass, an `nn.Module` class, a
function returning a module, or a module instance.

A module is wrapped in a `ModuleDefense` with declared capabilities (differentiable unless told otherwise,
randomized when told). What determines its outputs is part of every cell's identity (otbench.identity), so a
different model never reuses another's results:
- a module: its content fingerprint (the class's qualified name and source, its repr, every state_dict tensor);
- a file: the sha256 of the file's bytes (and, for a module it builds, the module's fingerprint too: a factory
  that loads a checkpoint changes results without changing the file).
The registered name carries a short form of the hash (`SmallNet@1a2b3c4d5e`, `my_defense.py:Net@1a2b3c4d`), so
the soundness checks, which compare the cells of one defense, never mix two models or two versions of a file.

Every mistake is one OTBenchError line: the file missing, not Python, failing on import, lacking NAME, NAME not
a defense or module; and, once built (before anything is stored), a module that fails on the dataset's inputs,
returns the wrong shape or non-finite logits (`probe`).

Importing this module adds its resolver to the defense registry (otbench.plan imports it)."""
from __future__ import annotations

import hashlib
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .data import Dataset
from .defense import Defense, check_finite_outputs
from .errors import OTBenchError
from .registry import DEFENSES

FILE_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")
# a module has no settings: every preset means the module as given (the CLI's and the API's default is quick)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"quick": {}, "paper": {}}
PROBE = 16  # test inputs a built module is tried on before any cell is opened


def module_fingerprint(module: nn.Module) -> str:
    """sha256 over what determines a module's outputs: its class (qualified name and source), its repr (layer
    hyperparameters) and every state_dict entry (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    cls = type(module)
    h.update(f"{cls.__module__}.{cls.__qualname__}\0".encode())
    try:
        h.update(inspect.getsource(cls).encode())
    except (OSError, TypeError):  # defined in a REPL: the weights and repr still tell models apart
        pass
    h.update(repr(module).encode())
    for key, value in module.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def probe(defense: Defense) -> None:
    """Try a built defense on a few test inputs of its dataset: it must run on them and return one finite logit
    per class per input. Runs before any cell is opened, so a mistake stores nothing."""
    data: Dataset = defense.data
    x = data.x_test[:PROBE]
    domain = "unbounded" if data.domain is None else f"[{data.domain[0]:g}, {data.domain[1]:g}]"
    try:
        with torch.no_grad():
            out = defense.logits(x.to(defense.device))
    except Exception as exc:  # the user's code: any failure is theirs to see, in one line
        raise OTBenchError(f"defense '{defense.name}' failed on {len(x)} test inputs of '{data.name}' (shape "
                           f"{tuple(x.shape[1:])}, values in {domain}): {_first_line(exc)}") from None
    if not isinstance(out, torch.Tensor):
        raise OTBenchError(f"defense '{defense.name}' returned a {type(out).__name__}, not a tensor of logits")
    expected = (len(x), data.num_classes)
    if tuple(out.shape) != expected:
        raise OTBenchError(f"defense '{defense.name}' returned outputs of shape {tuple(out.shape)} for {len(x)} "
                           f"inputs of '{data.name}'; expected {expected}: one logit per class")
    check_finite_outputs(defense.name, out.detach().float().cpu())


class ModuleDefense(Defense):
    """A user's nn.Module as a defense: `logits(x)` is the module's output on x in the dataset's domain."""

    description = "a torch.nn.Module given by the user"
    presets = PRESETS
    user_defined: ClassVar[bool] = True
    build: ClassVar[Callable[[], Any]]  # returns the module (set on each generated subclass)
    source: ClassVar[dict[str, Any]] = {}

    def __init__(self, data: Dataset, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(data, config, device)
        try:
            module = type(self).build()
        except Exception as exc:
            raise OTBenchError(f"defense '{self.name}': building the module failed: {_first_line(exc)}") from None
        if not isinstance(module, nn.Module):
            raise OTBenchError(f"defense '{self.name}' gave a {type(module).__name__}, not a torch.nn.Module")
        self.net = module.to(device).eval()
        self.config = {**config, "model": {**self.source, "module": f"{type(module).__module__}."
                                           f"{type(module).__qualname__}", "fingerprint": module_fingerprint(module)}}
        probe(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def module_defense_class(build: Callable[[], Any], name: str, source: dict[str, Any], differentiable: Any = True,
                         randomized: Any = False) -> type[Defense]:
    """A ModuleDefense subclass building its module with `build()`; declarations checked like a registered one."""
    cls = type("ModuleDefense", (ModuleDefense,), {
        "build": staticmethod(build), "source": dict(source), "name": name,
        "differentiable": differentiable, "randomized": randomized,
        "description": f"torch.nn.Module {name}" + ("" if differentiable is True else " (gradients not its own)")})
    cls.check_declarations()
    return cls


def file_defense_class(base: type[Defense], name: str, source: dict[str, Any]) -> type[Defense]:
    """A user's Defense subclass from a file: its file's hash joins its config (so its cells' identity), and the
    built defense is probed like a module."""
    def __init__(self: Defense, data: Dataset, config: dict[str, Any], device: torch.device) -> None:
        try:
            base.__init__(self, data, config, device)
        except OTBenchError:
            raise
        except Exception as exc:
            raise OTBenchError(f"defense '{name}' failed to build: {_first_line(exc)}") from None
        self.config = {**self.config, "model": dict(source)}
        probe(self)

    cls = type(base.__name__, (base,), {"__init__": __init__, "name": name, "user_defined": True,
                                         "__module__": base.__module__, "__qualname__": base.__qualname__})
    cls.check_declarations()
    return cls


# -- resolving names ---------------------------------------------------------------------------------------------
_MODULES: dict[str, type[Defense]] = {}  # otbench.evaluate's modules, by registered name
_FILES: dict[tuple[str, str, str], type[Defense]] = {}  # (resolved path, sha256, NAME) -> class


def register_module(module: nn.Module, name: str | None = None, differentiable: bool = True,
                    randomized: bool = False) -> str:
    """Make a module a defense the run plan can name; returns that name (NAME@fingerprint)."""
    if not isinstance(module, nn.Module):
        raise OTBenchError(f"model must be a registered defense name, FILE.py:NAME, a Defense or a torch.nn.Module; "
                           f"got a {type(module).__name__}")
    fingerprint = module_fingerprint(module)
    key = f"{name or type(module).__name__}@{fingerprint[:10]}"
    _MODULES[key] = module_defense_class(lambda: module, key, {"fingerprint": fingerprint}, differentiable,
                                         randomized)
    return key


def register_defense_class(cls: type[Defense]) -> str:
    """A Defense subclass not in the registry (defined in a script): registered under its name and a hash of its
    class's source, which joins its config like a file's."""
    if not isinstance(cls, type) or not issubclass(cls, Defense):
        raise OTBenchError(f"expected a Defense subclass, got {cls!r}")
    try:
        text = inspect.getsource(cls)
    except (OSError, TypeError):
        raise OTBenchError(f"the source of {cls.__qualname__} cannot be read (defined in a REPL?), so its results "
                           f"could not be told from another version's; define it in a file") from None
    sha = hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}\0{text}".encode()).hexdigest()
    key = f"{getattr(cls, 'name', None) or cls.__name__}@{sha[:10]}"
    if key not in _MODULES:
        _MODULES[key] = file_defense_class(cls, key, {"class": f"{cls.__module__}.{cls.__qualname__}",
                                                      "sha256": sha})
    return key


def resolve(name: str) -> type[Defense] | None:
    """The registry's resolver: otbench.evaluate's modules, then FILE.py:NAME (None: neither kind of name)."""
    if name in _MODULES:
        return _MODULES[name]
    spec = FILE_SPEC.match(name)
    if spec is None:
        if ".py" in name:
            raise OTBenchError(f"defense '{name}': a defense from a file is given as FILE.py:NAME, e.g. "
                               f"./my_defense.py:MyDefense")
        return None
    return load_file_defense(Path(spec["path"]).expanduser(), spec["attr"])


def load_file_defense(path: Path, attr: str) -> type[Defense]:
    if not path.exists():
        raise OTBenchError(f"defense file {path} does not exist (--defense FILE.py:NAME)")
    if not path.is_file():
        raise OTBenchError(f"defense file {path} is not a file")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    key = (str(path.resolve()), sha, attr)
    if key in _FILES:
        return _FILES[key]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise OTBenchError(f"defense file {path} is not UTF-8 text (a Python file was expected)") from None
    try:
        code = compile(text, str(path), "exec")
    except (SyntaxError, ValueError) as exc:
        line = f", line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise OTBenchError(f"defense file {path}{line}: not valid Python: {getattr(exc, 'msg', exc)}") from None
    module = _execute(path, code, sha)
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if not k.startswith("_") and (
            isinstance(v, type) and issubclass(v, (Defense, nn.Module)) or inspect.isfunction(v))
            and getattr(v, "__module__", None) == module.__name__)
        raise OTBenchError(f"defense file {path} has no '{attr}'; it defines: {', '.join(found) or 'nothing usable'}")
    obj = getattr(module, attr)
    name, source = f"{path.name}:{attr}@{sha[:8]}", {"file": path.name, "sha256": sha}
    if isinstance(obj, type) and issubclass(obj, Defense):
        cls = file_defense_class(obj, name, source)
    elif isinstance(obj, nn.Module) or (callable(obj) and not isinstance(obj, type)) or \
            (isinstance(obj, type) and issubclass(obj, nn.Module)):
        build = (lambda: obj) if isinstance(obj, nn.Module) else obj
        cls = module_defense_class(build, name, source, getattr(obj, "differentiable", True),
                                   getattr(obj, "randomized", False))
    else:
        raise OTBenchError(f"'{attr}' in {path} is a {type(obj).__name__}, not a Defense subclass, a torch.nn.Module "
                           f"(class or instance) or a function returning a module")
    _FILES[key] = cls
    return cls


def _execute(path: Path, code: types.CodeType, sha: str) -> types.ModuleType:
    """Run the file as a module of its own (in sys.modules, so inspect and pickle find its classes); its folder
    is importable while it runs, for sibling modules it imports."""
    module = types.ModuleType(f"otbench_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{sha[:12]}")
    module.__file__ = str(path.resolve())
    sys.modules[module.__name__] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        del sys.modules[module.__name__]
        raise OTBenchError(f"defense file {path} failed on import: {_first_line(exc)}") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


DEFENSES.add_resolver(resolve)
