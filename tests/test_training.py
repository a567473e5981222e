"""Training: schedule, checkpoint parts, tiny overfit, kill-and-resume equality, the train/pack/evaluate CLI."""

from __future__ import annotations

import json
import os
import signal

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from landmark_edge import anatomy as registry
from landmark_edge.anatomy import Anatomy
from landmark_edge.cli import app
from landmark_edge.commands.train import CONFIG_OPTIONS, NOT_OPTIONS, config_from_options
from landmark_edge.data import Batch
from landmark_edge.decode import decode_heatmaps
from landmark_edge.model import SHARED, gu2net, tensor_owners
from landmark_edge.transforms import zscore_batch
from landmark_edge.training import RunOptions, TrainConfig, load_checkpoint, resume_run, save_checkpoint, start_run
from landmark_edge.training.checkpoint import CheckpointError
from landmark_edge.training.logs import read_metrics
from landmark_edge.training.schedule import build_cosine_scheduler, build_optimizer, build_scheduler, epoch_plan
from landmark_edge.training.schedule import warmup_cosine
from landmark_edge.training.selection import framing_score
from landmark_edge.training.trainer import batch_loss
from landmark_edge.weights import file_sha256, load_weights, save_weights
from tests.conftest import TINY
from tests.test_data import make_chest_root

TINY_CONFIG = {"local_widths": list(TINY["local_widths"]), "global_width": TINY["global_width"]}


