"""The ``compiled`` and ``aoti`` backends: the rewritten GU2Net under ``torch.compile``, and its AOTInductor package.

``compiled`` runs :func:`~landmark_edge.optimize.rewrite_for_inference`'s model (BN folded, fused separable and
dilated stages) under ``torch.compile`` and is ready to serve every batch size 1..``max_batch_size`` when built:
construction compiles and warms every *bucket* (powers of two up to ``max_batch_size``, and ``max_batch_size``
itself; short batches are padded up to theirs) and, on CUDA, captures each as a CUDA graph to replay: at batch 1
the network is ~100 small kernels, so launch overhead, not arithmetic, is what graphs remove.

Build time is the constraint behind the defaults (issue 14: ``max-autotune-no-cudagraphs`` autotunes every
convolution shape, per bucket, per precision, which took minutes on an H100; the GPU check that times the
defaults is ``benchmarks/device/gpu_check.sh``, its records go to ``benchmarks/results/<gpu>-chest/``):

* mode ``default``: Inductor benchmarks no convolution or GEMM choices (only ``max-autotune*`` modes do); the
  convolutions are cuDNN's and Inductor generates the kernels around them (casts, bias, activations, padding,
  up-sampling, the heatmap product). Expensive autotuning is paid once, in ``landmark-edge compile`` (a ``.pt2``).
* a dynamic batch dimension (``maybe_mark_dynamic``): one compilation serves every bucket above 1 instead of one
  compilation per bucket (batch 1 is always specialised by Dynamo, and Inductor may split a range where its
  lowering changes: 3 compilations for buckets 1..32 on CPU, against 6); the CUDA graphs are still per bucket.
* the fused Triton kernels are off (``kernels=cudnn``) until a GPU run shows them ahead of cuDNN under Inductor:
  each of their shapes autotunes 8 launch configurations when first called.
* Inductor's autotuning tables and choice statistics never reach the terminal (``QUIET_INDUCTOR``); a progress
  callback reports each bucket as it is ready.

Our own graphs are kept rather than ``reduce-overhead``'s because they pad short batches into a few buckets, where
``reduce-overhead`` would record one graph per distinct batch size; ``mode`` is an option so the benchmark can
compare them.

``aoti`` loads a ``.pt2`` written by :func:`landmark_edge.export.pt2.export_pt2` (``torch.export`` with a dynamic
batch dimension + ``torch._inductor.aoti_compile_and_package``, autotuned on CUDA): a compiled shared library plus
weights that needs neither the model code nor the weights file, with the anatomy, grid and precision in the
package's metadata.
"""

from __future__ import annotations

import json
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from landmark_edge.anatomy import Anatomy, get_anatomy
from landmark_edge.contracts import PT2_FORMAT, dtype_precision
from landmark_edge.decode import DecodeMethod
from landmark_edge.errors import LandmarkEdgeError, WeightsError, first_line
from landmark_edge.model import GU2Net
from landmark_edge.optimize import QUIET_INDUCTOR, Kernels, rewrite_for_inference
from landmark_edge.runtime.backend import BackendRequest, BuiltFor, check_built_for
from landmark_edge.runtime.eager import TorchBackend, request_dtype, weights_of
from landmark_edge.runtime.options import BackendOptions

DEFAULT_CUDA_MODE = "default"  # no autotuning at start-up: see the module docstring
_MODES_WITH_OWN_GRAPHS = {"reduce-overhead", "max-autotune"}  # torch.compile's cudagraph trees; don't nest ours


class CompileOptions(BackendOptions):
    """How the ``compiled`` backend builds its model (``--option`` keys of the same names)."""

    mode: str | None = None  # torch.compile mode; None: DEFAULT_CUDA_MODE on CUDA, Inductor's default on CPU
    cuda_graphs: bool = True  # capture one CUDA graph per batch bucket (CUDA only)
    channels_last: bool = False
    kernels: Kernels = Kernels.CUDNN  # cudnn | triton | auto (triton on CUDA when installed)

    @classmethod
    def from_dict(cls, options: dict) -> CompileOptions:
        return cls.parse("compiled", options)


def batch_buckets(max_batch_size: int) -> list[int]:
    """The batch sizes compiled and captured: 1, 2, 4, ... below ``max_batch_size``, then ``max_batch_size``."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return [*sizes, max_batch_size]


def bucket_for(batch: int, max_batch_size: int) -> int:
    """The smallest bucket that holds ``batch`` images."""
    if not 1 <= batch <= max_batch_size:
        raise LandmarkEdgeError(f"batch of {batch} images: this backend was built for 1..{max_batch_size}")
    return next(size for size in batch_buckets(max_batch_size) if size >= batch)


def pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with zero images appended up to ``size`` (images are independent, so padding changes nothing)."""
    if x.shape[0] == size:
        return x
    return torch.cat([x, x.new_zeros((size - x.shape[0], *x.shape[1:]))])


