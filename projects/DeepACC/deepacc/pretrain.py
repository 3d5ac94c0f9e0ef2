"""In-domain pretraining of the detector's ResNet trunk as a 24-class chromosome classifier.

Our replacement for the ImageNet weights the paper starts from (which cannot be downloaded here and
know nothing of G-bands): single-chromosome crops are cut from the **training split** of any
registered dataset, at the pixel scale the detector will see them (the detector's own resize of
``INPUT.MIN_SIZE_TRAIN`` / ``MAX_SIZE_TRAIN``, then its per-image normalisation), and the very
trunk of the detector (``MODEL.RESNETS.DEPTH``, torchvision module names; BatchNorm when the
detector uses FrozenBN, as ImageNet trunks are trained) learns to name them. Crop classification
costs a fraction of a detection iteration per chromosome, so the trunk learns the banding in
minutes on a CPU.

Augmentations mimic the batch effects of real spreads, applied on whole batches in torch:

* geometry: any rotation, scale 1/1.25..1.25 (condensation: short-thick vs long-thin), shifts of a
  few pixels, horizontal flip;
* staining: gamma 0.6..1.6 on the intensities, contrast x0.75..1.33 and brightness +-0.25 after
  normalisation;
* optics: Gaussian blur (sigma 0.3..1.5, half of the batches) and Gaussian noise (0..0.1 std).

The result is a checkpoint ``{"model": {"backbone.body.<torchvision name>": tensor}, "deepacc_pretrain":
{...}}`` that ``MODEL.WEIGHTS`` loads into the backbone of the torchvision engine (and, with the names
translated by :func:`deepacc.checkpoint_io.to_detectron2_names` when Detectron2's checkpointer reads it, of the Detectron2 engine). It loads with
``torch.load(weights_only=True)`` (read back through :func:`deepacc.checkpoint_io.load_checkpoint_file`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint_io import PRETRAIN_KEY, load_checkpoint_file
from .fileio import append_line, tidy_output_dir
from .karyotype import NUM_CLASSES
from .precision import autocast_to

logger = logging.getLogger("deepacc.pretrain")

__all__ = ["CropSet", "cut_crops", "detector_scale", "Augment", "build_classifier", "trunk_state_dict",
           "PretrainConfig", "pretrain", "evaluate_crops"]


# -------------------------------------------------------------------------------------- crops
def detector_scale(h: int, w: int, min_size: int, max_size: int) -> float:
    """The factor by which the detector resizes an ``h x w`` image (torchvision's and Detectron2's
    ``ResizeShortestEdge`` rule: short side to ``min_size`` unless the long side exceeds ``max_size``)."""
    scale = min_size / float(min(h, w))
    if max(h, w) * scale > max_size:
        scale = max_size / float(max(h, w))
    return scale


@dataclass
class CropSet:
    """Square single-chromosome windows at detector scale.

    ``dark``: ``(N, S, S)`` uint8, ``255 - gray`` (0 = empty slide, so rotations pad with background);
    ``labels``: ``(N,)`` core classes 0..23; ``mean``/``std``: ``(N,)`` the per-image statistics of the
    resized source image (the detector's per-image normalisation); ``groups``: source image index.
    """

    dark: torch.Tensor
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    groups: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


def cut_crops(dicts: Sequence[Dict], min_size: int, max_size: int, size: int, progress: bool = True,
              polarity: str = "auto") -> CropSet:
    """One ``size x size`` window centred on every annotated chromosome of ``dicts``.

    Images are brought to dark-on-light as the detector's mappers do (``polarity`` =
    ``INPUT.POLARITY``, :func:`deepacc.data.polarity.apply_polarity`).

    Each image is resized as the detector resizes it, the window is cut around the box centre
    (neighbours included, as the detector's RoI sees them) and padded with empty slide where it
    leaves the image. Crowd annotations and class-agnostic chromosomes (``category_id``
    :data:`~deepacc.karyotype.AGNOSTIC`: no class to learn) are skipped.
    """
    import cv2
    from tqdm import tqdm

    from .data.images import read_image
    from .data.polarity import apply_polarity
    from .data.transforms import image_stats

    dark, labels, means, stds, groups = [], [], [], [], []
    half = size // 2
    for gi, d in enumerate(tqdm(dicts, desc="cutting crops", disable=not progress, leave=False)):
        gray, _ = apply_polarity(read_image(d["file_name"]), polarity)
        h, w = gray.shape[:2]
        s = detector_scale(h, w, min_size, max_size)
        if abs(s - 1.0) > 1e-6:
            gray = cv2.resize(gray, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_LINEAR)
        m, sd = image_stats(gray)
        padded = cv2.copyMakeBorder(255 - gray, half, half + 1, half, half + 1, cv2.BORDER_CONSTANT, value=0)
        for a in d.get("annotations", []):
            if a.get("iscrowd", 0) or not 0 <= int(a["category_id"]) < NUM_CLASSES:
                continue
            x0, y0, x1, y1 = (float(v) * s for v in a["bbox"])
            cx, cy = int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2))
            dark.append(padded[cy:cy + size, cx:cx + size])
            labels.append(int(a["category_id"]))
            means.append(m)
            stds.append(sd)
            groups.append(gi)
    if not labels:
        raise ValueError("no annotated chromosome to cut crops from")
    return CropSet(torch.from_numpy(np.stack(dark)), torch.tensor(labels), torch.tensor(means),
                   torch.tensor(stds), torch.tensor(groups))


def crop_size_for(dicts: Sequence[Dict], min_size: int, max_size: int, quantile: float = 0.99,
                  multiple: int = 16) -> int:
    """A window side that holds ``quantile`` of the chromosomes' long sides at detector scale (+15 %)."""
    sides = []
    for d in dicts:
        s = detector_scale(int(d["height"]), int(d["width"]), min_size, max_size)
        for a in d.get("annotations", []):
            x0, y0, x1, y1 = a["bbox"]
            sides.append(max(x1 - x0, y1 - y0) * s)
    if not sides:
        raise ValueError("no annotated chromosome: cannot size the crops")
    side = float(np.quantile(sides, quantile)) * 1.15
    return int(max(multiple * 2, math.ceil(side / multiple) * multiple))


# --------------------------------------------------------------------------------- augmentation
class Augment:
    """Batch augmentations of :class:`CropSet` windows (see the module docstring). ``train=False``
    only normalises. Returns ``(B, 3, S, S)`` float inputs normalised like the detector's: per-image
    standardisation (``INPUT.NORMALIZATION "per_image"``), then ``MODEL.PIXEL_MEAN/PIXEL_STD``."""

    def __init__(self, train: bool = True, rotate: bool = True, scale: Tuple[float, float] = (0.8, 1.25),
                 gamma: Tuple[float, float] = (0.6, 1.6), contrast: Tuple[float, float] = (0.75, 1.33),
                 brightness: float = 0.25, blur: Tuple[float, float] = (0.3, 1.5), blur_p: float = 0.5,
                 noise: float = 0.1, shift: float = 0.06, pixel_mean: float = 0.0, pixel_std: float = 1.0):
        self.pixel_mean, self.pixel_std = float(pixel_mean), float(pixel_std)
        self.train, self.rotate, self.scale, self.gamma = train, rotate, scale, gamma
        self.contrast, self.brightness, self.blur, self.blur_p = contrast, brightness, blur, blur_p
        self.noise, self.shift = noise, shift

    def __call__(self, dark: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        g = generator
        b = dark.shape[0]
        d = dark.float().unsqueeze(1) / 255.0  # darkness in [0, 1], 0 = background

        def u(lo, hi, n=b):
            return torch.rand(n, generator=g) * (hi - lo) + lo

        if self.train:
            ang = u(0, 2 * math.pi) if self.rotate else torch.zeros(b)
            sc = torch.exp(u(math.log(self.scale[0]), math.log(self.scale[1])))
            flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
            cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
            theta = torch.stack([torch.stack([cos * flip, -sin, u(-self.shift, self.shift)], 1),
                                 torch.stack([sin * flip, cos, u(-self.shift, self.shift)], 1)], 1)
            grid = F.affine_grid(theta, list(d.shape), align_corners=False)
            d = F.grid_sample(d, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            gamma = torch.exp(u(math.log(self.gamma[0]), math.log(self.gamma[1]))).view(b, 1, 1, 1)
            d = 1.0 - (1.0 - d).clamp(0, 1) ** gamma
        x = ((1.0 - d) * 255.0 - mean.view(b, 1, 1, 1)) / std.view(b, 1, 1, 1)
        if self.train:
            x = x * torch.exp(u(math.log(self.contrast[0]), math.log(self.contrast[1]))).view(b, 1, 1, 1)
            x = x + u(-self.brightness, self.brightness).view(b, 1, 1, 1)
            if float(torch.rand((), generator=g)) < self.blur_p:
                from torchvision.transforms.v2.functional import gaussian_blur

                sigma = float(u(*self.blur, n=1))
                k = 2 * int(math.ceil(2 * sigma)) + 1
                x = gaussian_blur(x, [k, k], [sigma, sigma])
            x = x + torch.randn(x.shape, generator=g) * u(0, self.noise).view(b, 1, 1, 1)
        if self.pixel_mean != 0.0 or self.pixel_std != 1.0:  # the model's MODEL.PIXEL_MEAN / PIXEL_STD
            x = (x - self.pixel_mean) / self.pixel_std
        return x.expand(-1, 3, -1, -1)


# ---------------------------------------------------------------------------------------- model
def pretrain_norm(detector_norm: str) -> str:
    """The norm the trunk trains with: BatchNorm for a FrozenBN detector (the ImageNet convention:
    statistics learnt here, frozen in the detector), otherwise the detector's own."""
    return "BN" if detector_norm in ("FrozenBN", "") else detector_norm


def build_classifier(cfg, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The detector's ResNet trunk (torchvision engine, ``MODEL.RESNETS.*``) with a ``num_classes`` FC."""
    from .tv.model import build_resnet

    net = build_resnet(cfg, norm=pretrain_norm(str(cfg.MODEL.RESNETS.NORM)))
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def trunk_state_dict(classifier: nn.Module, detector_norm: str) -> Dict[str, torch.Tensor]:
    """The classifier's trunk as ``backbone.body.*`` keys of the torchvision engine's detector."""
    out = {}
    for k, v in classifier.state_dict().items():
        if k.startswith("fc."):
            continue
        if k.endswith("num_batches_tracked") and detector_norm in ("FrozenBN", ""):
            continue  # FrozenBatchNorm2d has no such buffer
        out["backbone.body." + k] = v.detach().cpu().clone()
    return out


# ------------------------------------------------------------------------------------- training
@dataclass
class PretrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.3
    label_smoothing: float = 0.1
    #: "auto" (bf16 only on a CPU with bf16 kernels, else fp32; deepacc.precision), "bfloat16" or "float32"
    precision: str = "auto"
    seed: int = 0
    max_minutes: float = 0.0  # stop (and finish cleanly) after this wall time; 0 = no limit
    #: stop after this many epochs of the ``epochs``-long schedule (0 = all): the same budget on every
    #: machine, unlike ``max_minutes``
    stop_after: int = 0


@torch.no_grad()
def evaluate_crops(net: nn.Module, crops: CropSet, batch_size: int = 256, dtype: Optional[torch.dtype] = None,
                   channels_last: bool = True, aug: Optional["Augment"] = None) -> Dict[str, object]:
    """Top-1 accuracy, per-class accuracy and the 24x24 confusion matrix on un-augmented crops
    (CPU autocast in ``dtype``; ``None``: float32)."""
    net.eval()
    aug = Augment(train=False, pixel_mean=aug.pixel_mean, pixel_std=aug.pixel_std) if aug is not None \
        else Augment(train=False)
    preds = []
    for i in range(0, len(crops), batch_size):
        sl = slice(i, i + batch_size)
        x = aug(crops.dark[sl], crops.mean[sl], crops.std[sl])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_to("cpu", dtype):
            preds.append(net(x).float().argmax(1))
    pred = torch.cat(preds)
    k = NUM_CLASSES
    conf = torch.zeros(k, k, dtype=torch.long)
    conf.index_put_((crops.labels, pred), torch.ones_like(pred), accumulate=True)
    per_class = (conf.diag().float() / conf.sum(1).clamp(min=1).float()).tolist()
    return {"top1": float((pred == crops.labels).float().mean()), "n": len(crops),
            "per_class": per_class, "confusion": conf.tolist()}


def _lr_at(step: float, total: float, warmup: float, base: float) -> float:
    if step < warmup:
        return base * (0.1 + 0.9 * step / max(warmup, 1e-9))
    p = (step - warmup) / max(total - warmup, 1e-9)
    return base * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def pretrain(cfg, train: CropSet, val: Optional[CropSet], pc: PretrainConfig, output_dir: str,
             meta: Optional[Dict] = None, progress: bool = True, resume: bool = True) -> Dict:
    """Train the trunk on ``train`` crops, evaluate on ``val`` each epoch, write checkpoints.

    Writes ``output_dir/pretrain_last.pth`` (full state, resumable; atomic) after every epoch,
    ``output_dir/metrics.json`` (one JSON line per epoch: loss, lr, train/val top-1, seconds) and, at
    the end, ``output_dir/model_pretrained.pth`` (trunk only, for ``MODEL.WEIGHTS``) and
    ``output_dir/pretrain_report.json``. With ``resume`` an interrupted run continues from its last
    finished epoch.
    """
    from tqdm import tqdm

    from .fileio import atomic_write
    from .precision import cpu_capability, cpu_precision, use_channels_last

    os.makedirs(output_dir, exist_ok=True)
    precision = cpu_precision(pc.precision, source="pretraining precision")
    logger.info("Pretraining precision: %s", precision)
    torch.manual_seed(pc.seed)
    detector_norm = str(cfg.MODEL.RESNETS.NORM)
    net = build_classifier(cfg)
    cl = use_channels_last(cfg, "cpu")
    if cl:
        net = net.to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for m in net.modules():
        for name, p in m.named_parameters(recurse=False):
            (no_decay if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) or name == "bias" else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": pc.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=pc.lr, momentum=pc.momentum, nesterov=True)
    steps_per_epoch = max(1, len(train) // pc.batch_size)
    total = pc.epochs * steps_per_epoch
    start_epoch, history, elapsed_before = 0, [], 0.0
    state_path = os.path.join(output_dir, "pretrain_last.pth")
    resumed = resume and os.path.isfile(state_path)
    if resumed:
        st = load_checkpoint_file(state_path)
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        start_epoch, history = int(st["epoch"]) + 1, json.loads(st["history"])
        elapsed_before = float(st.get("elapsed", 0.0))
        logger.info("Resuming pretraining at epoch %d of %d.", start_epoch, pc.epochs)
    # temp files of a run killed while writing its state; metrics.json: on resume the rows of the epochs
    # done again dropped (rows count epochs from 1), on a new run an earlier run's file kept as metrics.json.1
    tidy_output_dir(output_dir, start_epoch + 1, resumed=resumed, key="epoch")
    pixel = dict(pixel_mean=float(cfg.MODEL.PIXEL_MEAN[0]), pixel_std=float(cfg.MODEL.PIXEL_STD[0]))
    if str(cfg.INPUT.NORMALIZATION) != "per_image":
        raise ValueError("in-domain pretraining reproduces INPUT.NORMALIZATION 'per_image' only")
    aug = Augment(train=True, **pixel)
    crit = nn.CrossEntropyLoss(label_smoothing=pc.label_smoothing)
    t_start = time.perf_counter() - elapsed_before
    stopped_early = False
    for epoch in range(start_epoch, pc.epochs):
        net.train()
        g = torch.Generator().manual_seed(pc.seed * 1000 + epoch)
        order = torch.randperm(len(train), generator=g)
        t0 = time.perf_counter()
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"pretrain epoch {epoch + 1}/{pc.epochs}", disable=not progress,
                   leave=False)
        for i in bar:
            step = epoch * steps_per_epoch + i
            lr = _lr_at(step, total, pc.warmup_epochs * steps_per_epoch, pc.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[i * pc.batch_size:(i + 1) * pc.batch_size]
            x = aug(train.dark[idx], train.mean[idx], train.std[idx], generator=g)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            y = train.labels[idx]
            with autocast_to("cpu", precision.dtype):
                logits = net(x)
            loss = crit(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining loss is {float(loss)} at epoch {epoch}, step {i}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * len(idx)
            tot_correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_correct / seen:.3f}", lr=f"{lr:.3g}")
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(seen, 1), "train_top1_augmented": tot_correct / max(seen, 1),
               "lr": lr, "seconds": time.perf_counter() - t0, "precision": precision.name}
        if val is not None:
            rec["val_top1"] = evaluate_crops(net, val, dtype=precision.dtype, channels_last=cl, aug=aug)["top1"]
        rec["elapsed_s"] = time.perf_counter() - t_start
        history.append(rec)
        logger.info("pretrain epoch %d/%d: loss %.3f, augmented train top-1 %.2f %%%s, %.0f s", epoch + 1, pc.epochs,
                    rec["loss"], 100 * rec["train_top1_augmented"],
                    f", val top-1 {100 * rec['val_top1']:.2f} %" if "val_top1" in rec else "", rec["seconds"])
        append_line(os.path.join(output_dir, "metrics.json"), json.dumps(rec))
        st = {"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "history": json.dumps(history),
              "elapsed": rec["elapsed_s"]}
        atomic_write(state_path, lambda f: torch.save(st, f), durable=True)
        if 0 < pc.stop_after <= epoch + 1 < pc.epochs:
            logger.info("Stopping pretraining after %d of %d epochs (--stop-after).", epoch + 1, pc.epochs)
            stopped_early = True
            break
        if pc.max_minutes > 0 and rec["elapsed_s"] > 60 * pc.max_minutes and epoch + 1 < pc.epochs:
            logger.warning("Stopping pretraining after %d epochs: --max-minutes %.1f reached.", epoch + 1, pc.max_minutes)
            stopped_early = True
            break
    report = {"epochs_run": len(history), "epochs": pc.epochs, "stopped_early": stopped_early,
              "history": history, "train_crops": len(train), "val_crops": len(val) if val is not None else 0,
              "config": pc.__dict__, "precision": precision.name, "precision_reason": precision.reason,
              "cpu_capability": cpu_capability(), **(meta or {})}
    if val is not None:
        final = evaluate_crops(net, val, dtype=precision.dtype, channels_last=cl, aug=aug)
        report["val"] = final
        logger.info("Pretrained trunk: val crop top-1 %.2f %% (%d crops).", 100 * final["top1"], final["n"])
    ckpt = {"model": trunk_state_dict(net, detector_norm),
            PRETRAIN_KEY: {"depth": int(cfg.MODEL.RESNETS.DEPTH), "detector_norm": detector_norm,
                           "val_top1": report.get("val", {}).get("top1"), "crop_size": int(train.dark.shape[-1]),
                           **{k: v for k, v in (meta or {}).items() if isinstance(v, (int, float, str))}}}
    atomic_write(os.path.join(output_dir, "model_pretrained.pth"), lambda f: torch.save(ckpt, f), durable=True)
    atomic_write(os.path.join(output_dir, "pretrain_report.json"), json.dumps(report, indent=1).encode())
    logger.info("Pretraining done: %d of %d epochs in %s.", report["epochs_run"], pc.epochs, precision)
    return report