@pytest.fixture(autouse=True)
def one_thread():
    """Two busy OpenMP threads on a shared 2-core machine spin-wait each other ~30x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cyclic_lr_reproduces_the_reference_values():
    """Reference §5 values at iterations 0/2000/4000/6000/10000/14000, on a 100x shorter cycle (scale-free)."""
    optimizer = build_optimizer(torch.nn.Linear(1, 1), 1e-4, 1e-4)
    scheduler = build_scheduler(optimizer, 1e-4, 1e-2, 20)
    seen = {}
    for iteration in range(141):
        if iteration in (0, 20, 40, 60, 100, 140):
            seen[iteration * 100] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    expected = {0: 1e-4, 2000: 1e-2, 4000: 1e-4, 6000: 5.05e-3, 10000: 2.575e-3, 14000: 1.3375e-3}
    assert seen == pytest.approx(expected, rel=1e-6)


def test_warmup_cosine_rises_linearly_then_decays_to_the_floor():
    """lr 1e-4, floor 1e-6, 10 warm-up iterations of 110: known values at the ends, the joint and the middle."""
    expected = {0: 1e-5, 4: 5e-5, 9: 1e-4, 10: 1e-4, 60: (1e-4 + 1e-6) / 2, 110: 1e-6, 500: 1e-6}
    assert {s: warmup_cosine(s, 1e-4, 1e-6, 10, 110) for s in expected} == pytest.approx(expected, rel=1e-9)
    optimizer = build_optimizer(torch.nn.Linear(1, 1), 1e-4, 0.0)
    scheduler = build_cosine_scheduler(optimizer, 1e-4, 1e-6, 10, 110)
    seen = {}
    for step in range(111):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    steps = [s for s in expected if s in seen]
    assert [seen[s] for s in steps] == pytest.approx([expected[s] for s in steps])


def test_framing_score_is_the_mean_relative_mre_over_conditions_and_anatomies():
    """Head (paper 1.54 mm) and chest (5.57 px): each anatomy's mean over its measured conditions over its paper
    figure, then the mean over anatomies; a condition with nothing measured is left out."""
    mre = {"head": {"none": 1.54, "zoom-0.8": 4.62, "crop-top-1.4": None}, "chest": {"none": 5.57, "zoom-0.8": 16.71}}
    expected = ((1.54 + 4.62) / 2 / 1.54 + (5.57 + 16.71) / 2 / 5.57) / 2
    assert framing_score(mre, {n: registry.get_anatomy(n) for n in mre}) == pytest.approx(expected)
    assert framing_score({}, {}) == float("inf")


def test_epoch_plan_mixes_single_anatomy_batches_like_mixiter():
    sizes = {"head": 10, "chest": 7}
    first, second = epoch_plan(sizes, 2, 42, 0), epoch_plan(sizes, 2, 42, 1)
    assert [a for a, _ in first].count("head") == 5 and [a for a, _ in first].count("chest") == 3  # drop_last
    assert [a for a, _ in first] == [a for a, _ in second]  # interleaving shuffled once, reused every epoch
    for plan in (first, second):
        for name, size in sizes.items():
            indices = [i for a, batch in plan if a == name for i in batch]
            assert len(set(indices)) == len(indices) and all(0 <= i < size for i in indices)
    assert first != second  # samples reshuffled every epoch
    assert epoch_plan(sizes, 2, 42, 1) == second  # a pure function of (seed, epoch): resumable mid-epoch


def test_checkpoint_splits_into_bounded_parts_and_joins_back(tmp_path):
    state = {"iteration": 7, "weights": torch.arange(40_000, dtype=torch.float32), "note": [1, 2.5, "x"]}
    save_checkpoint(tmp_path, state, part_mib=0.05)
    parts = sorted(tmp_path.glob("checkpoint-00000007.pt.*"))
    assert len(parts) == 4 and all(p.stat().st_size <= 0.05 * 2**20 for p in parts)
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["note"] == state["note"]
    save_checkpoint(tmp_path, {**state, "iteration": 8}, part_mib=0.05)
    assert not list(tmp_path.glob("checkpoint-00000007.pt.*"))  # the older generation is removed after commit
    part = sorted(tmp_path.glob("checkpoint-00000008.pt.*"))[1]
    part.write_bytes(part.read_bytes()[:-1] + b"\0")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)


def test_tiny_overfit_puts_landmarks_within_a_few_pixels(monkeypatch):
    """Loss, heatmap targets and decoding line up: 2 images of a small anatomy are learnt in 80 steps."""
    monkeypatch.setitem(registry.ANATOMIES, "toy", Anatomy(name="toy", num_landmarks=3, grid=(64, 64)))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = torch.tensor([[[12, 40], [50, 20], [30, 30]], [[20, 10], [44, 52], [8, 50]]])
    yy, xx = np.mgrid[0:64, 0:64]
    images = []
    for points in labels.numpy():
        image = 30 + rng.normal(0, 5, (64, 64))
        for x, y in points:
            image += 180 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    batch = Batch("toy", torch.from_numpy(np.stack(images)), labels, ["a", "b"])
    model = gu2net(["toy"], **TINY)
    optimizer = build_optimizer(model, 1e-2, 1e-4)
    for _ in range(80):
        loss = batch_loss(model, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        xy, _ = decode_heatmaps(model.eval()(zscore_batch(batch.pixels), "toy"), "argmax")
    assert (xy - labels).norm(dim=-1).max() <= 3.0


@pytest.mark.parametrize("amp, channels_last", [("bf16", False), ("bf16", True), ("fp16", True)])
def test_mixed_precision_forward_keeps_the_loss_in_float32(monkeypatch, amp, channels_last):
    monkeypatch.setitem(registry.ANATOMIES, "toy", Anatomy(name="toy", num_landmarks=3, grid=(64, 64)))
    torch.manual_seed(0)
    model = gu2net(["toy"], **TINY)
    batch = Batch("toy", torch.randint(0, 255, (2, 64, 64), dtype=torch.uint8), torch.randint(5, 60, (2, 3, 2)), [])
    exact = batch_loss(model, batch, torch.device("cpu"))
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    mixed = batch_loss(model, batch, torch.device("cpu"), amp, channels_last)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(exact.item(), rel=1e-2)


class _Killed(Exception):
    """Stands for SIGKILL: raised between iterations, so nothing after the last checkpoint is saved."""


def _kill_at(iteration: int):
    def hook(trainer) -> None:
        if trainer.iteration == iteration:
            raise _Killed

    return hook


def split_chest_root(root, train: int, val: int, test: int):
    """A synthetic chest layout with a ``split.csv``: the first ``train`` images train, then val, then test."""
    make_chest_root(root, train + val + test)
    splits = ["train"] * train + ["val"] * val + ["test"] * test
    rows = "".join(f"CHNCXR_{n:04d}_0,{split}\n" for n, split in enumerate(splits, start=1))
    (root / "chest/split.csv").write_text("id,split\n" + rows)
    return root


FINE_TUNE = {"init": "tiny", "freeze": ["shared", "bn-stats"], "warmup": 2}


# robust: the augmentation draws replay too; fine-tune: the init, the frozen groups and the cosine schedule
@pytest.mark.parametrize("variant", [{"recipe": "reference"}, {"recipe": "robust"}, FINE_TUNE])
def test_kill_and_resume_reaches_the_same_weights_and_schedule(tmp_path, tiny_weights, variant):
    data = split_chest_root(tmp_path / "data", 2, 2, 1)
    variant = {**variant, "init": str(tiny_weights)} if "init" in variant else variant
    config = TrainConfig(data=str(data), anatomies=["chest"], epochs=2, batch_size=1, lr=1e-3, max_lr=5e-3,
                         step_size=2, checkpoint_every=3, **variant, **TINY_CONFIG)  # fmt: skip

    def options(**kw) -> RunOptions:
        return RunOptions(data=data, workers=0, progress=False, report=lambda line: None, **kw)

    whole = start_run(config, tmp_path / "whole", options())
    assert whole.run() is True and whole.iteration == 4

    killed = start_run(config, tmp_path / "killed", options(on_iteration=_kill_at(4)))
    with pytest.raises(_Killed):
        killed.run()
    chunk = resume_run(tmp_path / "killed", options(max_minutes=0))  # last checkpoint: iteration 3, mid-epoch
    assert (chunk.iteration, chunk.epoch, chunk.position) == (3, 1, 1)
    assert chunk.run() is False and chunk.iteration == 4  # stopped by the time limit, checkpointed
    assert not (tmp_path / "killed/test.json").exists()  # the test split is looked at once, at the very end
    rest = resume_run(tmp_path / "killed", options())
    assert rest.run() is True and rest.iteration == 4

    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, rest.model.state_dict()[key]), key
    assert rest.scheduler.get_last_lr() == whole.scheduler.get_last_lr()
    assert rest.optimizer.state_dict()["state"][0]["step"] == whole.optimizer.state_dict()["state"][0]["step"]
    rows = [r for r in read_metrics(tmp_path / "killed/metrics.jsonl") if r["kind"] == "train"]
    reference = [r for r in read_metrics(tmp_path / "whole/metrics.jsonl") if r["kind"] == "train"]
    assert [r["iteration"] for r in rows] == list(range(1, 5))  # no iteration logged twice
    assert [(r["loss"], r["lr"]) for r in rows] == [(r["loss"], r["lr"]) for r in reference]
    _, info = load_weights(tmp_path / "killed/best.safetensors")
    assert info.anatomy_names == rest.config.heads and (tmp_path / "killed/loss.png").stat().st_size > 0
    validations = [r for r in read_metrics(tmp_path / "killed/metrics.jsonl") if r["kind"] == "val"]
    assert [r["score"] for r in validations] == [r["score"] for r in read_metrics(tmp_path / "whole/metrics.jsonl")
                                                 if r["kind"] == "val"]  # fmt: skip
    assert set(validations[0]["mre"]["chest"]) == {"none", "zoom-0.8", "crop-top-1.4"}
    best = min(validations, key=lambda r: r["score"])
    assert info.metrics["best_epoch"] == best["epoch"] and info.metrics["score"] == best["score"]
    assert [r["best"] for r in validations] == [r is best or r["epoch"] < best["epoch"] for r in validations]
    test = json.loads((tmp_path / "killed/test.json").read_text())
    assert test["epoch"] == best["epoch"] and test["images"] == {"chest": 1}
    assert set(test["mre"]["chest"]) == {"none", "zoom-0.8", "crop-top-1.4"}


def test_sigterm_stops_at_an_iteration_boundary_with_a_checkpoint(tmp_path):
    data = make_chest_root(tmp_path / "data", 2)
    config = TrainConfig(data=str(data), anatomies=["chest"], epochs=2, batch_size=1, **TINY_CONFIG)

    def terminate(trainer) -> None:
        if trainer.iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    options = RunOptions(data=data, workers=0, progress=False, report=lambda line: None, on_iteration=terminate)
    trainer = start_run(config, tmp_path / "run", options)
    before = signal.getsignal(signal.SIGTERM)
    assert trainer.run() is False and load_checkpoint(tmp_path / "run")["iteration"] == 1
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


def test_pack_train_resume_and_evaluate_from_the_command_line(tmp_path):
    runner = CliRunner()
    raw = make_chest_root(tmp_path / "raw", 235, size=32)  # 232 kept after the exclude list: test = last 3
    result = runner.invoke(app, ["pack", "--data", str(raw), "--out", str(tmp_path / "packed"),
                                 "--anatomies", "chest"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "chest: train 195, val 34, test 3" in result.stdout

    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "packed"), "--out", str(run), "--anatomies", "chest", "--epochs", "2",
            "--batch-size", "1", "--limit", "2", "--local-widths", "4,4,8,8,8", "--global-width", "8",
            "--workers", "0", "--no-progress", "--max-minutes", "0"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 75, result.output  # stopped after one iteration, resumable
    result = runner.invoke(app, ["train", "--resume", str(run), "--no-progress", "--workers", "0"])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["anatomies"] == ["chest"] and config["lr"] == 1e-4 and config["step_size"] == 2000
    assert {r["kind"] for r in read_metrics(run / "metrics.jsonl")} == {"train", "val", "epoch"}

    result = runner.invoke(app, ["train", "--data", str(tmp_path / "packed"), "--out", str(run)])
    assert result.exit_code == 2 and "--resume" in result.stderr

    out = tmp_path / "eval.json"
    args = ["evaluate", "--data", str(tmp_path / "packed"), "--weights", str(run / "best.safetensors"),
            "--out", str(out), "--overlay", str(tmp_path / "overlays"), "--worst", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["anatomies"]["chest"]
    assert report["images"] == 3 and report["reference"]["unit"] == "px" and len(report["per_image"]) == 3
    assert len(report["original"]["per_landmark"]) == 6 and "reference" in result.stdout
    assert len(list((tmp_path / "overlays").glob("chest_*.png"))) == 2


def test_resume_refuses_options_its_config_fixes(tmp_path):
    """A resumed run keeps config.json: --epochs beside --resume is an error, not silently ignored."""
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), "--epochs", "3", "--workers", "0"])
    assert result.exit_code == 2
    assert "--epochs" in result.stderr and "--workers" not in result.stderr.split(":")[0]


def test_init_takes_shared_layers_and_heads_by_name_and_leaves_missing_heads_fresh(tmp_path):
    """A file with head and hand heads, a chest run: shared + head + hand from the file, chest as a fresh model's."""
    torch.manual_seed(3)
    source = gu2net(["head", "hand"], **TINY)
    save_weights(source, tmp_path / "head_hand.safetensors")
    data = make_chest_root(tmp_path / "data", 2)
    config = TrainConfig(data=str(data), anatomies=["chest"], init=str(tmp_path / "head_hand.safetensors"), seed=5,
                         epochs=1, batch_size=1, **TINY_CONFIG)  # fmt: skip
    trainer = start_run(config, tmp_path / "run", RunOptions(data=data, workers=0, progress=False, report=print))
    assert trainer.config.heads == ["head", "hand", "chest"] and trainer.config.schedule == "cosine"
    torch.manual_seed(5)
    fresh = gu2net(["head", "hand", "chest"], **TINY).state_dict()
    ours, theirs = trainer.model.state_dict(), source.state_dict()
    owners = tensor_owners(trainer.model)
    assert {owners[k] for k in ours} == {SHARED, "head", "hand", "chest"}
    for key, value in ours.items():
        expected = fresh[key] if owners[key] == "chest" else theirs[key]
        assert torch.equal(value, expected), key
    shared = "local_net.in_block.pointwise1.weight"
    assert not torch.equal(fresh[shared], theirs[shared])  # so the comparison above tells the two apart
    assert trainer.frozen_groups() == ["head", "hand"]  # no batches of them: kept as they are


