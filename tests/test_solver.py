"""SOLVER.CLIP_GRADIENTS means the same on both engines (Detectron2's meaning, plus full_model)."""
import pytest
import torch

from deepacc.config import get_cfg
from deepacc.solver import clip_gradients


def _params():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 12.0])  # norms 5 and 12, together 13
    return a, b


def _clip(kind, value):
    cfg = get_cfg().SOLVER.CLIP_GRADIENTS
    cfg.CLIP_TYPE, cfg.CLIP_VALUE = kind, value
    a, b = _params()
    clip_gradients([a, b], cfg)
    return a.grad.tolist(), b.grad.tolist()


def test_value_clips_each_element():
    assert _clip("value", 3.5) == ([3.0, 3.5], [0.0, 3.5])


def test_norm_clips_each_parameter_separately_like_detectron2():
    a, b = _clip("norm", 5.0)
    assert a == pytest.approx([3.0, 4.0]) and b == pytest.approx([0.0, 5.0], rel=1e-5)


def test_full_model_clips_the_total_norm():
    a, b = _clip("full_model", 6.5)  # 13 -> 6.5: everything halves
    assert a == pytest.approx([1.5, 2.0], rel=1e-5) and b == pytest.approx([0.0, 6.0], rel=1e-5)


def test_unknown_clip_type_is_refused():
    with pytest.raises(ValueError, match="full_model"):
        _clip("global", 1.0)
