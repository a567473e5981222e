"""GU2Net training with the reference schedule, resumable at any iteration.

Two recipes share the schedule: *reference* (the paper's reproduction: no augmentation, the reference's rounded
integer labels) and *robust* (every training image reframed and re-exposed in the data-loader workers by
:class:`~landmark_edge.data.Augmentation`, targets centred on the exact sub-pixel labels, validation on the
unaugmented images with the same sub-pixel targets).

One iteration = one single-anatomy batch (reference §7): z-score on the device, forward (optionally under
bf16/fp16 autocast, optionally channels_last), BCE summed over batch x landmarks x pixels on the *product*
output in float32, Adam step, scheduler step. Validation every ``val_every`` epochs and at the last one: per
anatomy the mean per-image BCE sum, summed over anatomies; the lowest value is exported as ``best.safetensors``.

A fine-tune starts from a weights file (``init``): the shared layers and every head the file has are taken
from it by anatomy name, heads it lacks start fresh. Groups can be frozen (``freeze``: the shared layers, an
anatomy's own layers, the BatchNorm statistics); a frozen group's tensors are left bit-identical (its
parameters are not given to Adam, its BatchNorms stay in eval mode), and so are the heads of anatomies the run
has no batches of. Such a run uses the ``cosine`` schedule (linear warm-up, then cosine decay from ``lr``).

Everything a run needs to continue exactly is in its checkpoint (model, optimizer, scheduler, grad scaler, RNG
states, epoch, position in the epoch, iteration, best so far, the epoch's running loss) and the data order is a
pure function of (seed, epoch), so ``--resume`` after a kill replays the same batches with the same learning
rates as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, field_validator, model_validator
from torch import nn

from landmark_edge.anatomy import PAPER_ORDER, get_anatomy
from landmark_edge.data import Augmentation, Batch, GridDataset, SplitData, load_split, render_heatmaps
from landmark_edge.errors import LandmarkEdgeError, first_line
from landmark_edge.io.atomic import atomic_write_text
from landmark_edge.model import SHARED, GU2Net, gu2net, tensor_owners
from landmark_edge.transforms import zscore_batch
from landmark_edge.training.checkpoint import DEFAULT_PART_MIB, has_checkpoint, load_checkpoint, save_checkpoint
from landmark_edge.training.logs import METRICS, MetricsLog, plot_curves, read_metrics
from landmark_edge.training.selection import SELECTION_SHIFTS, framing_mre, framing_score, named_shift
from landmark_edge.training.schedule import build_cosine_scheduler, build_optimizer, build_scheduler, epoch_plan
from landmark_edge.weights import checked_sha256, load_weights, read_info, save_weights

CONFIG = "config.json"
BN_STATS = "bn-stats"
FREEZE_GROUPS = (SHARED, BN_STATS)  # besides an anatomy's name (its own layers)
BEST = "best.safetensors"
TEST = "test.json"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
RECIPES = {
    "reference": "the paper's: no augmentation, targets on the reference's rounded grid labels",
    "robust": "random scale/aspect/rotation/translation and top-cutting crops (no flip), gamma, blur and noise; "
    "targets on the exact sub-pixel labels",
}


class TrainConfig(BaseModel):
    """What defines a run (fixed for its whole life; ``config.json`` in the run directory).

    The one place of each setting's default, help and bounds: ``landmark-edge train`` generates its options from
    these fields (``commands/train.py``), so the command and the library cannot disagree.
    """

    data: str = Field("", description="Where the data was when the run started (a resumed chunk may pass another).")
    recipe: Literal["reference", "robust"] = Field(
        "reference", description="; ".join(f"{name}: {text}" for name, text in RECIPES.items()) + "."
    )
    anatomies: list[str] = Field(
        default_factory=lambda: list(PAPER_ORDER),
        description="Comma-separated anatomies the run has batches of, in model order.",
    )
    epochs: int = Field(100, ge=1, description="Epochs (reference: 100).")
    batch_size: int = Field(4, ge=1, description="Images per batch (one anatomy per batch).")
    lr: float = Field(1e-4, gt=0, description="Base learning rate (Adam; CyclicLR's lower bound; the cosine "
                      "schedule's peak).")  # fmt: skip
    max_lr: float = Field(1e-2, gt=0, description="CyclicLR upper bound.")
    weight_decay: float = Field(1e-4, ge=0, description="Adam (coupled L2) weight decay.")
    step_size: int = Field(2000, ge=1, description="CyclicLR half-cycle in iterations.")
    val_every: int = Field(2, ge=1, description="Validate every N epochs (and at the last).")
    amp: Literal["none", "bf16", "fp16"] = Field(
        "none", description="Autocast the forward in bf16/fp16 (the loss stays fp32)."
    )
    channels_last: bool = Field(False, description="channels_last memory format.")
    seed: int = Field(42, description="Seed of weights init and data order.")
    local_widths: list[int] = Field(
        default_factory=lambda: [64, 128, 256, 512, 512], description="U-Net level widths (paper: 64,128,256,512,512)."
    )
    global_width: int = Field(128, ge=2, description="Global branch width (paper: 128).")
    limit: int | None = Field(None, ge=1, description="Use only the first N images of each split (smoke tests).")
    checkpoint_every: int = Field(
        0, ge=0, description="Also checkpoint every N iterations (0: at each epoch's end only)."
    )
    part_mib: float = Field(DEFAULT_PART_MIB, ge=0.01, description="Checkpoint part size limit in MiB.")
    init: str | None = Field(
        None, description="Start from this weights file: its shared layers and every head it has (matched by "
        "anatomy name; heads it lacks start fresh, heads not in --anatomies are kept and left as they are)."
    )
    init_sha256: str = Field("", description="Of the init file, recorded at the start (a resume refuses a change).")
    model_anatomies: list[str] = Field(
        default_factory=list, description="The model's heads in order (from the init file); empty: the anatomies."
    )
    freeze: list[str] = Field(
        default_factory=list, description="Comma-separated groups left as they are: shared (the layers all "
        "anatomies share), an anatomy's name (its own layers), bn-stats (BatchNorm statistics)."
    )
    schedule: Literal["cyclic", "cosine"] | None = Field(
        None, description="cyclic: the reference's CyclicLR from --lr to --max-lr; cosine: linear warm-up to --lr, "
        "then cosine decay to --min-lr (default: cosine with --init, cyclic otherwise)."
    )
    warmup: int = Field(50, ge=0, description="Cosine schedule: warm-up iterations.")
    min_lr: float = Field(1e-6, ge=0, description="Cosine schedule: the rate at the last iteration.")
    select: Literal["framing", "loss"] = Field(
        "framing", description="What picks best.safetensors: framing, the mean validation MRE unshifted and under "
        "--select-shifts relative to the paper's figure; loss, the validation BCE (the reference's)."
    )
    select_shifts: list[str] = Field(
        default_factory=lambda: list(SELECTION_SHIFTS),
        description="Comma-separated framing changes of `evaluate --shift` that model selection sees.",
    )
    shifted_val_images: int = Field(
        8, ge=1, description="How many validation images (the first) go through each selection shift."
    )
    test_at_end: bool = Field(
        True, description="Evaluate best.safetensors on the test split once, at the end (test.json)."
    )

    @field_validator("local_widths")
    @classmethod
    def _five_levels(cls, widths: list[int]) -> list[int]:
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError("give five positive comma-separated integers")
        return widths

    @field_validator("freeze")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        """Anatomy aliases become names (the trainer refuses what is not a group of its model)."""
        return [group if group in FREEZE_GROUPS else _anatomy_name(group) for group in groups]

    @model_validator(mode="after")
    def _resolve_schedule(self) -> TrainConfig:
        """A run from trained weights fine-tunes: CyclicLR up to ``max_lr`` would undo what they converged to."""
        if self.schedule is None:
            self.schedule = "cosine" if self.init else "cyclic"
        return self

    @property
    def heads(self) -> list[str]:
        """The model's anatomies, in order: the init file's, then those it lacks."""
        return self.model_anatomies or self.anatomies


@dataclass
class RunOptions:
    """Where and how this process runs a run (may differ between the chunks of one run)."""

    data: Path | None = None  # None on resume: where the run started
    device: str = "cpu"
    workers: int = 2
    max_minutes: float | None = None
    progress: bool = True
    on_iteration: Callable[[Trainer], None] | None = None  # called after every iteration (tests inject kills)
    report: Callable[[str], None] = print


class TrainingError(LandmarkEdgeError):
    """The run cannot start or continue; the message says why."""


def batch_loss(
    model: torch.nn.Module, batch: Batch, device: torch.device, amp: str = "none", channels_last: bool = False
) -> torch.Tensor:
    """BCE summed over the batch, in float32 on the product output (BCE is refused under CUDA autocast).

    The batch is z-scored and its targets rendered on ``device``; only the forward runs under autocast.
    """
    anatomy = get_anatomy(batch.anatomy)
    x = zscore_batch(batch.pixels.to(device, non_blocking=True))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = render_heatmaps(batch.labels.to(device), anatomy.grid_hw)
    dtype = AMP_DTYPES.get(amp)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        output = model(x, anatomy.name)
    return F.binary_cross_entropy(output.float(), target, reduction="sum")


def _identity(batch: Batch) -> Batch:
    return batch


class _PlanItems(torch.utils.data.Dataset):
    """The remaining iterations of an epoch as loadable batches (so DataLoader workers read ahead)."""

    def __init__(self, datasets: dict[str, GridDataset], plan: list[tuple[str, list[int]]], key: tuple[int, ...],
                 start: int) -> None:  # fmt: skip
        self.datasets, self.plan, self.key, self.start = datasets, plan, key, start

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> Batch:
        """Batch ``index`` of the remaining plan; augmentation draws are keyed by its position in the epoch."""
        anatomy, indices = self.plan[index]
        return self.datasets[anatomy].batch(indices, key=(*self.key, self.start + index))


class Trainer:
    """One run: its model, data, optimizer and position; ``initialise`` applies ``config.init`` (a new run, or
    one resumed before its first checkpoint)."""

    def __init__(self, config: TrainConfig, run_dir: Path, options: RunOptions, initialise: bool = True) -> None:
        self.config, self.run_dir, self.options = config, Path(run_dir), options
        self.device = torch.device(options.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError(f"--device {options.device}: CUDA is not available on this machine")
        self.anatomies = [get_anatomy(name) for name in config.anatomies]
        _seed_everything(config.seed)
        model = gu2net(config.heads, local_widths=config.local_widths, global_width=config.global_width)
        if initialise and config.init:
            self._initialise(model)
        trainable = self._freeze(model)
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        for name in config.select_shifts:
            try:
                named_shift(name)
            except ValueError as error:
                raise TrainingError(f"--select-shifts: {error}") from None
        self.train_sets = self._datasets("train")
        self.val_splits = self._splits("val")
        self.val_sets = self._datasets("val", self.val_splits)
        if not any(len(d) >= config.batch_size for d in self.train_sets.values()):
            raise TrainingError(f"{options.data}: no anatomy has a full training batch of {config.batch_size}")
        self.optimizer = build_optimizer(trainable, config.lr, config.weight_decay)
        if config.schedule == "cosine":
            total = config.epochs * self.iterations_per_epoch
            self.scheduler = build_cosine_scheduler(self.optimizer, config.lr, config.min_lr, config.warmup, total)
        else:
            self.scheduler = build_scheduler(self.optimizer, config.lr, config.max_lr, config.step_size)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.epoch = self.position = self.iteration = 0
        self.best_val, self.best_epoch = math.inf, -1
        self.epoch_sums: dict[str, list[float]] = {}
        self.finished = False
        self._elapsed_before = 0.0
        self._chunk_start = time.monotonic()
        self.failed_reads: set[str] = set()

    # -- weights and freezing ------------------------------------------------------------------------------
    def _initialise(self, model: GU2Net) -> None:
        """Shared layers and every head the file has come from ``config.init``; the heads it lacks stay fresh."""
        path = Path(self.config.init)
        source, info = load_weights(path, require_fit=False)
        if self.config.init_sha256 and info.sha256 != self.config.init_sha256:
            raise TrainingError(f"{path}: changed since the run started (sha256 {info.sha256[:12]}..., the run "
                                f"recorded {self.config.init_sha256[:12]}...)")
        theirs = {k: v for k, v in source.config.items() if k != "num_landmarks"}
        ours = {k: v for k, v in model.config.items() if k != "num_landmarks"}
        if theirs != ours:
            differ = ", ".join(f"{k} {theirs.get(k)} (run: {v})" for k, v in ours.items() if theirs.get(k) != v)
            raise TrainingError(f"{path}: another architecture than this run's: {differ}")
        weights = source.state_dict()
        taken = {k: weights[k] for k, owner in tensor_owners(model).items() if owner in (SHARED, *info.anatomy_names)}
        model.load_state_dict({**model.state_dict(), **taken})
        fresh = [name for name in model.anatomies if name not in info.anatomy_names]
        self.options.report(f"init: {path} (shared layers, {', '.join(n for n in model.anatomies if n not in fresh)})"
                            + (f"; fresh: {', '.join(fresh)}" if fresh else ""))

    def frozen_groups(self) -> list[str]:
        """What does not train: the groups in ``freeze`` and the heads of anatomies the run has no batches of."""
        idle = [name for name in self.config.heads if name not in self.config.anatomies]
        return list(dict.fromkeys([*self.config.freeze, *idle]))

    def _freeze(self, model: GU2Net) -> list[nn.Parameter]:
        """Turn off gradients of frozen groups; returns the parameters that train (the only ones Adam gets)."""
        unknown = [g for g in self.config.freeze if g not in (*FREEZE_GROUPS, *model.anatomies)]
        if unknown:
            raise TrainingError(f"--freeze {','.join(unknown)}: not a group of this model ({', '.join(FREEZE_GROUPS)}"
                                f" or one of its anatomies: {', '.join(model.anatomies)})")
        frozen = set(self.frozen_groups())
        owners = tensor_owners(model)
        trainable = []
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(owners[name] not in frozen)
            if parameter.requires_grad:
                trainable.append(parameter)
        if not trainable:
            raise TrainingError(f"--freeze {','.join(self.config.freeze)}: leaves nothing to train")
        self._still_norms = [module for prefix, module in model.named_modules()
                             if isinstance(module, nn.modules.batchnorm._BatchNorm)
                             and (BN_STATS in frozen or owners[f"{prefix}.running_mean"] in frozen)]  # fmt: skip
        count = sum(p.numel() for p in trainable)
        total = sum(p.numel() for p in model.parameters())
        self.options.report(f"training {count:,} of {total:,} parameters"
                            + (f"; frozen: {', '.join(sorted(frozen))}" if frozen else ""))
        return trainable

    def _train_mode(self) -> None:
        """Training mode, except BatchNorms whose statistics are frozen: they normalise with their running
        statistics and leave them as they are (a frozen head stays bit-identical)."""
        self.model.train()
        for module in self._still_norms:
            module.eval()

    # -- data -------------------------------------------------------------------------------------------
    def _splits(self, split: str) -> dict[str, SplitData]:
        """Each anatomy's usable samples of ``split`` (the first ``limit``), skipped ones reported."""
        splits = {}
        for anatomy in self.anatomies:
            loaded = load_split(self.options.data, anatomy, split)
            for line in loaded.skipped:
                self.options.report(f"skipped: {line}")
            if loaded.skipped:
                self.options.report(f"{anatomy.name} {split}: {len(loaded.skipped)} samples skipped")
            samples = loaded.samples[: self.config.limit] if self.config.limit else loaded.samples
            splits[anatomy.name] = SplitData(anatomy.name, split, samples, [])
        return splits

    def _datasets(self, split: str, splits: dict[str, SplitData] | None = None) -> dict[str, GridDataset]:
        robust = self.config.recipe == "robust"
        augmentation = Augmentation() if robust and split == "train" else None
        return {
            anatomy.name: GridDataset(loaded.samples, anatomy, "subpixel" if robust else "reference", augmentation)
            for anatomy, loaded in zip(self.anatomies, (splits or self._splits(split)).values(), strict=True)
        }

    def plan(self, epoch: int) -> list[tuple[str, list[int]]]:
        sizes = {name: len(d) for name, d in self.train_sets.items()}
        return epoch_plan(sizes, self.config.batch_size, self.config.seed, epoch)

    @property
    def iterations_per_epoch(self) -> int:
        return len(self.plan(0))

    # -- one step -----------------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One optimisation step; returns (loss, lr used)."""
        lr = self.optimizer.param_groups[0]["lr"]
        loss = batch_loss(self.model, batch, self.device, self.config.amp, self.config.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item(), lr

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean per-image BCE sum per anatomy (anatomies without validation images are left out)."""
        self.model.eval()
        losses = {}
        for name, dataset in self.val_sets.items():
            total, images = 0.0, 0
            for start in range(0, len(dataset), self.config.batch_size):
                batch = dataset.batch(list(range(start, min(start + self.config.batch_size, len(dataset)))))
                self._note_failures(batch)
                if batch.ids:
                    loss = batch_loss(self.model, batch, self.device, self.config.amp, self.config.channels_last)
                    total += loss.item()
                    images += len(batch.ids)
            if images:
                losses[name] = total / images
        self._train_mode()
        return losses

    def validate_framing(self) -> dict[str, dict[str, float | None]]:
        """Per anatomy with validation images, MRE unshifted and under each ``select_shifts`` shift."""
        mre = {}
        for anatomy in self.anatomies:
            split = self.val_splits[anatomy.name]
            if split.samples:
                mre[anatomy.name] = framing_mre(self.model, split, anatomy, self.config.select_shifts,
                                                self.config.shifted_val_images, self.device,
                                                self.config.batch_size, self.options.workers)  # fmt: skip
        self._train_mode()
        return mre

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> bool:
        """Train until the last epoch (True), or until ``max_minutes`` or SIGTERM (False, checkpointed, resumable).

        SIGTERM (what ``timeout`` and job schedulers send before killing) stops at the next iteration boundary.
        """
        self._chunk_start = start = time.monotonic()
        deadline = None if self.options.max_minutes is None else start + 60 * self.options.max_minutes
        stop = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        resumed_at = self.iteration if has_checkpoint(self.run_dir) else None
        log = MetricsLog(self.run_dir / METRICS, keep_until_iteration=resumed_at)
        total = self.config.epochs * self.iterations_per_epoch
        self._train_mode()
        try:
            with _progress(self.options.progress, total, self.iteration) as progress:
                while self.epoch < self.config.epochs:
                    for batch in self._loader(self.plan(self.epoch)[self.position :], self.position):
                        self._note_failures(batch)
                        loss, lr = self.train_step(batch) if batch.ids else (math.nan, self.scheduler.get_last_lr()[0])
                        self.position += 1
                        self.iteration += 1
                        self._accumulate(batch, loss)
                        log.write({"kind": "train", "epoch": self.epoch, "iteration": self.iteration,
                                   "anatomy": batch.anatomy, "loss": loss,
                                   "loss_per_image": loss / max(len(batch.ids), 1), "lr": lr,
                                   "elapsed_s": round(self.elapsed_s, 3)})
                        progress(self.iteration, loss / max(len(batch.ids), 1), lr)
                        if self.options.on_iteration is not None:
                            self.options.on_iteration(self)
                        if self.config.checkpoint_every and self.iteration % self.config.checkpoint_every == 0:
                            self.save()
                        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                            self.save()
                            self._plot()
                            return False
                    self._end_epoch(log)
            self._finish()
            return True
        finally:
            log.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _loader(self, plan, start: int):
        return torch.utils.data.DataLoader(
            _PlanItems(self.train_sets, plan, (self.config.seed, self.epoch), start), batch_size=None, shuffle=False,
            num_workers=self.options.workers, collate_fn=_identity,
        )  # fmt: skip

    def _accumulate(self, batch: Batch, loss: float) -> None:
        if batch.ids:
            sums = self.epoch_sums.setdefault(batch.anatomy, [0.0, 0])
            sums[0] += loss
            sums[1] += len(batch.ids)

    @property
    def elapsed_s(self) -> float:
        """Training seconds over all chunks of the run (time between chunks not counted)."""
        return self._elapsed_before + time.monotonic() - self._chunk_start

    def _end_epoch(self, log: MetricsLog) -> None:
        last = self.epoch == self.config.epochs - 1
        row: dict[str, Any] = {"kind": "epoch", "epoch": self.epoch, "iteration": self.iteration,
                               "train_loss_per_image": {k: s / n for k, (s, n) in self.epoch_sums.items() if n},
                               "elapsed_s": round(self.elapsed_s, 3)}
        if self.epoch % self.config.val_every == 0 or last:
            losses = self.validate()
            if losses:
                self._select(log, losses)
        log.write(row)
        self.epoch += 1
        self.position = 0
        self.epoch_sums = {}
        self.save()
        self._plot()

    def _select(self, log: MetricsLog, losses: dict[str, float]) -> None:
        """Score this validation (framing: relative MRE over conditions; loss: the summed BCE) and keep the
        model as best.safetensors when it beats every earlier one."""
        val_loss = sum(losses.values())
        mre = self.validate_framing() if self.config.select == "framing" else {}
        score = framing_score(mre, {a.name: a for a in self.anatomies}) if mre else val_loss
        improved = score < self.best_val
        if improved:
            self.best_val, self.best_epoch = score, self.epoch
            self.export(self.run_dir / BEST)
        log.write({"kind": "val", "epoch": self.epoch, "iteration": self.iteration, "val_loss": val_loss,
                   "per_anatomy": losses, "mre": mre, "score": score, "best": improved})
        measured = "".join(f"; {name} MRE " + ", ".join(f"{c} {_figure(v)}" for c, v in conditions.items())
                           for name, conditions in mre.items())  # fmt: skip
        self.options.report(f"epoch {self.epoch}: validation loss {val_loss:.1f}{measured}; score {score:.4g}"
                            + (" (best)" if improved else f" (best {self.best_val:.4g}, epoch {self.best_epoch})"))

    def _finish(self) -> None:
        if self.best_epoch < 0:  # no validation images at all: the final model is the best one known
            self.options.report("no validation images: exporting the final model as best.safetensors")
            self.best_epoch = self.config.epochs - 1
            self.export(self.run_dir / BEST)
        if not self.finished:
            if self.config.test_at_end:
                self.test()
            self.finished = True
            self.save()

    def test(self) -> dict[str, Any]:
        """best.safetensors on the test split, unshifted and under each ``select_shifts`` shift (every image):
        the run's one look at the test split, written to test.json."""
        model, info = load_weights(self.run_dir / BEST, require_fit=False)
        model = model.to(self.device)
        splits = self._splits("test")
        mre = {a.name: framing_mre(model, splits[a.name], a, self.config.select_shifts, None, self.device,
                                   self.config.batch_size, self.options.workers)
               for a in self.anatomies if splits[a.name].samples}  # fmt: skip
        report = {"weights": str(self.run_dir / BEST), "sha256": info.sha256, "epoch": self.best_epoch,
                  "split": "test", "protocol": "original", "images": {n: len(s.samples) for n, s in splits.items()},
                  "unit": {a.name: a.unit for a in self.anatomies}, "mre": mre}  # fmt: skip
        atomic_write_text(self.run_dir / TEST, json.dumps(report, indent=2) + "\n")
        for name, conditions in mre.items():
            self.options.report(f"test {name} ({report['images'][name]} images), MRE {report['unit'][name]}: "
                                + ", ".join(f"{c} {_figure(v)}" for c, v in conditions.items()))
        return report

    def export(self, path: Path) -> None:
        metrics = {"best_epoch": self.best_epoch, "selection": self.config.select,
                   "score": None if math.isinf(self.best_val) else self.best_val, "iteration": self.iteration,
                   "train_config": self.config.model_dump()}
        source = f"landmark-edge train --recipe {self.config.recipe}, run {self.run_dir.name}, epoch {self.best_epoch}"
        if self.config.init:
            source += f", from {Path(self.config.init).name} (sha256 {self.config.init_sha256[:12]}...)"
        save_weights(self.model, path, source=source, metrics=metrics)

    def _note_failures(self, batch: Batch) -> None:
        for line in batch.failures:
            if line not in self.failed_reads:
                self.failed_reads.add(line)
                self.options.report(f"skipped: {line}")

    def _plot(self) -> None:
        plot_curves(read_metrics(self.run_dir / METRICS), self.run_dir)

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch": self.epoch,
            "position": self.position,
            "iteration": self.iteration,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "epoch_sums": self.epoch_sums,
            "finished": self.finished,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        for key in ("epoch", "position", "iteration", "best_val", "best_epoch", "epoch_sums", "finished"):
            setattr(self, key, state[key])
        self._elapsed_before = state["elapsed_s"]

    def save(self) -> None:
        save_checkpoint(self.run_dir, self.state_dict(), self.config.part_mib)


def start_run(config: TrainConfig, run_dir: Path, options: RunOptions) -> Trainer:
    """A new run in ``run_dir`` (refused when it already holds one: use :func:`resume_run`)."""
    run_dir = Path(run_dir)
    if has_checkpoint(run_dir) or (run_dir / CONFIG).exists():
        raise TrainingError(f"{run_dir}: already holds a run; continue it with --resume {run_dir}")
    if config.init:
        config = _with_init(config)
    trainer = Trainer(config, run_dir, options)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG, config.model_dump_json(indent=2) + "\n")
    return trainer


