"""Builds weighttui's one C extension, the fused CPU statistics kernel.

Everything else is in pyproject.toml. The extension is optional: without a C
compiler the install goes on and weighttui uses its torch-ops path instead
(slower on the CPU, same numbers; see docs/torch.md).
"""

import os

from setuptools import Extension, setup

POSIX = os.name == "posix"

setup(
    ext_modules=[
        Extension(
            "weighttui._fastats",
            ["weighttui/record/native/fastats.c"],
            extra_compile_args=["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=gnu11", "-pthread"] if POSIX else [],
            extra_link_args=["-pthread"] if POSIX else [],
            optional=True,
        )
    ]
)
