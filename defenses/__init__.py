"""The optimal-transport defenses under test; each registers itself with otbench's defense registry."""
from . import otad  # noqa: F401
from . import ot_classifier  # noqa: F401
from . import otad_t  # noqa: F401