class CudaGraphs:
    """One captured CUDA graph per batch bucket, replayed with each batch copied into its static input.

    Capture follows the CUDA-graphs recipe of the PyTorch docs: a few warm-up calls on a side stream (compilation,
    autotuning and cuDNN/Triton algorithm selection happen there), then ``torch.cuda.graph``.
    """

    def __init__(self, fn, device: torch.device, warmup_iterations: int = 3) -> None:
        self.fn = fn
        self.device = device
        self.warmup_iterations = warmup_iterations
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, size: int) -> torch.Tensor:
        key = (size, *x.shape[1:])
        if key not in self._graphs:
            self._graphs[key] = self._capture(torch.zeros(key, device=self.device, dtype=x.dtype))
        graph, static_in, static_out = self._graphs[key]
        static_in[: x.shape[0]].copy_(x)
        graph.replay()
        return static_out[: x.shape[0]]  # valid until the next replay; the backend decodes it at once

    def _capture(self, static_in: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup_iterations):
                self.fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return graph, static_in, static_out


Progress = Callable[[str], None]  # receives one line per build step ("batch 8 ready (4/6, 21 s)")


def compile_options(mode: str | None) -> dict:
    """``torch.compile`` options for ``mode`` with Inductor's autotune output turned off (mode and options are
    exclusive arguments of ``torch.compile``, so the mode is expanded into its options)."""
    return {**(torch._inductor.list_mode_options(mode) if mode else {}), **QUIET_INDUCTOR}


class CompiledBackend(TorchBackend):
    """The rewritten single-anatomy GU2Net under ``torch.compile``, CUDA graphs per batch bucket on CUDA.

    Every bucket is compiled (and captured) in the constructor, so serving never stops to compile; ``progress``
    sees a line per bucket and ``build_seconds`` keeps the total.
    """

    name = "compiled"

    def __init__(
        self,
        model: GU2Net,
        anatomy: Anatomy,
        decode: DecodeMethod | str = DecodeMethod.SUBPIXEL,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        options: CompileOptions | None = None,
        max_batch_size: int = 32,
        progress: Progress | None = None,
    ) -> None:
        options = options or CompileOptions()
        net = rewrite_for_inference(
            model, anatomy.name, dtype=dtype, channels_last=options.channels_last, kernels=options.kernels
        )
        super().__init__(net, anatomy, decode, device, dtype)
        is_cuda = self.device.type == "cuda"
        self.mode = options.mode or (DEFAULT_CUDA_MODE if is_cuda else None)
        self.max_batch_size = max_batch_size
        self.compiled = torch.compile(self.model, fullgraph=True, dynamic=None, options=compile_options(self.mode))
        use_graphs = is_cuda and options.cuda_graphs and self.mode not in _MODES_WITH_OWN_GRAPHS
        self.graphs = CudaGraphs(self._network, self.device) if use_graphs else None
        self.build_seconds = self._build(progress or (lambda line: None))

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """The compiled network; batches above 1 are marked dynamic so one compilation serves those buckets."""
        if x.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(x, 0)
        return self.compiled(x)

    @torch.inference_mode()
    def _build(self, progress: Progress) -> float:
        """Compile (and capture) every bucket now, with Python warnings from the compiler kept off the terminal."""
        start = time.perf_counter()
        buckets = batch_buckets(self.max_batch_size)
        height, width = self.anatomy.grid_hw
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for done, size in enumerate(buckets, 1):
                progress(f"compiling {self.anatomy.name}: batch {size} ({done}/{len(buckets)}, "
                         f"{time.perf_counter() - start:.0f} s)")  # fmt: skip
                self.forward(torch.zeros(size, 1, height, width, device=self.device))
        elapsed = time.perf_counter() - start
        progress(f"compiled {self.anatomy.name} for batch 1..{self.max_batch_size} in {elapsed:.0f} s")
        return elapsed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = bucket_for(x.shape[0], self.max_batch_size)
        if self.graphs is not None:
            return self.graphs(x, size)
        return self._network(pad_batch(x, size))[: x.shape[0]]