def resume_run(run_dir: Path, options: RunOptions) -> Trainer:
    """The run in ``run_dir`` at its last checkpoint (or from the start if it was killed before the first)."""
    run_dir = Path(run_dir)
    try:
        config = TrainConfig.model_validate_json((run_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TrainingError(f"{run_dir / CONFIG}: not a run directory ({first_line(error)})") from None
    if options.data is None:
        options.data = Path(config.data)
    checkpointed = has_checkpoint(run_dir)
    trainer = Trainer(config, run_dir, options, initialise=not checkpointed)
    if checkpointed:
        trainer.load_state_dict(load_checkpoint(run_dir, map_location=trainer.device))
    return trainer


def _with_init(config: TrainConfig) -> TrainConfig:
    """Record what ``init`` is (its sha256) and the model it makes: the file's heads in its order, then those of
    ``anatomies`` it lacks; every other head of the file is kept and left as it is."""
    info = read_info(config.init)
    names = [get_anatomy(name).name for name in config.anatomies]
    heads = [*info.anatomy_names, *(name for name in names if name not in info.anatomy_names)]
    return config.model_copy(update={"init_sha256": checked_sha256(config.init), "model_anatomies": heads})


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _anatomy_name(text: str) -> str:
    try:
        return get_anatomy(text).name
    except ValueError:
        return text


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class _progress:
    """A rich progress bar over all iterations of the run, with the last loss and lr (or nothing)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.enabled, self.total, self.done = enabled, total, done

    def __enter__(self) -> Callable[[int, float, float], None]:
        if not self.enabled:
            return lambda iteration, loss, lr: None
        from rich import progress

        self.bar = progress.Progress(
            progress.TextColumn("[bold]train"), progress.BarColumn(), progress.MofNCompleteColumn(),
            progress.TextColumn("{task.fields[info]}"), progress.TimeElapsedColumn(), progress.TimeRemainingColumn(),
        )
        self.bar.start()
        task = self.bar.add_task("train", total=self.total, completed=self.done, info="")

        def update(iteration: int, loss: float, lr: float) -> None:
            self.bar.update(task, completed=iteration, info=f"loss/img {loss:,.0f}  lr {lr:.2e}")

        return update

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()
