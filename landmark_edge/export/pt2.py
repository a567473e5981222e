"""The ``.pt2`` AOTInductor package of a rewritten network (read back by the ``aoti`` backend in
:mod:`landmark_edge.runtime.compiled`): ``torch.export`` with a dynamic batch dimension, then
``torch._inductor.aoti_compile_and_package``. The package needs neither the model code nor the weights file; its
metadata (:func:`landmark_edge.contracts.pt2_metadata`) says which anatomy, grid and precision it holds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.contracts import artifact_info, dtype_precision, pt2_metadata
from landmark_edge.errors import LandmarkEdgeError
from landmark_edge.io.atomic import atomic_open
from landmark_edge.optimize import QUIET_INDUCTOR, InferenceGU2Net



def export_pt2(
    net: InferenceGU2Net,
    anatomy: Anatomy,
    path: str | Path,
    *,
    device: str = "cpu",
    max_batch_size: int = 32,
    size_hw: tuple[int, int] | None = None,
    info: dict | None = None,
    autotune: bool = False,
) -> Path:
    """Export a rewritten network with a dynamic batch (1..``max_batch_size``) and AOT-compile it to a ``.pt2``.

    ``size_hw`` defaults to the anatomy's grid (the size ``infer`` feeds); the package is for ``device``'s type
    and takes float32 in and gives float32 heatmaps out whatever dtype it computes in. ``info`` adds to the
    metadata every artifact carries (:func:`~landmark_edge.contracts.artifact_info`: weights hash, preprocessing).
    ``autotune`` is Inductor's ``max_autotune``: every convolution and GEMM shape benchmarks its candidate kernels
    (at the example batch of 2), which takes minutes once here so that loading the package costs none of it.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise LandmarkEdgeError(f"{path}: an AOTInductor package must be named *.pt2")
    net = net.to(device)
    height, width = size_hw or anatomy.grid_hw
    example = torch.zeros(min(2, max_batch_size), 1, height, width, device=device)
    batch = torch.export.Dim("batch", min=1, max=max_batch_size)
    with torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    dtype = str(net.dtype).removeprefix("torch.")
    shared = artifact_info(anatomy, precision=dtype_precision(dtype), **(info or {}))
    metadata = pt2_metadata(shared, height=height, width=width, dtype=dtype, max_batch_size=max_batch_size,
                            torch_version=torch.__version__)  # fmt: skip
    with atomic_open(path, "wb") as handle:
        torch._inductor.aoti_compile_and_package(
            program, package_path=handle,
            inductor_configs={"aot_inductor.metadata": metadata, "max_autotune": autotune, **QUIET_INDUCTOR},
        )  # fmt: skip
    return path
