"""Import a checkpoint of the reference implementation (ICT-MIRACLE-lab GU2Net) into a project GU2Net.

The reference indexes anatomies by position (`in0`, `dwise1.2`, `convs1`) in the order of its run's
``name_list``, and feeds (B, 1, W, H) tensors; the project names anatomies and uses (B, 1, H, W). So each key is
renamed by rule, the task index becomes the anatomy named at that position of ``order``, and every k>1 kernel is
transposed in its last two dims (1x1 kernels, BN, pooling, bilinear and nearest resampling are layout-symmetric).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.errors import WeightsError
from landmark_edge.model import GU2Net

_LOCAL_BLOCKS = {"conv": "in_block", **{f"{d}{i}.conv": f"{d}{i}" for d in ("down", "up") for i in range(1, 5)}}

# (pattern over a reference key, replacement template); {t} is the anatomy name of the captured task index.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"localNet\.in(?P<t>\d+)\.conv\.(?P<p>\w+)$"), "local_net.input_proj.{t}.{p}"),
    (re.compile(r"localNet\.out(?P<t>\d+)\.conv\.(?P<p>\w+)$"), "local_net.output_proj.{t}.{p}"),
    (
        re.compile(r"localNet\.(?P<b>conv|(?:down|up)\d\.conv)\.dwise(?P<k>[12])\.(?P<t>\d+)\.conv1\.(?P<p>\w+)$"),
        "local_net.{b}.depthwise{k}.{t}.{p}",
    ),
    (
        re.compile(r"localNet\.(?P<b>conv|(?:down|up)\d\.conv)\.pwise(?P<k>[12])\.conv1\.(?P<p>\w+)$"),
        "local_net.{b}.pointwise{k}.{p}",
    ),
    (
        re.compile(r"localNet\.(?P<b>conv|(?:down|up)\d\.conv)\.bn(?P<k>[12])\.(?P<t>\d+)\.(?P<p>\w+)$"),
        "local_net.{b}.norm{k}.{t}.{p}",
    ),
    (re.compile(r"globalNet\.in(?P<t>\d+)\.conv\.(?P<p>\w+)$"), "global_net.image_in.{t}.{p}"),
    (re.compile(r"globalNet\.in_local(?P<t>\d+)\.conv\.(?P<p>\w+)$"), "global_net.heatmap_in.{t}.{p}"),
    (re.compile(r"globalNet\.out(?P<t>\d+)\.conv\.(?P<p>\w+)$"), "global_net.head.{t}.{p}"),
    (
        re.compile(r"globalNet\.convs(?P<t>\d+)\.(?P<j>\d)\.(?P<m>conv|bn)\.(?P<p>\w+)$"),
        "global_net.dilated.{t}.{j}.{m}.{p}",
    ),
]


def project_key(reference_key: str, order: Sequence[str]) -> str:
    """The project state-dict key for a reference key, anatomy indices resolved through ``order``."""
    for pattern, template in _RULES:
        match = pattern.match(reference_key)
        if match is None:
            continue
        parts = match.groupdict()
        if "t" in parts:
            index = int(parts["t"])
            if index >= len(order):
                raise WeightsError(f"key {reference_key}: task index {index} but --order names {len(order)}")
            parts["t"] = order[index]
        if "b" in parts:
            parts["b"] = _LOCAL_BLOCKS[parts["b"]]
        return template.format(**parts)
    raise WeightsError(f"key {reference_key}: not a GU2Net (gln + u2net) reference key")


def convert_state_dict(reference: dict[str, torch.Tensor], anatomies: Sequence[Anatomy]) -> GU2Net:
    """Build a project GU2Net for ``anatomies`` (in the checkpoint's task order) from a reference state dict."""
    order = [a.name for a in anatomies]
    model = GU2Net({a.name: a.num_landmarks for a in anatomies})
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in reference.items():
        target = project_key(key, order)
        if target not in expected:
            raise WeightsError(f"key {key}: maps to {target}, which this GU2Net does not have")
        if tensor.ndim == 4 and tensor.shape[-1] > 1:
            tensor = tensor.transpose(-1, -2)  # (W, H) kernel -> (H, W) kernel
        if tensor.shape != expected[target].shape:
            raise WeightsError(
                f"key {key}: shape {tuple(tensor.shape)} does not fit {tuple(expected[target].shape)} "
                f"(is --order {','.join(order)} the checkpoint's task order?)"
            )
        converted[target] = tensor.contiguous()
    missing = [k for k in expected if k not in converted]
    if missing:
        raise WeightsError(f"key {missing[0]}: missing from the checkpoint ({len(missing)} missing in all)")
    model.load_state_dict(converted)
    return model.eval()


def load_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model_state_dict`` of a reference checkpoint (or a bare state dict).

    The reference pickles its optimizer object beside the weights, so a weights-only load is tried first and a
    full unpickle only for such files: import checkpoints you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling refusal: retry as the reference's full pickle
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__})") from None
    state = checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: no model_state_dict of tensors in this checkpoint")
    return {k.removeprefix("module."): v for k, v in state.items()}
