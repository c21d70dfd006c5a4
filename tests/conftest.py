"""Shared pytest setup.

Makes ``tests/`` importable (``from reference import ...``) and provides
fixtures that run kernel tests against every compiled variant this CPU can
execute (the portable build and, where supported, the AVX2 and AVX-512
builds), not only the one ``load_kernel`` picks.

A missing or broken variant build fails the session before any test runs:
``load_kernel`` quietly falls back to the portable build, so otherwise the
suite would pass while the fast kernels users get were never built or tested.
The one exception is a build that makes no ISA variants on purpose (see
``setup.py``): ``FASTREC_DEBUG=1`` or ``FASTREC_NATIVE=1``.  It is recognised
when no variant module exists at all and either that variable is set while
testing or the kernels are built with AddressSanitizer (the CI debug job,
``.ci/run``, builds with ``FASTREC_DEBUG=1 FASTREC_ASAN=1`` and runs the tests
without those variables).  Such a run sets ``FASTREC_KERNELS=baseline``, so the
models use this build's kernels too: with an editable install of another tree,
``fastrec._NAME_avx2`` would otherwise resolve to that tree's optimised build.
Only modules inside this ``fastrec`` package count as built, and the kernels
checked are those with a built module there (a new ``ext/*.pyx`` still being
written is not a broken build).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))


import fastrec as _fastrec  # noqa: E402
from fastrec import kernels as _kernels  # noqa: E402

_ISA_NAMES = [name for name, _ in getattr(_kernels, "_VARIANTS", ())] or ["avx2", "avx512"]


def _built_kernels() -> list[str]:
    """Kernel names with a module (portable or variant) in this package, plus those the fixtures need.

    Built modules, not ``ext/*.pyx``: a kernel source that is still being written is not a broken build.
    """
    names = {"als", "topk"}
    for directory in _fastrec.__path__:
        for path in Path(directory).iterdir():
            suffix = next((s for s in importlib.machinery.EXTENSION_SUFFIXES if path.name.endswith(s)), None)
            if suffix is None or not path.name.startswith("_"):
                continue
            name = path.name[1:-len(suffix)]
            for isa in _ISA_NAMES:
                if name.endswith(f"_{isa}"):
                    name = name[:-len(isa) - 1]
            names.add(name)
    return sorted(names)


_KERNELS = _built_kernels()


def _variant_names(name: str) -> list[str]:
    return [f"fastrec._{name}_{variant}" for variant in _kernels.runnable_variants()]


def _exists(module_name: str) -> bool:
    """Whether this fastrec package (not another tree, say through an editable install) has the module."""
    try:
        spec = importlib.util.find_spec(module_name)
    except ImportError:
        return False
    return spec is not None and spec.origin is not None and _in_package(spec.origin)


def _in_package(path: str) -> bool:
    return str(Path(path).resolve().parent) in {str(Path(p).resolve()) for p in _fastrec.__path__}


def _variantless_build() -> str | None:
    """Why the build has no ISA variant modules on purpose, or None if it should have them."""
    if any(_exists(module) for name in _KERNELS for module in _variant_names(name)):
        return None  # some variants were built, so all of them should have been
    for flag in ("FASTREC_DEBUG", "FASTREC_NATIVE"):
        if os.environ.get(flag, "") == "1":
            return f"{flag}=1"
    spec = importlib.util.find_spec("fastrec._topk")
    if spec is not None and spec.origin and b"__asan_init" in Path(spec.origin).read_bytes():
        return "an AddressSanitizer debug build"
    return None


def _import_builds(name: str) -> tuple[list, list[str]]:
    """The builds of ``fastrec._<name>`` to test, and what is wrong with the expected ones."""
    modules, problems = [], []
    expected = [f"fastrec._{name}"] + ([] if _VARIANTLESS else _variant_names(name))
    for module_name in expected:
        if not _exists(module_name):
            problems.append(f"{module_name} is missing from {_fastrec.__path__[0]}")
            continue
        try:
            modules.append(importlib.import_module(module_name))
        except ImportError as exc:
            problems.append(f"{module_name} cannot be imported: {type(exc).__name__}: {exc}")
    return modules, problems


_VARIANTLESS = _variantless_build()
if _VARIANTLESS:
    # load_kernel must not pick a variant from elsewhere (an editable install of another tree
    # resolves fastrec._NAME_avx2 there): the models run this build's portable kernels
    os.environ.setdefault("FASTREC_KERNELS", "baseline")
_BUILDS = {name: _import_builds(name) for name in _KERNELS}


def pytest_sessionstart(session):
    problems = [problem for _, found in _BUILDS.values() for problem in found]
    if problems:
        pytest.exit(
            "fastrec's kernel builds are incomplete; this CPU runs the ISA variants "
            f"{_kernels.runnable_variants()} and every one must be built and importable:\n  "
            + "\n  ".join(problems)
            + "\nRebuild (pip install -e . or python setup.py build_ext --inplace).  For a build "
              "without ISA variants on purpose, run the tests with FASTREC_DEBUG=1 (or FASTREC_NATIVE=1) set.",
            returncode=pytest.ExitCode.TESTS_FAILED)


def kernel_variants(name: str) -> list:
    """The builds of ``fastrec._<name>`` this CPU can run (the session stops if one is missing)."""
    return _BUILDS[name][0] if name in _BUILDS else _import_builds(name)[0]


def _kernel_fixture(name: str):
    """A fixture giving each build of ``fastrec._<name>`` in turn."""
    @pytest.fixture(params=kernel_variants(name), ids=lambda module: module.__name__.rsplit(".", 1)[-1])
    def fixture(request):
        return request.param
    fixture.__doc__ = f"Each build of the {name} kernel module."
    return fixture


# als_kernel, topk_kernel, sgd_kernel, knn_kernel
for _name in ("als", "topk", "sgd", "knn"):
    globals()[f"{_name}_kernel"] = _kernel_fixture(_name)
