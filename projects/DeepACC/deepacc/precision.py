"""Mixed precision and memory layout: one reading of ``SOLVER.AMP.*`` and ``MODEL.CHANNELS_LAST`` for
both engines, the trainers, the evaluators and the predictors.

``SOLVER.AMP.ENABLED`` turns autocast on, on **both** devices:

* CPU: bfloat16 (oneDNN runs bf16 convolutions and matmuls on AVX-512-BF16 / AMX cores much faster
  than fp32); no loss scaling is needed, bf16 has fp32's exponent range;
* CUDA: float16 with a ``GradScaler`` (Detectron2's ``AMPTrainer``), or bfloat16 without one.

``SOLVER.AMP.PRECISION`` picks the type: ``"auto"`` (bf16 on CPU, fp16 on CUDA), ``"bfloat16"`` or
``"float16"`` (CUDA only: CPU autocast in fp16 is slow and unscaled). The DeepACC margin and siamese
branches and the AAM loss always compute in fp32 (``deepacc.modeling`` disables autocast around them).

``MODEL.CHANNELS_LAST``: ``"auto"`` uses channels-last (NHWC) convolutions except for GroupNorm
backbones on the CPU, where PyTorch's GroupNorm backward is ~3.5x slower on NHWC tensors than on
contiguous ones (measured by ``benchmarks/bench_speed.py``); ``"on"``/``"off"`` force it.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

__all__ = ["PRECISIONS", "amp_dtype", "autocast", "autocast_to", "needs_grad_scaler", "use_channels_last"]

PRECISIONS = ("auto", "bfloat16", "float16")


def _precision(cfg) -> str:
    p = str(cfg.SOLVER.AMP.get("PRECISION", "auto")).lower()
    if p not in PRECISIONS:
        raise ValueError(f"SOLVER.AMP.PRECISION must be one of {PRECISIONS}, got {p!r}")
    return p


def amp_dtype(cfg, device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype on ``device_type`` (``"cpu"``/``"cuda"``), or ``None`` when AMP is off."""
    if not bool(cfg.SOLVER.AMP.ENABLED):
        return None
    p = _precision(cfg)
    if device_type == "cuda":
        return torch.bfloat16 if p == "bfloat16" else torch.float16
    if device_type == "cpu":
        if p == "float16":
            raise ValueError("SOLVER.AMP.PRECISION float16 is for CUDA; on the CPU use bfloat16 (or auto)")
        return torch.bfloat16
    return None


def needs_grad_scaler(cfg, device_type: str) -> bool:
    """float16 gradients need loss scaling; bfloat16 has fp32's range and needs none."""
    return amp_dtype(cfg, device_type) == torch.float16


def autocast_to(device_type: str, dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device_type``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def autocast(cfg, device_type: str):
    """``torch.autocast`` for the configured precision, or a no-op context when AMP is off."""
    return autocast_to(device_type, amp_dtype(cfg, device_type))


def use_channels_last(cfg, device_type: str) -> bool:
    mode = str(cfg.MODEL.get("CHANNELS_LAST", "auto")).lower()
    if mode in ("on", "true"):
        return True
    if mode in ("off", "false"):
        return False
    if mode != "auto":
        raise ValueError(f"MODEL.CHANNELS_LAST must be auto, on or off, got {mode!r}")
    return not (device_type == "cpu" and "GN" in (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM))
