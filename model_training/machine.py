"""The machine a measurement ran on, in one line for reports.

The same 2-core machine kind has been seen with different CPUs from day to day, with and
without AVX-512, and training speeds differ by up to 3x between them: every timing names it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """E.g. ``2 CPU cores (x86_64, AMD EPYC, AVX-512)``."""
    parts = [platform.machine()]
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    lines = text.splitlines()
    model = next((line for line in lines if line.startswith("model name")), "")
    if model:
        parts.append(model.split(":", 1)[1].strip())
    flags = next((line for line in lines if line.startswith("flags")), "")
    if flags:
        parts.append("AVX-512" if " avx512f" in flags else "no AVX-512")
    return f"{os.cpu_count()} CPU cores ({', '.join(parts)})"
