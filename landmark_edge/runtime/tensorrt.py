"""TensorRT runtime backend: a landmark-edge engine file run with named I/O tensors on a CUDA stream.

Written to the ``tensorrt`` Python API shared by 10.x and 11.x (``num_io_tensors``/``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``). Device memory comes from torch when torch
has CUDA (then the z-score and the decoder also run on the GPU and only coordinates are copied back), else from
cuda-python (``cuda.bindings.runtime``). TensorRT can abort the process when it is used without a working CUDA
device, so :func:`landmark_edge.tensorrt_probe.gpu_info` is asked first and every missing piece is one line,
never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import CONFIDENCE, HEATMAPS, INPUT, LANDMARKS, EngineFileError, EngineHeader, read_engine
from landmark_edge.decode import DecodeMethod, decode_heatmaps
from landmark_edge.runtime.backend import Backend, BackendRequest, BuiltFor, Prediction, check_built_for
from landmark_edge.tensorrt_probe import TensorRTUnavailable, check_cuda, cuda_runtime, gpu_info, import_tensorrt
from landmark_edge.transforms import zscore_batch

if TYPE_CHECKING:  # the 10.x type stubs (tensorrt-stubs): tests/test_tensorrt_api.py runs mypy against them
    import tensorrt


def check_header(path: str | Path, header: EngineHeader, tensorrt_version: str, gpu_name: str, capability: str) -> None:
    """Refuse an engine this runtime cannot run, naming what differs and how to rebuild.

    Without compatibility flags an engine needs the exact TensorRT version and the same compute capability
    (a different GPU model of the same capability is accepted, as TensorRT does). A version-compatible engine
    runs on the same or a later TensorRT of the same major version; a hardware-compatible one on any GPU the
    level allows.
    """
    problems = []
    built, here = _version(header.tensorrt_version), _version(tensorrt_version)
    if header.version_compatible:
        if built[0] != here[0] or here < built:
            problems.append(f"TensorRT {header.tensorrt_version} (version-compatible), runtime {tensorrt_version}")
    elif built != here:
        problems.append(f"TensorRT {header.tensorrt_version}, runtime {tensorrt_version}")
    if header.hardware_compatibility == "ampere_plus":
        if _version(capability) < (8, 0):
            problems.append(f"Ampere or newer GPUs, this GPU is {gpu_name} ({capability})")
    elif header.compute_capability != capability:
        problems.append(f"compute capability {header.compute_capability} ({header.gpu_name}), this GPU is "
                        f"{gpu_name} ({capability})")  # fmt: skip
    if problems:
        raise EngineFileError(
            f"{path}: built for {'; '.join(problems)}: rebuild it here with "
            f"`landmark-edge build MODEL.onnx --precision {header.precision} -o {Path(path).name}`"
        )


def built_for(header: EngineHeader) -> BuiltFor:
    """What an engine was built for, from its header (read without TensorRT or a GPU)."""
    return BuiltFor("engine", header.anatomy, header.precision, header.batch[2], "landmark-edge build MODEL.onnx")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


# --- device memory: torch CUDA tensors or cuda-python allocations -----------------------------------------------


class DeviceMemory(Protocol):
    """What the backend needs from a device: buffers, copies, one stream."""

    stream: int

    def prepare_input(self, pixels: np.ndarray) -> Any: ...  # z-scored (B, 1, H, W) float32 on the device
    def empty(self, shape: tuple[int, ...]) -> Any: ...  # float32
    def address(self, buffer: Any) -> int: ...
    def to_host(self, buffer: Any) -> np.ndarray: ...
    def synchronize(self) -> None: ...


class TorchCuda:
    """Buffers as torch CUDA tensors; z-score and decoding on the GPU, so only raw pixels and coordinates move.

    Everything (upload, z-score, the engine, the decoder) is queued on torch's current stream of the device,
    so the work is ordered without extra events.
    """

    def __init__(self, index: int) -> None:
        self.device = torch.device("cuda", index)
        self.stream = torch.cuda.current_stream(self.device).cuda_stream

    def prepare_input(self, pixels: np.ndarray) -> torch.Tensor:
        raw = torch.from_numpy(np.ascontiguousarray(pixels)).pin_memory().to(self.device, non_blocking=True)
        return zscore_batch(raw).contiguous()

    def empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def address(self, buffer: torch.Tensor) -> int:
        return buffer.data_ptr()

    def to_host(self, buffer: torch.Tensor) -> np.ndarray:
        return buffer.cpu().numpy()

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


@dataclass
class _Allocation:
    pointer: int
    shape: tuple[int, ...]


class CudaPython:
    """Buffers from cuda-python when torch has no CUDA; the z-score runs on the host (fp32) before upload."""

    def __init__(self, cudart) -> None:
        self.cudart = cudart
        error, stream = cudart.cudaStreamCreate()
        check_cuda(cudart, error, "cudaStreamCreate")
        self.stream = int(stream)
        self._allocations: list[int] = []

    def prepare_input(self, pixels: np.ndarray) -> _Allocation:
        host = np.ascontiguousarray(zscore_batch(torch.from_numpy(np.ascontiguousarray(pixels))).numpy())
        buffer = self.empty(host.shape)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        (error,) = self.cudart.cudaMemcpyAsync(buffer.pointer, host.ctypes.data, host.nbytes, kind, self.stream)
        check_cuda(self.cudart, error, "cudaMemcpyAsync")
        self.synchronize()  # ``host`` must outlive the copy
        return buffer

    def empty(self, shape: tuple[int, ...]) -> _Allocation:
        error, pointer = self.cudart.cudaMalloc(int(np.prod(shape)) * 4)
        check_cuda(self.cudart, error, "cudaMalloc")
        self._allocations.append(int(pointer))
        return _Allocation(int(pointer), tuple(shape))

    def address(self, buffer: _Allocation) -> int:
        return buffer.pointer

    def to_host(self, buffer: _Allocation) -> np.ndarray:
        host: np.ndarray = np.empty(buffer.shape, dtype=np.float32)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        (error,) = self.cudart.cudaMemcpyAsync(host.ctypes.data, buffer.pointer, host.nbytes, kind, self.stream)
        check_cuda(self.cudart, error, "cudaMemcpyAsync")
        self.synchronize()
        return host

    def synchronize(self) -> None:
        (error,) = self.cudart.cudaStreamSynchronize(self.stream)
        check_cuda(self.cudart, error, "cudaStreamSynchronize")

    def release(self) -> None:
        """Free this batch's buffers (one allocation set per run keeps the code simple; batches are large)."""
        for pointer in self._allocations:
            self.cudart.cudaFree(pointer)
        self._allocations.clear()


