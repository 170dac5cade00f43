from __future__ import annotations

import ctypes.util
import json
import os
import socket
import subprocess
import sys

import psutil
import pytest

import fetchml
from fetchml.runner.capabilities import detect_capabilities
from fetchml.runner.gpus import GpuInfo, GpuProvider, NvmlGpuProvider, StaticGpuProvider, gpu_type_of


def test_static_provider_reports_the_declared_gpus() -> None:
    gpus = StaticGpuProvider(3, "NVIDIA A100-SXM4-80GB", memory_mb=81920).detect()
    assert gpus == [
        GpuInfo(index=0, name="NVIDIA A100-SXM4-80GB", memory_mb=81920, uuid=None),
        GpuInfo(index=1, name="NVIDIA A100-SXM4-80GB", memory_mb=81920, uuid=None),
        GpuInfo(index=2, name="NVIDIA A100-SXM4-80GB", memory_mb=81920, uuid=None),
    ]


def test_static_provider_with_zero_gpus() -> None:
    assert StaticGpuProvider(0, "").detect() == []


@pytest.mark.parametrize(
    ("count", "gpu_type", "memory_mb", "match"),
    [(-1, "T4", 0, "0 or more"), (2, " ", 0, "GPU type is required"), (1, "T4", -5, "memory")],
)
def test_static_provider_rejects_nonsense(count: int, gpu_type: str, memory_mb: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StaticGpuProvider(count, gpu_type, memory_mb)


def test_gpu_info_is_frozen() -> None:
    info = GpuInfo(0, "T4", 15360)
    with pytest.raises(AttributeError):
        info.index = 1  # type: ignore[misc]


def test_both_providers_satisfy_the_protocol() -> None:
    providers: list[GpuProvider] = [NvmlGpuProvider(), StaticGpuProvider(1, "T4")]
    for p in providers:
        assert isinstance(p.detect(), list)


def test_gpu_type_of() -> None:
    assert gpu_type_of([]) is None
    assert gpu_type_of(StaticGpuProvider(2, "T4").detect()) == "T4"
    assert gpu_type_of([GpuInfo(0, "T4", 1), GpuInfo(1, "L4", 1)]) is None


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this machine has NVML")
def test_nvml_without_a_driver_means_zero_gpus_not_an_error() -> None:
    provider = NvmlGpuProvider()
    assert provider.detect() == []
    assert provider.last_error is not None and "NVML" in provider.last_error


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is None, reason="needs an NVIDIA driver")
def test_nvml_reports_real_gpus() -> None:
    gpus = NvmlGpuProvider().detect()
    assert gpus and [g.index for g in gpus] == list(range(len(gpus)))
    assert all(g.name and g.memory_mb > 0 and (g.uuid or "").startswith("GPU-") for g in gpus)


def test_nvml_without_the_package_means_zero_gpus() -> None:
    code = (
        "import sys, json\n"
        "sys.modules['pynvml'] = None  # makes `import pynvml` raise ImportError\n"
        "from fetchml.runner.gpus import NvmlGpuProvider\n"
        "p = NvmlGpuProvider()\n"
        "print(json.dumps([p.detect(), p.last_error]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    gpus, reason = json.loads(proc.stdout)
    assert gpus == [] and "not installed" in reason


def test_importing_gpus_does_not_load_pynvml() -> None:
    code = "import sys, fetchml.runner.gpus, fetchml.runner.capabilities; print('pynvml' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False"


def test_capabilities_with_declared_gpus() -> None:
    caps = detect_capabilities(StaticGpuProvider(2, "NVIDIA H100 80GB HBM3", memory_mb=81559), "docker")
    assert caps["cpu_cores"] == psutil.cpu_count(logical=True)
    assert caps["memory_gb"] == psutil.virtual_memory().total // 1024**3
    assert caps["memory_gb"] >= 1
    assert caps["gpu_count"] == 2
    assert caps["gpu_type"] == "NVIDIA H100 80GB HBM3"
    assert caps["gpus"] == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559},
        {"index": 1, "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559},
    ]
    assert caps["executor"] == "docker"
    assert caps["hostname"] == socket.gethostname()
    assert caps["fetchml_version"] == fetchml.__version__
    json.dumps(caps)  # plain data, ready for the wire


def test_capabilities_without_gpus() -> None:
    caps = detect_capabilities(StaticGpuProvider(0, ""), "local")
    assert (caps["gpu_count"], caps["gpu_type"], caps["gpus"], caps["executor"]) == (0, None, [], "local")
    assert caps["cpu_cores"] == (os.cpu_count() or caps["cpu_cores"])
