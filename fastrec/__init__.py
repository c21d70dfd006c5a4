"""fastrec: fast recommendations from implicit feedback.

The public API, in one place.
"""
from ._kernels import kernel_variant
from ._threads import available_cpus
from .als import ALS
from .exceptions import ModelFormatError, NotFittedError

__version__ = "0.1.0"

__all__ = [
    "ALS",
    "NotFittedError",
    "ModelFormatError",
    "available_cpus",
    "kernel_variant",
    "__version__",
]
