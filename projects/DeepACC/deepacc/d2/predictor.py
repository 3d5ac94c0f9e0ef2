"""``Detectron2Predictor``: one metaphase image -> the project's prediction dict, on Detectron2.

Used by ``deepacc-predict`` (through :func:`deepacc.engine.build_predictor`) when the engine is
Detectron2. It reads the same configs as ``train_net.py`` and a checkpoint written by this engine.
"""
from __future__ import annotations

import logging
import os
from typing import Dict

import numpy as np
import torch

from detectron2.modeling import build_model

from ..checkpoint_io import check_loaded_weights
from ..data.scale import apply_reference, training_files
from ..precision import autocast
from .checkpoint import DeepACCCheckpointer  # Detectron2's, also reads DeepACC pretrained trunks
from .config import to_detectron2_cfg
from .mapper import DeepACCDatasetMapper
from .evaluator import instances_to_dict

__all__ = ["Detectron2Predictor"]

logger = logging.getLogger(__name__)


class Detectron2Predictor:
    """Runs the Detectron2-engine model on one grayscale image (``(H, W)`` uint8).

    Returns ``{"instances": {...}, "instances_top1": {...}}`` (numpy ``boxes``, ``scores``,
    ``classes``, ``class_probs``, in the input image's coordinates; ``polarity``: the image's
    detected polarity and whether it was inverted for the model, ``INPUT.POLARITY``). Loads
    ``MODEL.WEIGHTS`` and refuses to run without it, or with weights that do not fit the model,
    unless ``allow_untrained`` (:attr:`weights_info` records which weights made the predictions).
    """

    def __init__(self, cfg, allow_untrained: bool = False):
        self.model = build_model(to_detectron2_cfg(cfg)).eval()
        weights = str(cfg.MODEL.WEIGHTS)
        incompatible, extra = None, {}
        if weights:
            if "://" not in weights and not os.path.isfile(weights):
                raise FileNotFoundError(f"MODEL.WEIGHTS {weights!r} is not a file (give a checkpoint, e.g. "
                                        "output/.../model_final.pth)")
            ckpt = DeepACCCheckpointer(self.model)
            extra = ckpt.load(weights) or {}
            incompatible = getattr(ckpt, "incompatible", None)
        self.weights_info = check_loaded_weights(weights, incompatible, allow_untrained)
        # scale-aware inference: the reference of the model's training, from the checkpoint just loaded
        cfg = cfg.clone()
        cfg.defrost()
        apply_reference(cfg, extra, training_files(cfg) if weights else None)
        self.cfg = to_detectron2_cfg(cfg)
        if self.weights_info["problem"]:
            logger.warning("%s (allowed by --allow-untrained)", self.weights_info["problem"])
        self.mapper = DeepACCDatasetMapper(self.cfg, False)

    @torch.no_grad()
    def __call__(self, gray: np.ndarray) -> Dict:
        gray = np.asarray(gray)
        image, _ = self.mapper.prepare_image(gray)
        h, w = gray.shape[:2]
        with autocast(self.cfg, self.model.device.type):
            out = self.model([{"image": image, "height": h, "width": w}])[0]
        res = {"instances": instances_to_dict(out["instances"]),
               "instances_top1": instances_to_dict(out["instances_top1"]),
               "polarity": self.mapper.last_polarity}
        if self.mapper.last_scale is not None:
            res["input_scale"] = self.mapper.last_scale
        return res
