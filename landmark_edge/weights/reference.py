"""Import a checkpoint of the reference implementation (ICT-MIRACLE-lab GU2Net) into a project GU2Net.

The reference indexes anatomies by position (`in0`, `dwise1.2`, `convs1`) in the order of its run's
``name_list``, and feeds (B, 1, W, H) tensors; the project names anatomies and uses (B, 1, H, W). So each key is
renamed by rule, the task index becomes the anatomy named at that position of ``order``, and every k>1 kernel is
transposed in its last two dims (1x1 kernels, BN, pooling, bilinear and nearest resampling are layout-symmetric).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from landmark_edge.anatomy import Anatomy
from landmark_edge.errors import WeightsError, first_line
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


class _UnusedOptimizer:
    """Takes the place of the reference's pickled ``torch.optim.Adam``: its state is kept as plain data and none
    of torch.optim's code runs (the import needs the weights only)."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


def _plain_dict(default_factory: object = None) -> dict:
    """Takes the place of ``collections.defaultdict`` (the optimizer's ``state``), which a weights-only load
    cannot fill; the factory is never called."""
    return {}


# Exactly what the reference's training loop pickles beside the tensors (ULD/model/runner.py ``train``:
# ``{'epoch': int, 'model_name': str, 'model_state_dict': OrderedDict, 'optimizer': self.optim}``, the whole
# ``torch.optim.Adam`` object, whose ``state`` is a ``defaultdict(dict)``), each mapped to an inert stand-in.
# ``torch.load(weights_only=True)`` accepts tensors, OrderedDict and primitives already; any other global a
# checkpoint names is refused before it is called.
REFERENCE_PICKLE_GLOBALS: list[tuple[object, str]] = [
    (_UnusedOptimizer, "torch.optim.adam.Adam"),
    (_plain_dict, "collections.defaultdict"),
    (dict, "builtins.dict"),
]
_GLOBAL = re.compile(r"GLOBAL (\S+)")  # torch's refusal names the global
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def load_reference_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The ``model_state_dict`` of a reference checkpoint (or a bare state dict), loaded without running code.

    The load is ``weights_only`` with :data:`REFERENCE_PICKLE_GLOBALS` allowed, so a pickle that names any other
    class or function (``os.system``, ``builtins.exec``, ...) is refused before it is called: checkpoints come
    from file hosts. ``trust_pickle`` unpickles everything (it runs whatever code the file holds): only for a
    file the user vouches for, never as a fallback.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(REFERENCE_PICKLE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        refused = _GLOBAL.search(str(error))
        if refused is None:
            reason = _UNPICKLER_REASON.search(str(error))
            text = reason.group(1) if reason else first_line(error)
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({text})") from None
        raise WeightsError(
            f"{path}: refused to unpickle: it names {refused.group(1)}, which a reference checkpoint does not hold "
            f"and loading could run code (allowed: tensors, {_allowed_names()}); pass --trust-pickle only "
            "for a file you trust"
        ) from None
    except Exception as error:  # noqa: BLE001 - zip, pickle and storage errors of foreign files
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__})") from None
    state = checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: no model_state_dict of tensors in this checkpoint")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _allowed_names() -> str:
    return ", ".join(name for _, name in REFERENCE_PICKLE_GLOBALS)
