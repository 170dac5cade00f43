"""What a worker offers: CPUs, memory, GPUs, executor, host. A plain dict; the worker maps it onto
the wire model it registers with."""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil

import fetchml
from fetchml.runner.gpus import GpuProvider, gpu_type_of

__all__ = ["detect_capabilities"]


def detect_capabilities(gpu_provider: GpuProvider, executor_name: str) -> dict[str, Any]:
    """cpu_cores (logical), memory_gb (total, whole GB rounded down), gpu_count, gpu_type (the
    common name, None when none or mixed), gpus (index/name/memory_mb), executor, hostname,
    fetchml_version."""
    gpus = gpu_provider.detect()
    return {
        "cpu_cores": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "memory_gb": psutil.virtual_memory().total // (1024**3),
        "gpu_count": len(gpus),
        "gpu_type": gpu_type_of(gpus),
        "gpus": [{"index": g.index, "name": g.name, "memory_mb": g.memory_mb} for g in gpus],
        "executor": executor_name,
        "hostname": socket.gethostname(),
        "fetchml_version": fetchml.__version__,
    }
