"""Adapters for third-party packaging faults, kept in one place and imported lazily."""
