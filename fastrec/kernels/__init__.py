"""Pick the fastest compiled variant of each kernel module this CPU can run.

``setup.py`` builds every ``ext/_NAME.pyx`` three times on x86-64:
``fastrec._NAME`` with portable flags, ``fastrec._NAME_avx2`` and
``fastrec._NAME_avx512``.  We use the best build that NumPy's CPU detection
says this CPU runs; ``FASTREC_KERNELS`` can cap it.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["load_kernel", "kernel_variant"]


def _cpu_features() -> dict:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return {}
    return features


# best first: (variant, CPU features it needs)
_VARIANTS = (
    ("avx512", ("AVX512F", "AVX512DQ", "AVX512VL", "AVX512BW", "AVX2", "FMA3")),
    ("avx2", ("AVX2", "FMA3")),
)


def runnable_variants() -> list[str]:
    """The ISA builds (besides the baseline) this CPU can run, best first."""
    features = _cpu_features()
    return [name for name, needs in _VARIANTS if all(features.get(flag) for flag in needs)]


def kernel_variant() -> str:
    """Name of the kernel build in use: ``"avx512"``, ``"avx2"`` or ``"baseline"``.

    ``FASTREC_KERNELS`` (``baseline``, ``avx2`` or ``avx512``) caps the choice.
    """
    cap = os.environ.get("FASTREC_KERNELS", "").lower()
    names = [name for name, _ in _VARIANTS]
    if cap == "baseline":
        return "baseline"
    for name in runnable_variants():
        if cap in names and names.index(name) < names.index(cap):
            continue
        return name
    return "baseline"


_cache: dict[str, ModuleType] = {}


def load_kernel(name: str) -> ModuleType:
    """Import ``fastrec._<name>``, preferring its AVX2 build when usable."""
    module = _cache.get(name)
    if module is not None:
        return module
    variant = kernel_variant()
    if variant != "baseline":
        try:
            module = importlib.import_module(f"fastrec._{name}_{variant}")
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
