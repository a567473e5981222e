"""Benchmark records: every script in ``benchmarks/`` writes its results through :func:`write_record`.

A number without the machine, the command and the code it came from cannot be checked or compared, so each
record carries them in the same place: ``record`` in the JSON (when, the command line, the git commit, the
environment of :func:`~landmark_edge.bench.environment.collect_environment`, library versions) and a
"Recorded" block under the Markdown's title. Both files are written atomically, after both texts are made: a
script that fails while rendering leaves the previous record whole.
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import torch

from landmark_edge.bench.environment import collect_environment
from landmark_edge.io.atomic import atomic_write_text

# Libraries a result can depend on beyond the environment's torch / onnxruntime / tensorrt (None: not installed).
LIBRARIES = ("numpy", "onnx", "onnxslim", "pillow", "pydicom", "ray", "triton")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that reruns this script from the repository root: ``PYTHONPATH=. python benchmarks/x.py ARGS``
    (the scripts import ``scripts.`` helpers beside the package)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else Path("python")
    try:
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    if script.suffix == ".sh":  # a shell script that writes its record through this module
        return shlex.join(["bash", str(script), *argv[1:]])
    return "PYTHONPATH=. " + shlex.join(["python", str(script), *argv[1:]])


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(device: str = "cpu", argv: Sequence[str] | None = None) -> dict[str, object]:
    """Where, when and how a record is made (the ``record`` field of every record)."""
    environment = collect_environment(torch.device(device))
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command_line(argv),
        "git_commit": environment.git_commit,
        "environment": environment.model_dump(),
        "libraries": library_versions(),
    }


def machine(record: dict) -> str:
    """One line for a table or a sentence: ``CPU name (N cores[, GPU])`` of a record's environment."""
    environment = record["record"]["environment"]
    gpu = f", {environment['gpu']}" if environment.get("gpu") else ""
    return f"{environment['cpu']} ({environment['cpu_cores']} cores{gpu})"


def provenance_markdown(record: dict) -> str:
    made = record["record"]
    environment = made["environment"]
    libraries = {"torch": environment["torch"], **environment.get("libraries", {}), **made["libraries"]}
    versions = [f"{name} {version}" for name, version in libraries.items() if version is not None]
    return "\n".join([
        f"Recorded {made['created']} on {machine(record)}, Python {environment['python']}, landmark-edge "
        f"{environment['landmark_edge']} at commit {made['git_commit'] or 'unknown'}; {', '.join(versions)}. "
        "Command (from the repository root):",
        "",
        "```bash",
        made["command"],
        "```",
    ])  # fmt: skip


def write_record(
    stem: Path,
    data: dict,
    markdown: Callable[[dict], str],
    *,
    device: str = "cpu",
    argv: Sequence[str] | None = None,
    markdown_path: Path | None = None,
) -> dict:
    """Write ``STEM.json`` (``data`` with its ``record``) and ``STEM.md`` (or ``markdown_path``: ``markdown(record)``
    with the "Recorded" block under its title); returns the record. NaN is refused: JSON has no such number."""
    record = {"record": provenance(device, argv), **data}
    json_text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    title, _, body = markdown(record).partition("\n")
    if not title.startswith("# "):
        title, body = "", f"{title}\n{body}"
    parts = [title, provenance_markdown(record), body.strip("\n")]
    markdown_text = "\n\n".join(part for part in parts if part) + "\n"
    atomic_write_text(stem.with_suffix(".json"), json_text)
    atomic_write_text(markdown_path or stem.with_suffix(".md"), markdown_text)
    return record
