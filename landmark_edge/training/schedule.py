"""The reference schedule: mixed single-anatomy batches (reference §7), Adam and CyclicLR triangular2; and the
fine-tune schedule (linear warm-up, then cosine decay) for runs that start from trained weights.

``MixIter`` in the reference lists every batch of every anatomy's loader once per epoch, in an interleaving
order shuffled once at start-up and reused every epoch, while each loader reshuffles its own samples every
epoch (drop_last). Here the whole epoch is a *plan* computed from (seed, epoch) alone, so a resumed run can
skip the first k batches of an epoch without loading them and still see exactly the batches it would have seen.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import torch

Plan = list[tuple[str, list[int]]]  # (anatomy, sample indices) per iteration


def interleaving(batches_per_anatomy: dict[str, int], seed: int) -> list[str]:
    """Every anatomy's batch slots, shuffled once (python ``random``, as the reference's MixIter)."""
    order = [name for name, count in batches_per_anatomy.items() for _ in range(count)]
    random.Random(seed).shuffle(order)
    return order


def epoch_plan(sizes: dict[str, int], batch_size: int, seed: int, epoch: int) -> Plan:
    """The iterations of one epoch: which anatomy and which of its samples (dropping incomplete batches)."""
    order = interleaving({name: size // batch_size for name, size in sizes.items()}, seed)
    queues = {}
    for position, (name, size) in enumerate(sizes.items()):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + position)
        queues[name] = iter(torch.randperm(size, generator=generator).tolist())
    return [(name, [next(queues[name]) for _ in range(batch_size)]) for name in order]


def build_optimizer(
    parameters: torch.nn.Module | Iterable[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Adam:
    """Adam with coupled L2 weight decay (the reference's ``Adam(lr=1e-4, weight_decay=1e-4)``, not AdamW).

    Give it only the parameters that train: Adam decays every parameter it holds that has a gradient, so a
    frozen one must not be in it at all.
    """
    if isinstance(parameters, torch.nn.Module):
        parameters = parameters.parameters()
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, lr: float, max_lr: float, step_size: int):
    """CyclicLR triangular2 between ``lr`` and ``max_lr``, ``step_size`` iterations up and down, per iteration."""
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=lr, max_lr=max_lr, step_size_up=step_size, step_size_down=step_size,
        mode="triangular2", cycle_momentum=False,
    )  # fmt: skip


def warmup_cosine(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """The fine-tune rate at 0-based iteration ``step``: linear up to ``lr`` over ``warmup`` iterations, then a
    half cosine down to ``min_lr`` at iteration ``total``.

    Trained weights sit in a minimum the reference's CyclicLR (up to 1e-2) would throw them out of; the warm-up
    lets Adam's moment estimates settle before the full (low) rate is applied.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_cosine_scheduler(optimizer: torch.optim.Optimizer, lr: float, min_lr: float, warmup: int, total: int):
    """:func:`warmup_cosine` per iteration; a pure function of the step, so resuming needs only the step count."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, lr, min_lr, warmup, total) / lr
    )
