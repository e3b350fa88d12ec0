"""What the numbers were measured on: CPU model, cores, ISA flags that decide INT8 speed, memory, versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
PACKAGES = (
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "flwr",
    "grpcio",
    "protobuf",
    "tritonclient",
    "opacus",
)


def _cpuinfo() -> dict[str, str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def _gpu() -> str | None:
    """nvidia-smi's name, memory and driver of each GPU, and the execution providers ONNX Runtime offers."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    gpus = "; ".join(line.strip().replace(", ", " / ") for line in out.stdout.splitlines() if line.strip())
    try:
        import onnxruntime as ort

        providers = ", ".join(ort.get_available_providers())
    except ImportError:
        providers = "onnxruntime not installed"
    return f"{gpus} (name / memory / driver); ONNX Runtime providers: {providers}"


def machine_info() -> dict:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        mem_kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        mem_kb = 0
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": info.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in FLAGS},
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "gpu": _gpu(),
    }
