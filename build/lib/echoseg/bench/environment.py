"""Where a benchmark ran: CPU, cores, memory, GPU and driver, library versions (no heavy imports)."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distribution names to report, first installed one wins for each label.
PACKAGES = {
    "echoseg": ("echoseg",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python"),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
    "openvino": ("openvino",),
    "nvidia-ml-py": ("nvidia-ml-py", "pynvml"),
    "psutil": ("psutil",),
}


def package_version(names: tuple[str, ...]) -> str:
    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: /proc/cpuinfo flags that decide which CPU kernels run fast (integer dot products, BF16/FP16, AMX)
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FEATURES if f in flags]
    except OSError:
        pass
    return []


def environment(gpu_index: int = 0) -> dict[str, Any]:
    """A JSON-ready description of this machine and software."""
    import psutil

    from .sampler import gpu_description

    gpu = gpu_description(gpu_index)
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
        "gpu": gpu["name"] if gpu else "none",
        "gpu_driver": gpu["driver"] if gpu else "n/a",
        "gpu_memory_mb": gpu["memory_mb"] if gpu else "n/a",
        "versions": {label: package_version(names) for label, names in PACKAGES.items()},
    }
