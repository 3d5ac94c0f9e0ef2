"""The prediction of one image, as both engines return it: two detection sets (paper §3.1).

* ``instances``: the all-classes set (usual Fast R-CNN inference), used for mAP;
* ``instances_top1``: only each proposal's top-1 foreground class, used for mAP_max, Acc and AER.

:func:`to_prediction` gives the project's prediction dict, which the evaluator, ``deepacc-predict``
and the prediction files read::

    {"instances": {"boxes", "scores", "classes", "class_probs"}, "instances_top1": {...},
     "image_id" (optional), "input_scale" (optional)}

with numpy arrays: ``boxes (N, 4)`` float32 xyxy, ``scores (N,)`` float32, ``classes (N,)`` int64 in
``0..K-1``, ``class_probs (N, K+1)`` float32 (last column background).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional

import numpy as np
import torch


@dataclass
class Detections:
    """One detection set of one image, sorted by decreasing score.

    ``boxes (N, 4)`` xyxy, ``scores (N,)``, ``classes (N,)`` in ``0..K-1``; ``class_probs (N, K+1)``:
    the probabilities of each detection's proposal (None only for detections read from elsewhere);
    ``proposal_index (N,)``: the proposal of each detection (not part of the prediction dict).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    class_probs: Optional[torch.Tensor] = None
    proposal_index: Optional[torch.Tensor] = None

    def rescale(self, scale_x: float, scale_y: float) -> "Detections":
        """The same detections with boxes multiplied by ``(scale_x, scale_y, scale_x, scale_y)``."""
        scale = torch.tensor([scale_x, scale_y, scale_x, scale_y], device=self.boxes.device)
        return replace(self, boxes=self.boxes * scale)

    def to_numpy(self) -> Dict[str, np.ndarray]:
        """The prediction dict of this set (``class_probs`` only when known)."""
        out = {
            "boxes": self.boxes.detach().float().cpu().numpy().reshape(-1, 4),
            "scores": self.scores.detach().float().cpu().numpy().reshape(-1),
            "classes": self.classes.detach().cpu().numpy().astype(np.int64).reshape(-1),
        }
        if self.class_probs is not None:
            out["class_probs"] = self.class_probs.detach().float().cpu().numpy()
        return out


@dataclass
class ImagePrediction:
    """Both detection sets of one image; ``input_scale``: the resize factor and what decided it
    (:func:`deepacc.data.scale.resize_factor`), when known."""

    instances: Detections
    instances_top1: Detections
    input_scale: Optional[Dict[str, Any]] = None

    def rescale(self, scale_x: float, scale_y: float) -> "ImagePrediction":
        """Both sets with boxes scaled, e.g. from the model's resized frame to the input image's."""
        return replace(self, instances=self.instances.rescale(scale_x, scale_y),
                       instances_top1=self.instances_top1.rescale(scale_x, scale_y))


def to_prediction(pred: ImagePrediction, image_id: Optional[Any] = None) -> Dict[str, Any]:
    """One image's prediction -> the project's prediction dict (numpy, module docstring)."""
    out: Dict[str, Any] = {"instances": pred.instances.to_numpy(), "instances_top1": pred.instances_top1.to_numpy()}
    if image_id is not None:
        out["image_id"] = image_id
    if pred.input_scale is not None:
        out["input_scale"] = pred.input_scale
    return out
