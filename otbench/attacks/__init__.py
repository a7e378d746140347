"""Registered attacks, one per file; each declares its threat model and what it needs from the defense."""
import importlib
import pkgutil

from .base import Attack, AttackOutput

# Importing every module of this package registers the built-in attacks (one attack per file).
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Attack", "AttackOutput"]