@pytest.mark.parametrize("freeze", [["shared"], ["shared", "bn-stats"]])
def test_training_one_anatomy_from_init_leaves_the_others_bit_identical(tmp_path, tiny_weights, freeze):
    """Shared layers frozen, chest trained: head and hand outputs are bit-identical to the file's (the known
    answer), the chest's own layers move, and its BN statistics move only when bn-stats is not frozen."""
    data = make_chest_root(tmp_path / "data", 3)
    config = TrainConfig(data=str(data), anatomies=["chest"], init=str(tiny_weights), freeze=freeze, epochs=2,
                         batch_size=1, lr=1e-3, warmup=1, **TINY_CONFIG)  # fmt: skip
    trainer = start_run(config, tmp_path / "run", RunOptions(data=data, workers=0, progress=False,
                                                             report=lambda line: None))  # fmt: skip
    assert trainer.run() is True
    original, _ = load_weights(tiny_weights)
    tuned, info = load_weights(tmp_path / "run/best.safetensors")
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        for anatomy in ("head", "hand"):
            assert torch.equal(tuned(x, anatomy), original(x, anatomy)), anatomy
        assert not torch.equal(tuned(x, "chest"), original(x, "chest"))
    owners, before, after = tensor_owners(tuned), original.state_dict(), tuned.state_dict()
    for key, owner in owners.items():
        if owner != "chest":
            assert torch.equal(before[key], after[key]), key
    norm = "global_net.dilated.chest.0.bn"
    assert not torch.equal(before[f"{norm}.weight"], after[f"{norm}.weight"])
    stats_still = torch.equal(before[f"{norm}.running_mean"], after[f"{norm}.running_mean"])
    assert stats_still == ("bn-stats" in freeze)
    recorded = json.loads((tmp_path / "run/config.json").read_text())
    assert info.metrics["train_config"] == recorded
    assert recorded["init"] == str(tiny_weights) and recorded["freeze"] == freeze
    assert recorded["init_sha256"] == file_sha256(tiny_weights)
    assert recorded["schedule"] == "cosine" and recorded["model_anatomies"] == ["head", "hand", "chest"]
    assert tiny_weights.name in info.source


