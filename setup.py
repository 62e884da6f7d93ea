"""Builds weighttui's three C extensions: the fused CPU statistics kernel, the CRC-32 of the log
format with carry-less multiplication (what a reader verifies every frame with; docs/store.md), and
the decoder of the common snapshot payload (log/native/frames.c; docs/store.md).

Everything else is in pyproject.toml. All three are optional: without a C compiler the
install goes on and weighttui uses its torch-ops path instead of the kernel
(slower on the CPU, same numbers; see docs/torch.md) and zlib.crc32 instead of
the folded CRC (the same values, about 3 GB/s instead of 10+), and msgpack with the checks of
log/records.py instead of the snapshot decoder (the same records, slower).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

POSIX = os.name == "posix"
KERNEL_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=gnu11", "-pthread"]
BASELINE = ("WEIGHTTUI_FASTATS_BASELINE", None)


class BuildExt(build_ext):
    """The kernel's hot loops have AVX2 and AVX-512 clones (fastats.c HOT; no -march: the build
    runs anywhere); a toolchain that cannot build them (an assembler without AVX-512) gets the
    baseline loops alone, a slower kernel rather than none."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception:
            if ext.name != "weighttui._fastats" or BASELINE in ext.define_macros:
                raise
            print("weighttui._fastats: building without the AVX2/AVX-512 clones")
            ext.define_macros.append(BASELINE)
            super().build_extension(ext)


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "weighttui._fastats",
            ["weighttui/record/native/fastats.c"],
            extra_compile_args=KERNEL_FLAGS if POSIX else [],
            extra_link_args=["-pthread"] if POSIX else [],
            optional=True,
        ),
        Extension(
            "weighttui._crc32",
            ["weighttui/log/native/crc32.c"],
            depends=["weighttui/log/native/crc32_core.h"],
            extra_compile_args=["-O2", "-std=gnu11"] if POSIX else [],
            optional=True,
        ),
        Extension(
            "weighttui._frames",
            ["weighttui/log/native/frames.c"],
            depends=["weighttui/log/native/crc32_core.h"],
            extra_compile_args=["-O3", "-std=gnu11"] if POSIX else [],  # (-O3: the counts' loops vectorized)
            optional=True,
        ),
    ]
)