def default_device(index: int) -> DeviceMemory:
    if torch.cuda.is_available():
        return TorchCuda(index)
    cudart = cuda_runtime()
    if cudart is None:
        raise TensorRTUnavailable("TensorRT runtime needs torch with CUDA or cuda-python (pip install cuda-python)")
    return CudaPython(cudart)


# --- the backend -----------------------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    """Runs a landmark-edge engine file; uses the engine's decoded outputs when they match ``decode``."""

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        anatomy: Anatomy,
        decode: DecodeMethod | str = DecodeMethod.SUBPIXEL,
        device_index: int = 0,
        device: DeviceMemory | None = None,
        *,
        precision: str | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(anatomy, decode)
        self.header, blob = read_engine(engine_path)
        self.precision, self.artifact_weights_sha256 = self.header.precision, self.header.weights_sha256 or None
        check_built_for(engine_path, built_for(self.header), anatomy, precision, max_batch_size)  # before a GPU
        trt = import_tensorrt()
        gpu = gpu_info(device_index)
        check_header(engine_path, self.header, str(trt.__version__), gpu.name, gpu.compute_capability)
        self.memory = device or default_device(device_index)
        # Backend.run_timed times with CUDA events on torch's stream, where the engine runs when torch has CUDA
        self.device = torch.device("cuda", device_index) if isinstance(self.memory, TorchCuda) else torch.device("cpu")
        self._logger: tensorrt.Logger = trt.Logger(trt.Logger.WARNING)
        self._runtime: tensorrt.Runtime = trt.Runtime(self._logger)
        if self.header.version_compatible:  # the engine carries its own lean runtime, which must be allowed to run
            self._runtime.engine_host_code_allowed = True
        self.engine: tensorrt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise TensorRTUnavailable(f"{engine_path}: TensorRT could not deserialize the engine (see its log)")
        self.context: tensorrt.IExecutionContext = self.engine.create_execution_context()
        self.outputs = [
            name
            for name in (self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT
        ]
        self.graph_decodes = self.decodes_in_graph(self.header.decode)
        self.max_batch = self.header.batch[2]

    def run(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> Prediction:
        if len(pixels) > self.max_batch:  # a library caller past the profile (the registry refuses it): split
            parts = [self.run(pixels[i : i + self.max_batch], return_heatmaps=return_heatmaps)
                     for i in range(0, len(pixels), self.max_batch)]  # fmt: skip
            return _concatenate(parts)
        batch, (height, width) = len(pixels), self.anatomy.grid_hw
        image = self.memory.prepare_input(pixels)
        self.context.set_input_shape(INPUT, (batch, 1, height, width))
        self.context.set_tensor_address(INPUT, self.memory.address(image))
        shapes = {name: self.context.get_tensor_shape(name) for name in self.outputs}
        buffers = {name: self.memory.empty(tuple(dims[i] for i in range(len(dims)))) for name, dims in shapes.items()}
        for name, buffer in buffers.items():
            self.context.set_tensor_address(name, self.memory.address(buffer))
        if not self.context.execute_async_v3(self.memory.stream):
            raise TensorRTUnavailable("TensorRT execute_async_v3 failed (see the TensorRT log)")
        prediction = self._decode(buffers, return_heatmaps)
        release = getattr(self.memory, "release", None)
        if release is not None:
            release()
        return prediction

    def _decode(self, buffers: dict[str, Any], return_heatmaps: bool) -> Prediction:
        heatmaps = buffers[HEATMAPS]
        if self.graph_decodes:
            xy, confidence = self.memory.to_host(buffers[LANDMARKS]), self.memory.to_host(buffers[CONFIDENCE])
        elif isinstance(heatmaps, torch.Tensor):  # decode on the GPU, copy back C x 3 numbers per image
            decoded = decode_heatmaps(heatmaps, self.decode)
            xy, confidence = (self.memory.to_host(t.contiguous()) for t in decoded)
        else:
            decoded = decode_heatmaps(torch.from_numpy(self.memory.to_host(heatmaps)), self.decode)
            xy, confidence = (t.numpy() for t in decoded)
        return Prediction(
            xy=np.asarray(xy, dtype=np.float32),
            confidence=np.asarray(confidence, dtype=np.float32),
            heatmaps=self.memory.to_host(heatmaps) if return_heatmaps else None,
        )


def _concatenate(parts: list[Prediction]) -> Prediction:
    heatmaps = None if parts[0].heatmaps is None else np.concatenate([p.heatmaps for p in parts])
    return Prediction(np.concatenate([p.xy for p in parts]), np.concatenate([p.confidence for p in parts]), heatmaps)


def create(request: BackendRequest) -> TensorRTBackend:
    """The ``tensorrt`` registry entry's factory (the entry has checked the device kind and the engine's presence)."""
    index = request.device.partition(":")[2]
    return TensorRTBackend(request.artifact, request.anatomy, request.decode, int(index or 0),
                           precision=request.precision, max_batch_size=request.max_batch_size)  # fmt: skip
