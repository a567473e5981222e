"""What TensorRT and CUDA offer on this machine, asked before any TensorRT object is made.

TensorRT can abort the process when it is used without a working CUDA device, so the engine builder
(:mod:`landmark_edge.export.tensorrt`) and the TensorRT runtime (:mod:`landmark_edge.runtime.tensorrt`) both ask
:func:`gpu_info` first; every missing piece is one line, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from landmark_edge.errors import BackendUnavailable


class TensorRTUnavailable(BackendUnavailable):
    """TensorRT, cuda-python or a CUDA device is missing; the message says which."""


def import_tensorrt():
    """The ``tensorrt`` module, or one line saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(
            "tensorrt is not installed: pip install 'landmark-edge[tensorrt]' (on Jetson: JetPack's python3-libnvinfer)"
        ) from None
    return tensorrt


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "8.7"


def gpu_info(index: int = 0) -> GpuInfo:
    """The CUDA device TensorRT will use, through cuda-python or torch; no device is one line."""
    cudart = cuda_runtime()
    if cudart is not None:
        error, count = cudart.cudaGetDeviceCount()
        if error != cudart.cudaError_t.cudaSuccess or count <= index:
            reason = "no CUDA device" if error == cudart.cudaError_t.cudaSuccess else _cuda_error_name(cudart, error)
            raise TensorRTUnavailable(f"TensorRT needs CUDA device {index}, but: {reason}")
        error, props = cudart.cudaGetDeviceProperties(index)
        check_cuda(cudart, error, "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return GpuInfo(index, name, f"{props.major}.{props.minor}")
    if torch.cuda.is_available() and torch.cuda.device_count() > index:
        major, minor = torch.cuda.get_device_capability(index)
        return GpuInfo(index, torch.cuda.get_device_name(index), f"{major}.{minor}")
    raise TensorRTUnavailable(
        f"TensorRT needs CUDA device {index}, but neither cuda-python nor torch sees one "
        "(pip install 'landmark-edge[tensorrt]' for cuda-python; check the driver with nvidia-smi)"
    )


def cuda_runtime():
    try:
        from cuda.bindings import runtime
    except ImportError:
        return None
    return runtime


def _cuda_error_name(cudart, error) -> str:
    _, name = cudart.cudaGetErrorName(error)
    return name.decode() if isinstance(name, bytes) else str(name)


def check_cuda(cudart, error, call: str) -> None:
    if error != cudart.cudaError_t.cudaSuccess:
        raise TensorRTUnavailable(f"CUDA call {call} failed: {_cuda_error_name(cudart, error)}")
