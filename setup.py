"""Build script for bciarm's compiled parts.

Everything declarative lives in ``pyproject.toml``; this file exists for two
things setuptools cannot express there:

* the Cython extensions built from ``ext/`` (Kalman-filter kernels, the bus
  codec's fast path), and
* mapping the top-level ``configs/`` and ``scenes/`` folders into the package
  as ``bciarm.configs`` and ``bciarm.scenes`` so an installed bciarm finds its
  built-in graphs and scenes by name (``importlib.resources``).
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

extensions = [
    Extension(
        "bciarm.decoders._kalman",
        sources=["ext/_kalman.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "bciarm.bus._codec",
        sources=["ext/_codec.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    ),
]

setup(
    packages=find_packages(include=["bciarm", "bciarm.*"]) + ["bciarm.configs", "bciarm.scenes"],
    package_dir={
        "bciarm": "bciarm",
        "bciarm.configs": "configs",
        "bciarm.scenes": "scenes",
    },
    package_data={
        "bciarm.configs": ["*.yaml", "patients/*.yaml", "plans/*.yaml"],  # patient profiles, session plans
        "bciarm.scenes": ["*.yaml", "*.urdf", "assets/*"],
    },
    include_package_data=False,
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    zip_safe=False,
)
