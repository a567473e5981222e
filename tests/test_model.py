import pytest
import torch

from landmark_edge.anatomy import ANATOMIES, PAPER_ORDER, get_anatomy, parse_anatomy_list
from landmark_edge.model import GU2Net, SingleAnatomy, gu2net
from tests.conftest import TINY


def count(params) -> int:
    return sum(p.numel() for p in params)


def test_paper_model_has_reference_parameter_count():
    model = gu2net()
    assert list(model.num_landmarks.items()) == [("head", 19), ("hand", 37), ("chest", 6)]
    assert count(model.parameters()) == 4_381_052
    assert count(model.local_net.parameters()) == 2_117_630
    assert count(model.global_net.parameters()) == 2_263_422
    assert len(model.state_dict()) == 549


@pytest.mark.parametrize("anatomy, active", [("head", 2_742_694), ("hand", 2_756_554), ("chest", 2_732_684)])
def test_single_anatomy_model_has_reference_active_count(anatomy, active):
    assert count(gu2net([anatomy]).parameters()) == active


def test_only_pointwise_convs_are_shared():
    model = gu2net()
    shared = [n for n, _ in model.named_parameters() if not any(f".{a}." in n for a in model.num_landmarks)]
    assert shared and all(".pointwise" in n for n in shared)
    assert count(p for n, p in model.named_parameters() if n in shared) == 1_925_440


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_output_shape_per_anatomy(name):
    anatomy = get_anatomy(name)
    model = gu2net(**TINY).eval()
    height, width = anatomy.grid_hw
    with torch.no_grad():
        y = model(torch.randn(2, 1, height, width), name)
    assert y.shape == (2, anatomy.num_landmarks, height, width)
    assert float(y.min()) > 0 and float(y.max()) < 1


def test_unknown_head_is_refused():
    model = GU2Net({"chest": 6}, local_widths=(4, 4, 8, 8, 8), global_width=8)
    with pytest.raises(KeyError, match="no 'head' head"):
        model(torch.zeros(1, 1, 32, 32), "head")
    with pytest.raises(KeyError):
        SingleAnatomy(model, "hand")


def test_registry_aliases_and_grids():
    assert get_anatomy("Cephalometric") is ANATOMIES["head"]
    assert get_anatomy("head").grid == (416, 512) and get_anatomy("head").grid_hw == (512, 416)
    assert get_anatomy("hand").grid == (368, 512)
    assert get_anatomy("chest").num_landmarks == 6
    assert [a.name for a in parse_anatomy_list("chest,cephalometric,hand")] == ["chest", "head", "hand"]
    with pytest.raises(ValueError, match="unknown anatomy 'foot'"):
        get_anatomy("foot")
    with pytest.raises(ValueError, match="twice"):
        parse_anatomy_list("head,ceph")
