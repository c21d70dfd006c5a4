"""Pick the fastest compiled variant of each kernel module this CPU can run.

``setup.py`` builds every ``ext/_NAME.pyx`` twice on x86-64: ``fastrec._NAME``
with portable flags and ``fastrec._NAME_avx2`` with ``-mavx2 -mfma``.  We use
the AVX2 build when NumPy's CPU detection reports AVX2 and FMA3, unless the
environment sets ``FASTREC_KERNELS=baseline``.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["load_kernel", "kernel_variant"]


def _cpu_supports_avx2() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return False
    return bool(features.get("AVX2")) and bool(features.get("FMA3"))


def kernel_variant() -> str:
    """Name of the kernel build in use: ``"avx2"`` or ``"baseline"``."""
    if os.environ.get("FASTREC_KERNELS", "").lower() == "baseline":
        return "baseline"
    return "avx2" if _cpu_supports_avx2() else "baseline"


_cache: dict[str, ModuleType] = {}


def load_kernel(name: str) -> ModuleType:
    """Import ``fastrec._<name>``, preferring its AVX2 build when usable."""
    module = _cache.get(name)
    if module is not None:
        return module
    if kernel_variant() == "avx2":
        try:
            module = importlib.import_module(f"fastrec._{name}_avx2")
        except ImportError:
            module = None
    if module is None:
        try:
            module = importlib.import_module(f"fastrec._{name}")
        except ImportError as exc:  # pragma: no cover - broken install
            raise ImportError(
                f"fastrec's compiled kernel '_{name}' is missing; reinstall with "
                "'pip install .' so the extensions are built"
            ) from exc
    _cache[name] = module
    return module
