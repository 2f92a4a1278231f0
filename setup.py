"""Builds the Cython hot path. FASTPUSH_ANNOTATE=1 writes Cython's HTML annotation; FASTPUSH_DEBUG=1 builds
without optimisation."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FASTPUSH_DEBUG") == "1"
extensions = [
    Extension(
        "fastpush._fanout",
        ["fastpush/_fanout.pyx"],
        extra_compile_args=["-O0", "-g"] if debug else ["-O3"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=os.environ.get("FASTPUSH_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": debug,
            "wraparound": debug,
            "cdivision": True,
            "embedsignature": True,
        },
    )
)