@dataclass
class Pt2Package:
    """A loaded ``.pt2``: the callable and what its metadata says it is."""

    runner: object
    anatomy: Anatomy
    height: int
    width: int
    dtype: str
    max_batch_size: int
    device_type: str
    metadata: dict[str, str]

    @property
    def precision(self) -> str:
        """fp32 / fp16 / bf16, as a request names it."""
        return dtype_precision(self.dtype)


def load_pt2(path: str | Path, device: str = "cpu") -> Pt2Package:
    """Load a package from :func:`landmark_edge.export.pt2.export_pt2` on ``device`` (of the type it was built for)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: AOTInductor package not found")
    if stored_pt2_metadata(path).get("format") != PT2_FORMAT:  # before loading: loading runs the package's code
        raise WeightsError(f"{path}: not a landmark-edge package (no '{PT2_FORMAT}' metadata); not loaded")
    target = torch.device(device)
    try:
        runner = torch._inductor.aoti_load_package(str(path), device_index=-1 if target.index is None else target.index)
        meta = dict(runner.get_metadata())
    except Exception as error:  # noqa: BLE001 - the loader raises RuntimeError/zipfile errors for foreign files
        raise WeightsError(f"{path}: not a loadable AOTInductor package ({first_line(error)})")
    if meta.get("format") != PT2_FORMAT:
        raise WeightsError(f"{path}: not a landmark-edge package (no '{PT2_FORMAT}' metadata)")
    compiled_for = meta.get("AOTI_DEVICE_KEY", "cpu")
    if compiled_for != target.type:
        raise WeightsError(
            f"{path}: compiled for {compiled_for}, not {target.type}; rebuild with `landmark-edge compile "
            f"--device {target.type}`"
        )
    return Pt2Package(
        runner=runner,
        anatomy=get_anatomy(meta["anatomy"]),
        height=int(meta["height"]),
        width=int(meta["width"]),
        dtype=meta["dtype"],
        max_batch_size=int(meta["max_batch_size"]),
        device_type=compiled_for,
        metadata=meta,
    )


def stored_pt2_metadata(path: Path) -> dict[str, str]:
    """The metadata a ``.pt2`` keeps as JSON beside its shared library, read from the zip *without* loading it.

    Loading a package ``dlopen``s native code, which runs as it loads; reading the JSON first keeps a ``.pt2``
    that is not one of ours (or not a package at all) from ever being loaded.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if "data/aotinductor/" in n and n.endswith("_metadata.json")]
            metadata = json.loads(archive.read(names[0])) if names else {}
    except Exception as error:  # noqa: BLE001 - zip and JSON errors of a foreign file, in whatever form
        raise WeightsError(f"{path}: not a loadable AOTInductor package ({first_line(error)})") from None
    return metadata if isinstance(metadata, dict) else {}


class _Packaged(nn.Module):
    """A loaded package as a module, so :class:`TorchBackend` hosts it like any network."""

    def __init__(self, runner) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x)


class AOTIBackend(TorchBackend):
    """Runs a ``.pt2`` package: no model code, no weights file, no compilation at start-up."""

    name = "aoti"

    def __init__(self, package: Pt2Package, decode: DecodeMethod | str = DecodeMethod.SUBPIXEL,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        super().__init__(_Packaged(package.runner), package.anatomy, decode, device)  # its anatomy is baked in
        self.package = package
        self.precision = package.precision
        self.artifact_weights_sha256 = package.metadata.get("weights_sha256") or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bucket_for(x.shape[0], self.package.max_batch_size)  # one clear line instead of a shape-guard failure
        return self.model(x)


def create(request: BackendRequest) -> CompiledBackend:
    """The ``compiled`` registry entry's factory."""
    from landmark_edge.weights import load_weights

    dtype = request_dtype("compiled", request)
    model, _ = load_weights(weights_of("compiled", request), request.anatomy.name, require_fit=request.require_fit)
    return CompiledBackend(
        model, request.anatomy, request.decode, request.device, dtype, request.options, request.max_batch_size,
        request.progress,
    )


def create_aoti(request: BackendRequest) -> AOTIBackend:
    """The ``aoti`` registry entry's factory: the package is checked against the request before it serves."""
    request_dtype("aoti", request)
    package = load_pt2(request.artifact, request.device)
    built = BuiltFor(
        "package", package.anatomy.name, package.precision, package.max_batch_size, "landmark-edge compile"
    )
    check_built_for(request.artifact, built, request.anatomy, request.precision, request.max_batch_size)
    return AOTIBackend(package, request.decode, request.device)
