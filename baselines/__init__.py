"""What the OT defenses are compared with; each registers itself with otbench's defense registry."""
from . import standard, knn  # noqa: F401
