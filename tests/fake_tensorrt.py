"""A fake ``tensorrt`` module that records what the builder and runtime code ask of it.

It mirrors the documented Python API of TensorRT 10.x and 11.x where the two differ: 11.x has no precision
builder flags (FP16, BF16, INT8, FP8) and its STRONGLY_TYPED creation flag is deprecated, so code that touches a
removed name on the 11.x fake fails with AttributeError, as it would on the real library.
"""

from __future__ import annotations

import json
import types
from types import SimpleNamespace

import numpy as np

PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8")


def make_tensorrt(version: str, num_dla_cores: int = 2) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # (what, detail) in call order
    flags = ["VERSION_COMPATIBLE", "GPU_FALLBACK", "TF32"] + (list(PRECISION_FLAGS) if major < 11 else [])
    trt.BuilderFlag = SimpleNamespace(**{name: name for name in flags})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = SimpleNamespace(GPU="GPU", DLA="DLA")
    trt.HardwareCompatibilityLevel = SimpleNamespace(
        NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY"
    )
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity) -> None:
            self.severity = severity

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data + b"+tuned"

    class Profile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name, minimum, optimum, maximum) -> None:
            self.shapes[name] = (tuple(minimum), tuple(optimum), tuple(maximum))

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.pools: dict[str, int] = {}
            self.profiles: list[Profile] = []
            self.timing_cache = None
            self.progress_monitor = None
            self.builder_optimization_level = None
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def set_memory_pool_limit(self, pool, size) -> None:
            self.pools[pool] = size

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            trt.calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch) -> bool:
            self.timing_cache, self.ignore_mismatch = cache, ignore_mismatch
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.timing_cache

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx = b""

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.network, self.errors = network, []

        def parse(self, data: bytes) -> bool:
            trt.calls.append(("parse", len(data)))
            self.network.onnx = bytes(data)
            if not data.startswith(b"\x08"):  # a serialized ModelProto starts with field 1 (ir_version)
                self.errors.append("Failed to parse ONNX model: not a protobuf")
                return False
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> str:
            return self.errors[index]

    class Builder:
        def __init__(self, logger) -> None:
            self.num_DLA_cores = num_dla_cores
            trt.builder = self

        def create_network(self, flags: int = 0) -> Network:
            trt.calls.append(("create_network", flags))
            self.network = Network(flags)
            return self.network

        def create_builder_config(self) -> Config:
            self.config = Config()
            return self.config

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config) -> bytes:
            trt.calls.append(("build", sorted(config.flags)))
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                for step in range(2):
                    monitor.step_complete("Building engine", step)
                monitor.phase_finish("Building engine")
            return b"ENGINE:" + json.dumps({"version": version}).encode()

    trt.Logger, trt.IProgressMonitor, trt.Builder, trt.OnnxParser = Logger, IProgressMonitor, Builder, OnnxParser
    trt.Runtime = _runtime_class(trt)
    return trt


def _runtime_class(trt):
    """Runtime -> engine -> context whose execute writes known heatmaps: channel c of image b peaks at a known
    pixel, so a correct backend decodes exactly ``peak(b, c)``."""

    class Context:
        def __init__(self, engine) -> None:
            self.engine, self.shape, self.addresses = engine, None, {}

        def set_input_shape(self, name, shape) -> bool:
            trt.calls.append(("set_input_shape", name, tuple(shape)))
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            batch, _, height, width = self.shape
            channels = self.engine.channels
            return {"heatmaps": (batch, channels, height, width), "landmarks": (batch, channels, 2),
                    "confidence": (batch, channels)}[name]  # fmt: skip

        def set_tensor_address(self, name, address) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream) -> bool:
            trt.calls.append(("execute_async_v3", stream, sorted(self.addresses)))
            memory = trt.device_memory
            batch, _, height, width = self.shape
            heatmaps = memory.lookup(self.addresses["heatmaps"])
            heatmaps[...] = 0.1
            for b in range(batch):
                for c in range(self.engine.channels):
                    x, y = peak(b, c)
                    heatmaps[b, c, y, x] = 0.9
            if "landmarks" in self.addresses:
                landmarks = memory.lookup(self.addresses["landmarks"])
                confidence = memory.lookup(self.addresses["confidence"])
                for b in range(batch):
                    for c in range(self.engine.channels):
                        landmarks[b, c] = peak(b, c)
                        confidence[b, c] = 0.9
            return True

    class Engine:
        def __init__(self, blob: bytes, outputs: list[str], channels: int) -> None:
            self.blob, self.names, self.channels = blob, ["image", *outputs], channels

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger) -> None:
            self.engine_host_code_allowed = False
            trt.runtime = self

        def deserialize_cuda_engine(self, blob: bytes):
            trt.calls.append(("deserialize", bytes(blob)))
            if not blob.startswith(b"ENGINE:"):
                return None
            return Engine(blob, trt.engine_outputs, trt.engine_channels)

    return Runtime


def peak(b: int, c: int) -> tuple[int, int]:
    """Where the fake engine puts image ``b``'s channel ``c`` maximum, as grid (x, y)."""
    return 10 + 7 * c + b, 20 + 3 * c + 2 * b


class HostMemory:
    """Stands in for device memory: numpy arrays addressed by integer handles."""

    stream = 1234

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self.inputs: list[np.ndarray] = []

    def prepare_input(self, pixels: np.ndarray) -> np.ndarray:
        from landmark_edge.transforms import zscore_batch
        import torch

        image = zscore_batch(torch.from_numpy(pixels)).numpy()
        self.inputs.append(image)
        return self._keep(image)

    def empty(self, shape) -> np.ndarray:
        return self._keep(np.zeros(shape, dtype=np.float32))

    def _keep(self, array: np.ndarray) -> np.ndarray:
        self.buffers[id(array)] = array
        return array

    def address(self, buffer: np.ndarray) -> int:
        return id(buffer)

    def lookup(self, address: int) -> np.ndarray:
        return self.buffers[address]

    def to_host(self, buffer: np.ndarray) -> np.ndarray:
        return np.array(buffer)

    def synchronize(self) -> None:
        pass
