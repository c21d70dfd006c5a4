"""Shared pytest setup.

Makes ``tests/`` importable (``from reference import ...``) and provides
fixtures that run kernel tests against every compiled variant this CPU can
execute (the portable build and, where supported, the AVX2 build), not only
the one ``load_kernel`` picks.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


from fastrec import kernels as _kernels  # noqa: E402


def kernel_variants(name: str) -> list:
    """The importable builds of ``fastrec._<name>`` that this CPU can run."""
    names = [f"fastrec._{name}"] + [f"fastrec._{name}_{variant}"
                                    for variant in _kernels.runnable_variants()]
    modules = []
    for module_name in names:
        try:
            modules.append(importlib.import_module(module_name))
        except ImportError:
            pass
    return modules


@pytest.fixture(params=kernel_variants("als"), ids=lambda module: module.__name__.rsplit(".", 1)[-1])
def als_kernel(request):
    """Each build of the ALS kernel module."""
    return request.param


@pytest.fixture(params=kernel_variants("topk"), ids=lambda module: module.__name__.rsplit(".", 1)[-1])
def topk_kernel(request):
    """Each build of the top-K kernel module."""
    return request.param
