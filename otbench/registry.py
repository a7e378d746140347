"""Name -> factory registries for defenses, attacks, datasets and report tables (after timm's).

Each kind has one `Registry`; modules register factories with its decorator, and the public surface is
`create(name, **kw)`, `get(name)` and `names()`. On first use a registry imports the core's own modules of
its kind (attacks and datasets are part of the core) and every module named by the Python entry points of
the group `otbench.<kind>s`. The methods (otbench.defenses, otbench.baselines) and the paper reproductions
(otbench.papers.*) come in through those entry points like any outside package, so the core never names them.
"""
from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterable, TypeVar

from .errors import OTBenchError

T = TypeVar("T")

# The core's own modules whose import registers its entries (methods and papers arrive by entry point).
_CORE_MODULES: dict[str, tuple[str, ...]] = {"attack": ("otbench.attacks",), "dataset": ("otbench.data",)}
# Entry points into this distribution: a failure there is a bug to show, not a plug-in to skip.
_FIRST_PARTY = "otbench."


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(valid)}"


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._loaded = False
        # names no entry point registers, resolved on each lookup (a defense from a file: otbench.user_model)
        self._resolvers: list[Callable[[str], T | None]] = []

    def add_resolver(self, resolver: Callable[[str], T | None]) -> None:
        """`resolver(name)` answers names that are not registered (None: not its kind of name; an OTBenchError: its
        kind, but broken). Asked on every lookup, so a file edited between two runs of one process is read again."""
        if resolver not in self._resolvers:
            self._resolvers.append(resolver)

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register `obj` under `name` (default: its __name__), with optional metadata that can be
        read without building it (`meta(name)`: e.g. a dataset's task and test-set size)."""

        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = obj
            self._meta[key] = dict(meta)
            if isinstance(obj, type):
                obj.name = key  # a class knows the name it is registered under
                check = getattr(obj, "check_declarations", None)
                if check is not None:  # a class whose declarations contradict its methods is refused here
                    try:
                        check()
                    except Exception:
                        del self._entries[key]
                        raise
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in _CORE_MODULES.get(self.kind, ()):
            importlib.import_module(module)
        for ep in entry_points(group=f"otbench.{self.kind}s"):
            if ep.value.split(":")[0] in _CORE_MODULES.get(self.kind, ()):
                continue
            if ep.value.startswith(_FIRST_PARTY):
                ep.load()
                continue
            try:
                ep.load()
            except Exception as exc:  # a broken plug-in must not take the harness down
                warnings.warn(f"otbench: entry point {ep.name} ({ep.value}) failed to load: {exc}")

    @contextmanager
    def temporary(self, name: str, obj: T) -> Iterator[T]:
        """Register `obj` under `name` for the duration of a `with` block (tests, experiments), replacing
        any entry of that name and restoring it afterwards."""
        self._load()
        old = self._entries.pop(name, None)
        try:
            yield self.register(name)(obj)
        finally:
            self._entries.pop(name, None)
            if old is not None:
                self._entries[name] = old
                if isinstance(old, type):
                    old.name = name

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            for resolver in self._resolvers:
                found = resolver(name)
                if found is not None:
                    return found
            raise OTBenchError(unknown_name_message(self.kind, name, self._entries))
        return self._entries[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta.get(name, {}))

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        if name in self._entries:
            return True
        try:  # a name a resolver answers (FILE.py:NAME) is in; a broken one is not, and get() says why
            return any(resolver(name) is not None for resolver in self._resolvers)
        except OTBenchError:
            return False


DEFENSES: Registry = Registry("defense")
ATTACKS: Registry = Registry("attack")
DATASETS: Registry = Registry("dataset")
TABLES: Registry = Registry("table")

register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_dataset = DATASETS.register
register_table = TABLES.register
