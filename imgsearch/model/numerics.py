"""The numerics contract: which arithmetic makes which vector, decided without importing torch.

- Image vectors stored by `index` are made in the index numerics: `--precision`, where `auto` is fp16 on a
  GPU (CUDA, Apple MPS), bf16 on a CPU that computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, Arm
  FEAT_BF16), else fp32. Emulated bf16 (any other AVX-512 or AVX2 CPU) is several times slower than fp32,
  so it is never chosen by `auto`. The index records the numerics its vectors were made with.
- Query vectors (texts, and pictures that are not indexed) are always made in fp32, whatever the index
  numerics and whichever path makes them: torch in this process, the ONNX exports, or a running server.
  The text tower is cheap, so fp32 costs a query nothing that matters, and every path gives the same vector.

IMGSEARCH_CPU_BF16=1 or 0 overrides the CPU check, for a CPU it misjudges (and for tests, which run under
both resolutions of `auto` on any machine).
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUERY_PRECISION = "fp32"
CPU_BF16_VARIABLE = "IMGSEARCH_CPU_BF16"

_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def index_precision(device: str, precision: str = "auto") -> str:
    """The numerics image vectors are made with on `device` (a resolved one: cpu, cuda or mps)."""
    if precision != "auto":
        return precision
    if device != "cpu":
        return "fp16"
    return "bf16" if cpu_computes_bf16() else "fp32"


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware ($IMGSEARCH_CPU_BF16 decides when set)."""
    override = os.environ.get(CPU_BF16_VARIABLE, "").strip().lower()
    if override in ("1", "true", "yes", "on"):
        return True
    if override in ("0", "false", "no", "off"):
        return False
    return _detected()


@lru_cache(maxsize=1)
def _detected() -> bool:
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        return bf16_in_flags(cpu_flags(), machine)
    if sys.platform == "darwin" and machine == "arm64":
        return _sysctl_flag(b"hw.optional.arm.FEAT_BF16")
    return False  # Windows and the rest: fp32, the safe choice


def bf16_in_flags(flags: frozenset[str], machine: str) -> bool:
    """Whether a Linux CPU with these /proc/cpuinfo flags computes bf16 natively: AVX512-BF16 or AMX-BF16
    on x86 (plain AVX-512 only emulates it), FEAT_BF16 (`bf16`) on Arm."""
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return bool(_X86_BF16_FLAGS & flags)
    if machine in ("aarch64", "arm64"):
        return "bf16" in flags
    return False


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first processor listed (x86 `flags`, Arm `Features`); empty if unknown."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def _sysctl_flag(name: bytes) -> bool:
    """A macOS sysctl integer that is 1 when the feature is present."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        value = ctypes.c_int(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if libc.sysctlbyname(name, ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
            return False
        return value.value == 1
    except (OSError, AttributeError):
        return False


def describe_cpu() -> str:
    """One line for benchmarks and `status`: the CPU model and the flags that decide the numerics."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    flags = cpu_flags()
    shown = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "bf16", "asimd"))
    return f"{name} [{' '.join(shown) or 'flags unknown'}]"
