"""The run's metrics log (JSON lines, one row per iteration / validation / epoch) and its PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from landmark_edge.io.atomic import atomic_path, atomic_write_text

METRICS = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL. On resume, rows past the checkpoint's iteration are dropped so none is counted twice."""

    def __init__(self, path: Path, keep_until_iteration: int | None = None) -> None:
        self.path = Path(path)
        if keep_until_iteration is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= keep_until_iteration]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif keep_until_iteration is None:
            atomic_write_text(self.path, "")
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run, closed by close()

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete rows (a line cut short by a kill is ignored)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def plot_curves(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``loss.png`` (per-anatomy training loss per iteration, validation loss) and ``lr.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    if not train:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(9, 5))
    for anatomy in sorted({r["anatomy"] for r in train}):
        points = [(r["iteration"], r["loss_per_image"]) for r in train if r["anatomy"] == anatomy]
        ax.plot(*zip(*points), lw=0.6, alpha=0.8, label=f"train {anatomy}")
    if val:
        ax.plot([r["iteration"] for r in val], [r["val_loss"] for r in val], "ko-", ms=3, label="validation (sum)")
    ax.set(xlabel="iteration", ylabel="BCE sum per image", yscale="log", title="GU2Net training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(_save(fig, Path(out_dir) / "loss.png"))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([r["iteration"] for r in train], [r["lr"] for r in train], lw=0.8)
    ax.set(xlabel="iteration", ylabel="learning rate", yscale="log", title="learning rate per iteration")
    ax.grid(alpha=0.3)
    written.append(_save(fig, Path(out_dir) / "lr.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
