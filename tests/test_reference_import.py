"""Parity with the reference layout: import a reference-layout checkpoint and compare forwards."""

import os
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from landmark_edge.anatomy import parse_anatomy_list
from landmark_edge.cli import app
from landmark_edge.errors import WeightsError
from landmark_edge.weights import load_weights
from landmark_edge.weights.reference import convert_state_dict
from tests.conftest import DOCS, require
from tests.reference_gu2net import ReferenceGLN

ORDER = "chest,cephalometric,hand"
COUNTS = [6, 19, 37]


def reference_model(seed: int = 0) -> ReferenceGLN:
    """A reference-layout GU2Net with random weights and random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ReferenceGLN(COUNTS)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_reference_mirror_has_the_documented_keys():
    keys_file = require(DOCS / "reference_state_dict_keys_checkpoint_order.txt")
    documented = [re.split(r"\s", line)[0] for line in keys_file.read_text().splitlines() if line[:1].isalpha()]
    assert list(reference_model().state_dict()) == documented


def save_like_the_reference(model: ReferenceGLN, path: Path) -> None:
    """What the reference's runner.py ``train`` saves: epoch, run name, state dict and the whole Adam object,
    after a step of its CyclicLR schedule (so the optimizer has state and scheduler fields)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=1e-4, max_lr=1e-2, step_size_up=2000,
                                                  mode="triangular2", cycle_momentum=False)  # fmt: skip
    model.train()
    model(torch.randn(1, 1, 32, 32), 0)["output"].sum().backward()
    optimizer.step()
    scheduler.step()
    model.eval()  # the step moved the weights: the tests compare against the model as saved
    torch.save({"epoch": 66, "model_name": "gu2net", "model_state_dict": model.state_dict(), "optimizer": optimizer},
               path)  # fmt: skip


def test_import_checkpoint_then_forward_matches_reference(tmp_path):
    reference = reference_model()
    checkpoint = tmp_path / "best.pt"
    save_like_the_reference(reference, checkpoint)
    out = tmp_path / "imported.safetensors"
    result = CliRunner().invoke(app, ["import-checkpoint", str(checkpoint), "-o", str(out), "--order", ORDER])
    assert result.exit_code == 0, result.output
    model, info = load_weights(out)
    assert info.anatomy_names == ["chest", "head", "hand"]
    x_wh = torch.randn(2, 1, 80, 64)  # reference layout (B, 1, W, H), sizes divisible by 16
    with torch.no_grad():
        for task, name in enumerate(["chest", "head", "hand"]):
            expected = reference(x_wh, task)["output"].transpose(-1, -2)
            got = model(x_wh.transpose(-1, -2).contiguous(), name)
            assert got.shape == expected.shape
            assert torch.max(torch.abs(got - expected)).item() <= 1e-4


def test_wrong_order_names_the_mismatching_key():
    state = reference_model().state_dict()
    with pytest.raises(WeightsError, match=r"key localNet\.out0\.conv\.weight: shape \(6, 64, 1, 1\)"):
        convert_state_dict(state, parse_anatomy_list("cephalometric,hand,chest"))


def test_missing_key_is_named(tmp_path):
    state = reference_model().state_dict()
    del state["globalNet.convs1.3.bn.running_var"]
    with pytest.raises(WeightsError, match=r"key global_net\.dilated\.head\.3\.bn\.running_var: missing"):
        convert_state_dict(state, parse_anatomy_list(ORDER))


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, ["import-checkpoint", str(bad), "-o", str(tmp_path / "w.safetensors")])
    assert result.exit_code == 2
    assert "bad.pt: not a readable PyTorch checkpoint" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "w.safetensors").exists()


class _RunsCode:
    """A pickle payload: unpickling it calls ``function(*args)``, as a malicious checkpoint would."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (lambda marker: _RunsCode(os.system, f"touch {marker}"), "posix.system"),
        (lambda marker: _RunsCode(open, str(marker), "w"), "io.open"),
        (lambda marker: _RunsCode(exec, f"open({str(marker)!r}, 'w')"), "exec"),
    ],
)
def test_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path, payload, named):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "model_state_dict": reference_model().state_dict(), "optimizer": payload(marker)}, evil)
    out = tmp_path / "w.safetensors"
    result = CliRunner().invoke(app, ["import-checkpoint", str(evil), "-o", str(out), "--order", ORDER])
    assert result.exit_code == 2, result.output
    assert not marker.exists()
    (line,) = result.stderr.splitlines()
    assert f"{evil}: refused to unpickle: it names {named}" in line
    assert "--trust-pickle" in line and "Traceback" not in result.output
    assert not out.exists()


def test_trust_pickle_unpickles_fully_with_a_warning(tmp_path):
    """The opt-in is a real full unpickle (the payload runs: that is what the flag and its warning are about)."""
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "trusted.pt"
    state = reference_model().state_dict()
    torch.save({"model_state_dict": state, "extra": _RunsCode(open, str(marker), "w")}, checkpoint)
    out = tmp_path / "w.safetensors"
    args = ["import-checkpoint", str(checkpoint), "-o", str(out), "--order", ORDER, "--trust-pickle"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning: --trust-pickle: fully unpickling" in result.stderr
    assert marker.exists() and out.exists()

