"""GU2Net training: the reference schedule, mixed-anatomy batches, resumable checkpoints in parts."""

from landmark_edge.training.checkpoint import load_checkpoint, save_checkpoint, split_bytes
from landmark_edge.training.trainer import RunOptions, TrainConfig, Trainer, TrainingError, resume_run, start_run

__all__ = [
    "RunOptions", "TrainConfig", "Trainer", "TrainingError", "load_checkpoint", "resume_run", "save_checkpoint",
    "split_bytes", "start_run",
]  # fmt: skip
