"""Write the shipped default weights from a trained run: fp16 tensors, a header that says per anatomy whether it is fit.

    PYTHONPATH=. python scripts/make_default_weights.py TRAINED.safetensors EVALUATION.json [--dtype fp16]

``EVALUATION.json`` is ``landmark-edge evaluate --out`` on the test splits. An anatomy is marked fit for use when
its reference-protocol test MRE is within ``FIT_FACTOR`` times the paper's GU2Net figure (the registry's
``paper_mre``); the header keeps the test figures it was judged on. Prints the sha256 to record as
``DEFAULT_WEIGHTS_SHA256``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from landmark_edge.anatomy import get_anatomy
from landmark_edge.weights import DEFAULT_WEIGHTS, file_sha256, load_weights, save_weights

FIT_FACTOR = 1.5  # head 1.54 -> 2.31 mm, hand 0.84 -> 1.26 mm, chest 5.57 -> 8.36 px


def assess(name: str, figures: dict, split_note: str) -> dict:
    """The readiness fields of one anatomy from its evaluation figures."""
    anatomy = get_anatomy(name)
    reference = figures["reference"]
    limit = FIT_FACTOR * anatomy.paper_mre
    fit = reference["MRE"] <= limit
    verdict = "within" if fit else "far outside"
    return {
        "fit_for_use": fit,
        "assessment": (
            f"test MRE {reference['MRE']:.2f} {reference['unit']} on {figures['images']} images ({split_note}), "
            f"{verdict} {FIT_FACTOR}x the paper's {anatomy.paper_mre} {anatomy.unit}"
        ),
        "test_metrics": {
            "images": figures["images"],
            "data": split_note,
            **{
                protocol: {k: figures[protocol][k] for k in ("unit", "MRE", "STD", "SDR")}
                for protocol in ("reference", "original")
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("evaluation", type=Path)
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--split-note", default="packed test split")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args()

    model, info = load_weights(args.weights)
    evaluation = json.loads(args.evaluation.read_text())["anatomies"]
    assessments = {name: assess(name, evaluation[name], args.split_note) for name in info.anatomy_names}
    dtype = {"fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    source = f"{info.source}; stored {args.dtype} by scripts/make_default_weights.py from sha256 {info.sha256}"
    save_weights(model, args.out, source=source, metrics=info.metrics, dtype=dtype, assessments=assessments)
    print(args.out, file_sha256(args.out))


if __name__ == "__main__":
    main()
