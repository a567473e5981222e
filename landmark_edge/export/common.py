"""Steps the ONNX exporter and the quantizer share: writing the metadata contract, silencing library loggers."""

from __future__ import annotations

import contextlib
import logging

import onnx

from landmark_edge import __version__
from landmark_edge.contracts import OnnxInfo


def attach_metadata(model: onnx.ModelProto, info: OnnxInfo) -> onnx.ModelProto:
    """Write ``info`` into the graph's metadata_props (replacing keys of the same name)."""
    props = info.to_props()
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "landmark-edge", __version__
    return model


@contextlib.contextmanager
def quiet_logger(name: str):
    """Silence a library logger's warnings (torch.onnx reports optional torchvision ops it skips)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
