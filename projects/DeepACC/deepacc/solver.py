"""Solver rules shared by both engines."""
from __future__ import annotations

import torch


def clip_gradients(parameters, clip_cfg) -> None:
    """``SOLVER.CLIP_GRADIENTS`` with Detectron2's meaning of each ``CLIP_TYPE``: ``"value"`` clips
    every element, ``"norm"`` the norm of each parameter's gradient separately, and ``"full_model"``
    the norm of all gradients together (MMDetection's ``grad_clip``, the paper's setting)."""
    params = [p for p in parameters if p.grad is not None]
    value, kind = float(clip_cfg.CLIP_VALUE), clip_cfg.CLIP_TYPE
    if kind == "value":
        torch.nn.utils.clip_grad_value_(params, value)
    elif kind == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], value, float(clip_cfg.NORM_TYPE))
    elif kind == "full_model":
        torch.nn.utils.clip_grad_norm_(params, value, float(clip_cfg.NORM_TYPE))
    else:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE {kind!r}: use 'value', 'norm' or 'full_model'")
