"""Optimiser and learning-rate schedule of the torchvision engine (gradient clipping, shared with the
Detectron2 engine, is :func:`deepacc.solver.clip_gradients`)."""
from __future__ import annotations

import logging

import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler
from torch import nn

logger = logging.getLogger("deepacc")


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD; norm-layer parameters use ``WEIGHT_DECAY_NORM``, biases ``BIAS_LR_FACTOR``/``WEIGHT_DECAY_BIAS``."""
    norm_types = (nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.LayerNorm)
    base_lr, wd = float(cfg.SOLVER.BASE_LR), float(cfg.SOLVER.WEIGHT_DECAY)
    wd_bias = wd if cfg.SOLVER.WEIGHT_DECAY_BIAS is None else float(cfg.SOLVER.WEIGHT_DECAY_BIAS)
    groups, seen = [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, decay = base_lr, wd
            if isinstance(module, norm_types):
                decay = float(cfg.SOLVER.WEIGHT_DECAY_NORM)
            elif name == "bias":
                lr, decay = base_lr * float(cfg.SOLVER.BIAS_LR_FACTOR), wd_bias
            groups.append({"params": [p], "lr": lr, "weight_decay": decay, "initial_lr": lr})
    return torch.optim.SGD(groups, lr=base_lr, momentum=float(cfg.SOLVER.MOMENTUM),
                           nesterov=bool(cfg.SOLVER.NESTEROV))


class WarmupMultiStep:
    """LR multiplier: fvcore ``MultiStepParamScheduler`` (x GAMMA at each of SOLVER.STEPS) times a
    linear or constant warm-up over ``WARMUP_ITERS`` starting at ``WARMUP_FACTOR``.

    Its attributes are plain numbers and lists: ``LambdaLR`` stores them in every checkpoint, which
    must load with ``torch.load(weights_only=True)``.
    """

    def __init__(self, cfg):
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.milestones = [int(s) for s in cfg.SOLVER.STEPS if 0 < int(s) < self.max_iter]
        if len(self.milestones) < len(cfg.SOLVER.STEPS):
            logger.warning("SOLVER.STEPS %s outside (0, MAX_ITER=%d) are ignored.", list(cfg.SOLVER.STEPS), self.max_iter)
        self.values = [float(cfg.SOLVER.GAMMA) ** i for i in range(len(self.milestones) + 1)]
        self.warmup_iters = int(cfg.SOLVER.WARMUP_ITERS)
        self.warmup_factor = float(cfg.SOLVER.WARMUP_FACTOR)
        self.method = str(cfg.SOLVER.WARMUP_METHOD)
        if self.method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD {self.method!r}: use 'linear' or 'constant'")

    def __call__(self, it: int) -> float:
        value = 1.0
        if self.milestones:
            steps = MultiStepParamScheduler(self.values, num_updates=self.max_iter, milestones=self.milestones)
            value = steps(min(it, self.max_iter - 1) / self.max_iter)
        if it < self.warmup_iters:
            if self.method == "constant":
                return value * self.warmup_factor
            alpha = it / self.warmup_iters
            return value * (self.warmup_factor * (1 - alpha) + alpha)
        return value


def build_lr_scheduler(cfg, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """``SOLVER.LR_SCHEDULER_NAME`` ``WarmupMultiStepLR`` as a ``LambdaLR`` stepped once per iteration."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME {cfg.SOLVER.LR_SCHEDULER_NAME!r}: this engine has WarmupMultiStepLR")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupMultiStep(cfg))
