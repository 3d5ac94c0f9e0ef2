"""Mixed precision and memory layout: one reading of ``SOLVER.AMP.*`` and ``MODEL.CHANNELS_LAST`` for
both engines, the trainers, the evaluators, the predictors, ``deepacc-pretrain`` and the benchmarks.

``SOLVER.AMP.ENABLED`` asks for autocast; ``SOLVER.AMP.PRECISION`` says in which type:

* ``"auto"`` (default) chooses from the hardware:

  - CPU: bfloat16 **only where oneDNN has bf16 kernels** (AVX-512-BF16 or AMX; PyTorch is asked,
    :func:`cpu_bf16_kernels`), fp32 otherwise. On a CPU with only AVX2, bf16 is emulated and a
    training step runs 12-30x slower than in fp32 (``benchmarks/bench_speed.py --precision``);
  - CUDA: float16 with a ``GradScaler`` (Detectron2's ``AMPTrainer``);

* ``"bfloat16"``: bf16 on either device. On a CPU without bf16 kernels it runs, and warns once with
  the expected slowdown;
* ``"float16"``: CUDA only (CPU autocast in fp16 is slow and unscaled): a config error on the CPU;
* ``"float32"``: no autocast, whatever ``ENABLED`` says.

:func:`resolve_precision` returns the choice with its reason and logs it once per process
(``Precision: float32 on cpu (SOLVER.AMP.PRECISION auto: this CPU has no bf16 kernels, AVX2)``);
the trainers record its :attr:`Precision.name` in ``metrics.json``, the pretraining in its report.
The DeepACC margin and siamese branches and the AAM loss always compute in fp32
(``deepacc.modeling`` disables autocast around them).

``MODEL.CHANNELS_LAST``: ``"auto"`` uses channels-last (NHWC) convolutions on CUDA, and on the CPU
only with bf16 kernels and without GroupNorm (NHWC is 2x slower than NCHW in fp32 on an AVX2 CPU, and
PyTorch's GroupNorm backward is ~3.5x slower on NHWC tensors; :func:`use_channels_last`);
``"on"``/``"off"`` force it.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["PRECISIONS", "Precision", "amp_dtype", "autocast", "autocast_to", "cpu_bf16_kernels",
           "cpu_capability", "cpu_precision", "needs_grad_scaler", "precision_name", "resolve_precision",
           "use_channels_last"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bfloat16", "float16", "float32")
#: What bf16 autocast costs on a CPU without bf16 kernels (measured on AVX2: 12-30x per training step).
EMULATED_BF16_SLOWDOWN = "12-30x slower than float32"


@dataclass(frozen=True)
class Precision:
    """The arithmetic a run uses: ``dtype`` for autocast (``None`` = plain float32) and why."""
    dtype: Optional[torch.dtype]
    device_type: str
    reason: str

    @property
    def name(self) -> str:
        return precision_name(self.dtype)

    def __str__(self) -> str:
        return f"{self.name} on {self.device_type} ({self.reason})"


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """``"float32"`` for ``None`` (no autocast), else the dtype's name (``"bfloat16"``, ``"float16"``)."""
    return "float32" if dtype is None else str(dtype).replace("torch.", "")


def cpu_capability() -> str:
    """PyTorch's reading of the CPU's vector extensions (``"AVX2"``, ``"AVX512"``, ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # very old builds
        return "unknown"


def cpu_bf16_kernels() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512-BF16 or AMX), asked of PyTorch.

    The one probe of the hardware: tests replace it to cover both outcomes."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # a build without oneDNN, or without the probe: assume emulation
        return False


_warned: set = set()
_logged: set = set()


def _once(store: set, key, log, msg: str, *args) -> None:
    if key not in store:
        store.add(key)
        log(msg, *args)


def cpu_precision(requested: str = "auto", source: str = "SOLVER.AMP.PRECISION") -> Precision:
    """The CPU's autocast choice for ``requested`` (``auto``, ``bfloat16`` or ``float32``)."""
    cap = cpu_capability()
    if requested == "float32":
        return Precision(None, "cpu", f"{source} float32")
    if requested == "float16":
        raise ValueError(f"{source} float16 is for CUDA; on the CPU use bfloat16, float32 or auto")
    fast = cpu_bf16_kernels()
    if requested == "bfloat16":
        if not fast:
            _once(_warned, "cpu-bf16", logger.warning,
                  "%s bfloat16 on a CPU without bf16 kernels (%s): PyTorch emulates bf16 there, expect "
                  "training %s; 'auto' would choose float32.", source, cap, EMULATED_BF16_SLOWDOWN)
            return Precision(torch.bfloat16, "cpu", f"{source} bfloat16, emulated: this CPU has no bf16 kernels, {cap}")
        return Precision(torch.bfloat16, "cpu", f"{source} bfloat16")
    if fast:
        return Precision(torch.bfloat16, "cpu", f"{source} auto: this CPU has bf16 kernels, {cap}")
    return Precision(None, "cpu", f"{source} auto: this CPU has no bf16 kernels, {cap}")


def _precision(cfg) -> str:
    p = str(cfg.SOLVER.AMP.get("PRECISION", "auto")).lower()
    if p not in PRECISIONS:
        raise ValueError(f"SOLVER.AMP.PRECISION must be one of {PRECISIONS}, got {p!r}")
    return p


def resolve_precision(cfg, device_type: str, log: bool = True) -> Precision:
    """The precision a run on ``device_type`` (``"cpu"``/``"cuda"``) uses under ``cfg``; logged once
    per process and choice when ``log``."""
    p = _precision(cfg)
    if not bool(cfg.SOLVER.AMP.ENABLED):
        choice = Precision(None, device_type, "SOLVER.AMP.ENABLED False")
    elif device_type == "cuda":
        if p == "float32":
            choice = Precision(None, "cuda", "SOLVER.AMP.PRECISION float32")
        else:
            choice = Precision(torch.bfloat16 if p == "bfloat16" else torch.float16, "cuda", f"SOLVER.AMP.PRECISION {p}")
    elif device_type == "cpu":
        choice = cpu_precision(p)
    else:
        choice = Precision(None, device_type, f"no autocast on {device_type}")
    if log:
        _once(_logged, (choice.name, device_type), logger.info, "Precision: %s", choice)
    return choice


def amp_dtype(cfg, device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype on ``device_type`` (``"cpu"``/``"cuda"``), or ``None`` for plain float32."""
    return resolve_precision(cfg, device_type).dtype


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
    """``MODEL.CHANNELS_LAST``: ``on``/``off``, or ``auto``: channels-last (NHWC) convolutions on CUDA,
    and on the CPU only where they run in bf16 (:func:`resolve_precision`) and the backbone has no
    GroupNorm. oneDNN's NHWC kernels pay off with bf16 on AVX-512-BF16/AMX cores; in fp32 on an AVX2
    CPU a training step of the G-band recipe's model took 2x longer in NHWC than in NCHW (one thread,
    23-25 s vs 11-15 s, same process load), and GroupNorm's backward is ~3.5x slower on NHWC tensors."""
    mode = str(cfg.MODEL.get("CHANNELS_LAST", "auto")).lower()
    if mode in ("on", "true"):
        return True
    if mode in ("off", "false"):
        return False
    if mode != "auto":
        raise ValueError(f"MODEL.CHANNELS_LAST must be auto, on or off, got {mode!r}")
    if device_type != "cpu":
        return True
    if "GN" in (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM):
        return False
    return resolve_precision(cfg, "cpu", log=False).dtype == torch.bfloat16
