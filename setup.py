"""Build the Cython + OpenMP kernels in ext/ into modules of the fastrec package.

Every ``ext/_NAME.pyx`` becomes ``fastrec._NAME`` built with portable flags
(``-O3``, baseline ISA) and, on x86-64, also ``fastrec._NAME_avx2`` (``-mavx2
-mfma``) and ``fastrec._NAME_avx512`` (AVX-512 F/DQ/VL/BW).  ``fastrec._kernels`` picks the fastest variant the running
CPU supports, so a wheel is fast without ``-march=native``.

Environment variables
---------------------
FASTREC_NATIVE=1   add ``-march=native`` to every variant (not portable).
FASTREC_DEBUG=1    build with Cython bounds checks, ``-O1 -g`` and no ISA variants.
FASTREC_ASAN=1     with FASTREC_DEBUG, also compile with AddressSanitizer.
"""
import hashlib
import os
import platform
import shutil
import sys
import sysconfig
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# setuptools wants source paths relative to the project root
os.chdir(Path(__file__).parent.resolve())
EXT_DIR = Path("ext")
VARIANT_DIR = Path("build") / "ext_variants"

native = os.environ.get("FASTREC_NATIVE", "") == "1"
debug = os.environ.get("FASTREC_DEBUG", "") == "1"
asan = debug and os.environ.get("FASTREC_ASAN", "") == "1"
is_x86 = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"

if sys.platform == "win32":
    base_compile, base_link = ["/O2", "/openmp"], []
elif sys.platform == "darwin":  # Apple clang needs libomp; build serial otherwise
    base_compile, base_link = ["-O3", "-Xpreprocessor", "-fopenmp"], ["-lomp"]
else:
    base_compile, base_link = ["-O3", "-fopenmp", "-fno-math-errno"], ["-fopenmp"]

if debug:
    base_compile = [f for f in base_compile if not f.startswith("-O")] + ["-O1", "-g"]
    if asan:
        base_compile += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        base_link += ["-fsanitize=address"]
if native:
    base_compile.append("-march=native")

directives = {
    "language_level": "3",
    "boundscheck": debug,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": debug,
    "nonecheck": False,
    "embedsignature": True,
}

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def _extension(name, source, extra):
    return Extension(
        f"fastrec.{name}",
        [str(source)],
        include_dirs=[np.get_include(), str(EXT_DIR.resolve())],
        extra_compile_args=base_compile + extra,
        extra_link_args=base_link,
        define_macros=macros,
    )


# x86-64 builds besides the portable one; fastrec._kernels picks the best the CPU runs
ISA_VARIANTS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw",
               "-mprefer-vector-width=512"],
}


def _isa_variant(source, suffix):
    """A one-line .pyx that textually includes ``source`` under another module name."""
    VARIANT_DIR.mkdir(parents=True, exist_ok=True)
    stub = VARIANT_DIR / f"{source.stem}_{suffix}.pyx"
    text = f'include "{source.name}"\n'
    if not stub.exists() or stub.read_text() != text:
        stub.write_text(text)
    return stub


extensions = []
for source in sorted(EXT_DIR.glob("_*.pyx")):
    extensions.append(_extension(source.stem, source, []))
    if is_x86 and not debug and not native:
        for suffix, flags in ISA_VARIANTS.items():
            extensions.append(_extension(f"{source.stem}_{suffix}", _isa_variant(source, suffix), flags))

class CachedParallelBuildExt(build_ext):
    """build_ext that compiles extensions in parallel and reuses identical builds.

    ``pip install .`` and then ``pip install -e .`` (the README's two commands)
    would compile every kernel twice.  Each built module is kept in
    ``build/ext_cache`` under a key made of the kernel sources in ``ext/``, the
    compiler flags and the Cython, NumPy and Python versions, and copied
    instead of compiled when the key matches.  ``FASTREC_BUILD_JOBS`` sets the parallel jobs
    (default: the CPU count).
    """

    cache_dir = Path("build") / "ext_cache"

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = int(os.environ.get("FASTREC_BUILD_JOBS", "0")) or os.cpu_count() or 1

    def copy_file(self, infile, outfile, *args, **kwargs):
        """Copy a built module into the tree as a new file renamed into place: a process
        that has the old module loaded keeps its mapping intact (truncating it would crash it)."""
        if os.path.isdir(outfile):
            outfile = os.path.join(outfile, os.path.basename(infile))
        staged = outfile + ".tmp"
        shutil.copyfile(infile, staged)
        os.replace(staged, outfile)
        return outfile, True

    def _key(self, ext):
        # From the kernel sources, not the generated C: Cython writes the paths of the
        # isolated build environment into the C, and pip makes a new one for every install.
        import Cython
        digest = hashlib.sha256()
        module = ext.name.split(".")[-1]
        for suffix in ISA_VARIANTS:
            module = module[: -len(suffix) - 1] if module.endswith("_" + suffix) else module
        # the module's own .pyx and the shared includes
        for source in sorted(EXT_DIR.glob("*")):
            if source.name == f"{module}.pyx" or source.suffix in (".pxi", ".pxd", ".h"):
                digest.update(source.name.encode() + b"\0" + source.read_bytes())
        digest.update(repr((ext.name, ext.extra_compile_args, ext.extra_link_args, ext.define_macros,
                            Cython.__version__, np.__version__, sys.version, sysconfig.get_platform())).encode())
        return digest.hexdigest()[:32]

    def build_extension(self, ext):
        target = Path(self.get_ext_fullpath(ext.name))
        cached = self.cache_dir / f"{ext.name}-{self._key(ext)}{target.suffix}"
        if cached.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # a new file renamed into place: a process that has the old module loaded keeps it intact
            staged = target.with_name(target.name + ".tmp")
            shutil.copyfile(cached, staged)
            os.replace(staged, target)
            return
        super().build_extension(ext)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            shutil.copyfile(target, tmp)
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only tree builds without the cache


setup(
    cmdclass={"build_ext": CachedParallelBuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=[str(EXT_DIR)],
        nthreads=int(os.environ.get("FASTREC_BUILD_JOBS", "2")),
    ),
)