def test_train_init_refuses_unknown_groups_and_other_architectures_in_one_line(tmp_path, tiny_weights):
    data = make_chest_root(tmp_path / "data", 2)
    base = ["train", "--data", str(data), "--anatomies", "chest", "--init", str(tiny_weights), "--workers", "0",
            "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--local-widths", "4,4,8,8,8",
                                      "--global-width", "8", "--freeze", "shared,elbow"])  # fmt: skip
    assert result.exit_code == 2 and "--freeze elbow: not a group" in result.stderr
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and f"{tiny_weights}: another architecture" in result.stderr
    assert "local_widths [4, 4, 8, 8, 8] (run: [64, 128, 256, 512, 512])" in result.stderr


def test_train_options_are_generated_from_train_config_with_its_defaults():
    """Every field of TrainConfig but those the trainer fills is an option whose default is the field's."""
    command = typer.main.get_command(app).commands["train"]
    context = command.make_context("train", ["--data", "d", "--out", "o"])
    settings = {k: v for k, v in context.params.items() if k in CONFIG_OPTIONS}
    assert set(context.params) >= set(TrainConfig.model_fields) - NOT_OPTIONS
    assert config_from_options(Path("d"), settings) == TrainConfig(data="d")
    args = ["--anatomies", "chest,cephalometric", "--freeze", "shared, bn-stats", "--amp", "bf16", "-b", "2",
            "--no-test-at-end", "--local-widths", "4,4,8,8,8", "--init", "w.safetensors", "--limit", "3"]  # fmt: skip
    context = command.make_context("train", ["--data", "d", "--out", "o", *args])
    config = config_from_options(Path("d"), {k: v for k, v in context.params.items() if k in CONFIG_OPTIONS})
    assert config.anatomies == ["chest", "head"] and config.freeze == ["shared", "bn-stats"]
    assert (config.amp, config.batch_size, config.test_at_end, config.init, config.limit) == ("bf16", 2, False,
                                                                                              "w.safetensors", 3)
    assert config.local_widths == [4, 4, 8, 8, 8]
    assert config.schedule == "cosine"


def test_a_config_value_the_library_refuses_is_one_line_naming_its_option(tmp_path):
    args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--local-widths", "4,4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--local-widths: " in result.stderr and "five" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
