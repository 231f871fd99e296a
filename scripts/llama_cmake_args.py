"""Print the CMAKE_ARGS that build llama.cpp for this machine's CPU.

llama.cpp's native build (-march=native) enables AMX on CPUs that report it, and its AMX kernels
crash on some of them. We build with GGML_NATIVE=OFF and name each instruction set the CPU has,
from /proc/cpuinfo, so the build works both on AVX512 machines and on CPUs without AVX512.
"""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flag -> ggml CMake option
X86_FEATURES = {
    "sse4_2": "GGML_SSE42",
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "bmi2": "GGML_BMI2",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
    "avx_vnni": "GGML_AVX_VNNI",
}
ALWAYS_OFF = ["GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16", "GGML_CUDA", "GGML_METAL"]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args() -> list[str]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ["-DGGML_NATIVE=ON"]
    flags = cpu_flags()
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for flag, opt in X86_FEATURES.items()]
    args += [f"-D{opt}=OFF" for opt in ALWAYS_OFF]
    return args


if __name__ == "__main__":
    print(" ".join(cmake_args()))
