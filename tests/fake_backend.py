"""A backend added the way the README's "Adding a backend" says: this module plus one registry entry (ENTRY).

It needs no network: every landmark is at a fixed fraction of the grid, so its results are known exactly.
tests/test_backends.py registers ENTRY in a fresh interpreter and finds the backend in the help, the errors and
the bench rows of ``infer``, ``evaluate`` and ``bench``.
"""

from __future__ import annotations

import numpy as np

from landmark_edge.runtime.backend import Backend, BackendRequest, Prediction
from landmark_edge.runtime.options import BackendOptions
from landmark_edge.runtime.registry import ArtifactKind, BackendSpec

__version__ = "0.0.1-test"  # the "library" of the entry: bench's environment block reads it


class FakeOptions(BackendOptions):
    where: float = 0.5  # every landmark at this fraction of the grid's width and height


ENTRY = BackendSpec(
    "fake", "test only: every landmark at a fixed point of the grid", factory="fake_backend:create",
    precisions=("fp32",), devices=("cpu",), decode="host", library="fake_backend",
    artifact=ArtifactKind((".fake",), "file", "nothing", required=False), options="fake_backend:FakeOptions",
)  # fmt: skip


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, request: BackendRequest) -> None:
        super().__init__(request.anatomy, request.decode)
        height, width = request.anatomy.grid_hw
        self.point = np.array([request.options.where * width, request.options.where * height], np.float32)

    def run(self, pixels: np.ndarray, *, return_heatmaps: bool = False) -> Prediction:
        count, landmarks = len(pixels), self.anatomy.num_landmarks
        heatmaps = np.zeros((count, landmarks, *pixels.shape[1:]), np.float32) if return_heatmaps else None
        return Prediction(np.tile(self.point, (count, landmarks, 1)), np.ones((count, landmarks), np.float32), heatmaps)


def create(request: BackendRequest) -> FakeBackend:
    return FakeBackend(request)
