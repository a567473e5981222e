"""The shipped default weights (once they ship) and the bundled examples they are checked on."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from landmark_edge.cli import app
from landmark_edge.weights import DEFAULT_WEIGHTS, load_weights
from tests.conftest import DATA, REPO, require

EXAMPLES = REPO / "landmark_edge" / "examples"
LABELS = json.loads((EXAMPLES / "labels.json").read_text())
# Generous on purpose: this guards against shipping broken or mis-ordered weights, not accuracy (that is in
# benchmarks/results/): about 5 mm on the head (0.1 mm/px), 6% of the hand's width, 5% of the chest grid.
RADIUS_PX = {"head": 50.0, "hand": 80.0, "chest": 25.0}


def test_bundled_example_labels_are_what_the_dataset_code_reads():
    require(DATA)
    from scripts.make_examples import example_labels

    assert {k: v["landmarks"] for k, v in example_labels(DATA).items()} == {
        k: v["landmarks"] for k, v in LABELS.items()
    }


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no default weights ship yet (training needs a GPU)")
def test_default_weights_load_with_every_anatomy():
    model, info = load_weights(DEFAULT_WEIGHTS)
    assert info.anatomy_names == ["head", "hand", "chest"]
    assert sum(p.numel() for p in model.parameters()) == 4_381_052


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="no default weights ship yet (training needs a GPU)")
@pytest.mark.parametrize("anatomy", ["head", "hand", "chest"])
def test_default_weights_find_every_landmark_near_its_annotation(anatomy):
    entry = LABELS[anatomy]
    result = CliRunner().invoke(app, ["infer", str(EXAMPLES / entry["file"]), "-a", anatomy, "-f", "json"])
    assert result.exit_code == 0, result.output
    found = np.array([[lm["x"], lm["y"]] for lm in json.loads(result.stdout)[0]["landmarks"]])
    errors = np.linalg.norm(found - np.array(entry["landmarks"]), axis=1)
    assert errors.max() <= RADIUS_PX[anatomy], f"{anatomy}: landmark errors {errors.round(1).tolist()} px"

