"""The bench header: GPU, driver, CUDA, CPU and library versions, read from the libraries themselves (each
backend's library is the one its registry entry names, so a new backend's version is in the header too)."""

from __future__ import annotations

import functools
import importlib
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

from landmark_edge import __version__
from landmark_edge.bench.results import Environment
from landmark_edge.runtime.registry import backend_specs


def collect_environment(device: torch.device) -> Environment:
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return Environment(
        host=socket.gethostname(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu=cpu_name(),
        cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        gpu=torch.cuda.get_device_name(device) if cuda else None,
        gpu_driver=_nvidia_driver() if cuda else None,
        cuda=torch.version.cuda,
        cudnn=str(torch.backends.cudnn.version()) if cuda and torch.backends.cudnn.is_available() else None,
        torch=torch.__version__,
        libraries={library: _module_version(library) for library in dict.fromkeys(s.library for s in backend_specs())},
        landmark_edge=__version__,
        git_commit=_git_commit(),
    )


@functools.cache
def cpu_name() -> str:
    """The CPU's marketing name (py-cpuinfo reads it on every OS; it takes about a second, hence the cache)."""
    try:
        import cpuinfo

        return cpuinfo.get_cpu_info().get("brand_raw") or platform.processor() or "unknown"
    except ImportError:
        return platform.processor() or "unknown"


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version through NVML (nvidia-ml-py); None where NVML is not installed."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # noqa: BLE001 - no NVML library or no driver: the header says unknown
        return None


def _module_version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:  # noqa: BLE001 - absent or broken install (missing CUDA libraries): not installed here
        return None


def _git_commit() -> str | None:
    """The source tree's commit, when running from a git checkout (plus ``-dirty`` with local changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
