"""``TorchvisionPredictor``: one metaphase image -> the project's prediction dict, on the torchvision engine.

Used by ``deepacc-predict`` (through :func:`deepacc.engine.build_predictor`) when the engine is
torchvision. It reads a checkpoint written by this engine.
"""
from __future__ import annotations

import logging
import os
from typing import Dict

import numpy as np
import torch

from ..checkpoint_io import check_loaded_weights
from ..data.polarity import apply_polarity, check_polarity_mode
from ..data.scale import apply_reference, input_stats, resize_factor, training_files
from ..data.transforms import to_model_input
from ..modeling.prediction import to_prediction
from ..precision import autocast
from .checkpoint import AtomicCheckpointer
from .model import build_model
from .runtime import resolve_device

logger = logging.getLogger(__name__)


class TorchvisionPredictor:
    """Runs the torchvision-engine model on one grayscale image (HxW uint8).

    Returns the project's prediction dict (``instances`` and ``instances_top1``, numpy arrays in the
    input image's coordinates; ``input_scale``: the resize factor and what decided it; ``polarity``:
    the image's detected polarity and whether it was inverted for the model, ``INPUT.POLARITY``,
    :func:`deepacc.data.polarity.apply_polarity`). Loads
    ``MODEL.WEIGHTS`` (a checkpoint written by this engine) and refuses to run without it, or with
    weights that do not fit the model, unless ``allow_untrained``; :attr:`weights_info` says which
    weights made the predictions (path, SHA-256, status).
    """

    def __init__(self, cfg, allow_untrained: bool = False):
        self.cfg = cfg.clone()
        self.cfg.defrost()  # the scale-aware reference is filled in below
        check_polarity_mode(self.cfg.INPUT.get("POLARITY", "auto"))
        self.device = resolve_device(cfg)
        self.model = build_model(cfg).to(self.device).eval()
        weights = str(cfg.MODEL.WEIGHTS)
        incompatible, extra = None, {}
        if weights:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"MODEL.WEIGHTS {weights!r} is not a file (give a checkpoint, e.g. "
                                        "output/.../model_final.pth)")
            ckpt = AtomicCheckpointer(self.model)
            extra = ckpt.load(weights, checkpointables=[]) or {}
            incompatible = getattr(ckpt, "incompatible", None)
        self.weights_info = check_loaded_weights(weights, incompatible, allow_untrained)
        # scale-aware inference: the reference of the model's training (deepacc.data.scale)
        apply_reference(self.cfg, extra if weights else None, training_files(self.cfg) if weights else None)
        if self.weights_info["problem"]:
            logger.warning("%s (allowed by --allow-untrained)", self.weights_info["problem"])

    @torch.no_grad()
    def __call__(self, gray: np.ndarray) -> Dict:
        gray, polarity = apply_polarity(np.asarray(gray), self.cfg.INPUT.get("POLARITY", "auto"))
        factor, info = resize_factor(gray, self.cfg)
        image = to_model_input(gray, self.cfg.INPUT.NORMALIZATION, input_stats(info)).to(self.device)
        with autocast(self.cfg, self.device.type):
            pred = self.model([image], scales=[factor if info["mode"] == "scale_aware" else None])[0]
        pred.input_scale = info
        out = to_prediction(pred)
        out["polarity"] = polarity
        return out
