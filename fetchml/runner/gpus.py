"""Which GPUs a worker has.

Two providers behind one protocol: `NvmlGpuProvider` asks the NVIDIA driver (NVML, package
nvidia-ml-py), `StaticGpuProvider` reports what an admin declared (``--gpus N --gpu-type T``, like
Slurm's gres.conf) and is what tests use on machines without an NVIDIA GPU.

GPU indices are NVML indices, i.e. PCI bus order. The executors set CUDA_DEVICE_ORDER=PCI_BUS_ID
so that CUDA numbers the devices the same way (its default, FASTEST_FIRST, may not on mixed boxes).

pynvml is imported only inside `NvmlGpuProvider.detect()`: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["GpuInfo", "GpuProvider", "NvmlGpuProvider", "StaticGpuProvider", "gpu_type_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML index (PCI bus order); what CUDA_VISIBLE_DEVICES and docker device_ids name
    name: str  # e.g. "NVIDIA H100 80GB HBM3"
    memory_mb: int  # total memory, MiB
    uuid: str | None = None  # "GPU-8a3c...", None when unknown (static provider)


class GpuProvider(Protocol):
    def detect(self) -> list[GpuInfo]:
        """The GPUs of this machine, by index. Never raises: no GPUs is an empty list."""
        ...


def _text(value: Any) -> str:
    """NVML strings are bytes in old nvidia-ml-py releases and str in new ones."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class NvmlGpuProvider:
    """Asks NVML. No driver, no library, no permission: zero GPUs and the reason in `last_error`.

    A device that fails on its own (e.g. "GPU is lost") is left out; the others keep their indices.
    """

    def __init__(self) -> None:
        self.last_error: str | None = None

    def detect(self) -> list[GpuInfo]:
        self.last_error = None
        try:
            import pynvml
        except ImportError as exc:
            self.last_error = f"nvidia-ml-py is not installed: {exc}"
            log.info("no GPUs: %s", self.last_error)
            return []
        try:
            pynvml.nvmlInit()
        except (pynvml.NVMLError, OSError) as exc:
            self.last_error = f"NVML is not available: {exc}"
            log.info("no GPUs: %s", self.last_error)
            return []
        gpus: list[GpuInfo] = []
        try:
            count = pynvml.nvmlDeviceGetCount()
            for index in range(count):
                try:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                    name = _text(pynvml.nvmlDeviceGetName(handle))
                    memory_mb = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024)
                except pynvml.NVMLError as exc:
                    self.last_error = f"GPU {index}: {exc}"
                    log.warning("leaving out GPU %d: %s", index, exc)
                    continue
                try:
                    uuid: str | None = _text(pynvml.nvmlDeviceGetUUID(handle))
                except pynvml.NVMLError:
                    uuid = None
                gpus.append(GpuInfo(index=index, name=name, memory_mb=memory_mb, uuid=uuid))
        except pynvml.NVMLError as exc:
            self.last_error = f"NVML: {exc}"
            log.warning("no GPUs: %s", self.last_error)
            return []
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
        return gpus


class StaticGpuProvider:
    """`count` GPUs named `gpu_type`, indices 0..count-1: the admin's declaration."""

    def __init__(self, count: int, gpu_type: str, memory_mb: int = 0) -> None:
        if count < 0:
            raise ValueError(f"GPU count must be 0 or more, not {count}")
        if count > 0 and not gpu_type.strip():
            raise ValueError("a GPU type is required when declaring GPUs (--gpu-type)")
        if memory_mb < 0:
            raise ValueError(f"GPU memory must be 0 or more MB, not {memory_mb}")
        self.count = count
        self.gpu_type = gpu_type.strip()
        self.memory_mb = memory_mb

    def detect(self) -> list[GpuInfo]:
        return [GpuInfo(index=i, name=self.gpu_type, memory_mb=self.memory_mb) for i in range(self.count)]


def gpu_type_of(gpus: Sequence[GpuInfo]) -> str | None:
    """The name all `gpus` share; None when there are none or they differ."""
    names = {g.name for g in gpus}
    return names.pop() if len(names) == 1 else None
