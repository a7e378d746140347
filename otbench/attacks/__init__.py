"""Registered attacks; each declares its threat model and what it needs from the defense."""
from .base import Attack, AttackOutput
from . import none, square, pgd, bpda_pgd  # noqa: F401  (register the built-in attacks)

__all__ = ["Attack", "AttackOutput"]
